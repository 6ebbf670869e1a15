"""Checkpoints: safetensors weights and optimizer state beside JSON, never pickle; atomic as a whole.

A run folder holds one checkpoint (the latest)::

    config.json                      format, step, task, observation/action spaces (spec), model
                                     config (with `arch`), the run's full config (run_config), and the
                                     name, size and CRC32 of each file below
    model.<step>.<id>.safetensors    model weights
    optim.<step>.<id>.safetensors    optimizer tensors (Adam moments, ...)
    state.<step>.<id>.json           step, optimizer param groups and scalars, run bookkeeping

``save`` writes the new weight files under new names beside the old ones
(each to a temporary name, fsynced, renamed), then replaces config.json in
one ``os.replace``: that rename is the commit. Only then are the files of
the previous checkpoint deleted. At every instant config.json names one
complete checkpoint, so a kill or a full disk during a save leaves the
previous one loadable; a save that fails says so in one line. ``load``
rebuilds the model from config.json alone via ``embodied.models.build_model``
and fills in the weights, refusing (one line) a file that is truncated,
corrupted or from another step.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import zlib
from pathlib import Path

import torch

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from embodied.models import MODELS, build_model
from embodied.data import UNREADABLE
from embodied.io import atomic_write_bytes, atomic_write_json
from embodied.envs.registry import canonical_task
from embodied.errors import UserError

FORMAT = "embodied-checkpoint/1"
FILES = ("model.safetensors", "optim.safetensors", "state.json")  # the parts; on disk each has a versioned name
SPACE_KEYS = ("image_size", "action_dim", "proprio_dim")


def _crc(payload: bytes) -> str:
    return f"{zlib.crc32(payload):08x}"


def _model_payload(model, step: int) -> bytes:
    """The model's state dict as safetensors bytes; tied (identical) tensors are stored once."""
    tensors, aliases, seen = {}, {}, {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride())) if t.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        tensors[name] = t.detach().to("cpu", copy=True).contiguous()
    meta = {"format": FORMAT, "step": str(step), "aliases": json.dumps(aliases)}
    return st_save(tensors, metadata=meta)


def _optim_payload(optimizer, step: int) -> tuple[bytes, dict]:
    """Optimizer tensors as safetensors bytes, and its non-tensor state as a JSON-able dict."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().to("cpu", copy=True).contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    groups, tuple_keys = [], set()
    for g in sd["param_groups"]:
        row = {}
        for k, v in g.items():
            if isinstance(v, tuple):
                tuple_keys.add(k)
                v = list(v)
            row[k] = v
        groups.append(row)
    state = {"type": type(optimizer).__name__, "param_groups": groups, "scalars": scalars,
             "tuple_keys": sorted(tuple_keys)}
    return st_save(tensors, metadata={"format": FORMAT, "step": str(step)}), state


def save(run_dir, model, optimizer=None, step: int = 0, extra: dict | None = None, *,
         spec: dict | None = None, train_config: dict | None = None,
         arrays: dict[str, torch.Tensor] | None = None) -> Path:
    """Atomically write the checkpoint of ``model`` (and ``optimizer``) at ``step`` into ``run_dir``.

    ``spec`` describes the observation and action spaces (the dataset manifest's
    task, image_size, action_dim, proprio_dim, objects); ``train_config`` is the
    run's full config; ``extra`` is JSON bookkeeping returned by
    :func:`load_training_state` on resume; ``arrays`` are tensors the training
    itself changes besides the model (returned by :func:`load_arrays`).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    model_cfg = dict(model.config)
    if "arch" not in model_cfg:
        raise ValueError(f"{type(model).__name__}.config has no 'arch': it must name the architecture in "
                         "embodied.models.MODELS that rebuilds the model")
    spec = dict(spec or {"task": model.task, "action_dim": int(model.action_dim)})
    payloads = {"model.safetensors": _model_payload(model, step)}
    optim_state = None
    if optimizer is not None:
        payloads["optim.safetensors"], optim_state = _optim_payload(optimizer, step)
    if arrays:
        payloads["arrays.safetensors"] = st_save({k: v.detach().to("cpu", copy=True).contiguous()
                                                  for k, v in arrays.items()}, metadata={"format": FORMAT})
    state = {"format": FORMAT, "step": int(step), "optimizer": optim_state, "extra": extra or {}}
    payloads["state.json"] = (json.dumps(state, indent=1) + "\n").encode()
    token = os.urandom(3).hex()  # a fresh name even when the same step is saved twice
    names = {part: _versioned(part, step, token) for part in payloads}
    config = {"format": FORMAT, "step": int(step), "task": model.task, "arch": model_cfg["arch"],
              "context": int(model.context), "spec": spec, "model": model_cfg,
              "run_config": train_config, "torch": torch.__version__,
              "files": {part: {"path": names[part], "bytes": len(p), "crc32": _crc(p)}
                        for part, p in payloads.items()}}
    previous = _committed_step(run_dir)
    try:
        for part, payload in payloads.items():
            atomic_write_bytes(run_dir / names[part], payload)
        atomic_write_json(run_dir / "config.json", config)  # the commit: one rename
    except OSError as err:
        for name in names.values():
            (run_dir / name).unlink(missing_ok=True)
        kept = f"the checkpoint of step {previous} is intact" if previous is not None else "no checkpoint was written"
        raise UserError(f"{run_dir}: could not write the checkpoint of step {step} ({err.strerror or err}); {kept}; "
                        "free disk space or fix the folder's permissions, then resume with --resume") from None
    _remove_unreferenced(run_dir, set(names.values()))
    return run_dir


def _versioned(part: str, step: int, token: str) -> str:
    """'model.safetensors' -> 'model.00000008.a1b2c3.safetensors'."""
    stem, ext = part.split(".", 1)
    return f"{stem}.{int(step):08d}.{token}.{ext}"


_CHECKPOINT_FILE = re.compile(r"(model|optim|arrays)(\.\d+\.[0-9a-f]+)?\.safetensors|state(\.\d+\.[0-9a-f]+)?\.json")


def _committed_step(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "config.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_unreferenced(run_dir: Path, keep: set[str]) -> None:
    """Delete checkpoint files config.json does not name: the previous checkpoint, and leftovers of killed saves."""
    for path in run_dir.iterdir():
        name = path.name
        if name in keep:
            continue
        if _CHECKPOINT_FILE.fullmatch(name) or (name.startswith(".") and name.endswith(".tmp")):
            path.unlink(missing_ok=True)


def read_config(run_dir) -> dict:
    """config.json of a run folder, with one-line errors for a missing or broken one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder; train one with "
                        f"`embodied train --config configs/<task>_<arch>.yaml out={run_dir}`")
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: no config.json, so no checkpoint yet; pass a run folder that "
                        "`embodied train` has checkpointed (it writes one every train.ckpt_every steps)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: corrupt checkpoint config ({err}); restore the run folder or re-train") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        found = cfg.get("format") if isinstance(cfg, dict) else None
        raise UserError(f"{path}: not an embodied checkpoint (format {found!r}, expected {FORMAT!r})")
    for key in ("task", "spec", "model", "files", "step"):
        if key not in cfg:
            raise UserError(f"{path}: checkpoint config lacks {key!r}; it is damaged, re-train the model")
    return cfg


def file_path(run_dir, cfg: dict, part: str) -> Path:
    """Where the checkpoint described by ``cfg`` (its config.json) keeps ``part`` ("model.safetensors", ...)."""
    entry = cfg["files"].get(part) or {}
    return Path(run_dir) / entry.get("path", part)  # the first checkpoints had unversioned names


def _read_checked(run_dir: Path, cfg: dict, name: str) -> bytes:
    want = cfg["files"].get(name)
    if want is None:
        raise UserError(f"{run_dir / name}: not part of this checkpoint (config.json does not list it)")
    path = file_path(run_dir, cfg, name)
    if not path.is_file():
        raise UserError(f"{path}: missing from the checkpoint; restore it or re-train")
    payload = path.read_bytes()
    if len(payload) != want["bytes"] or _crc(payload) != want["crc32"]:
        raise UserError(f"{path}: truncated or corrupt ({len(payload)} bytes, expected {want['bytes']}, "
                        f"or a checksum mismatch); restore the run folder or re-train")
    return payload


def _load_safetensors(path: Path, payload: bytes) -> tuple[dict, dict]:
    try:
        tensors = st_load(payload)
    except UNREADABLE as err:
        raise UserError(f"{path}: unreadable safetensors file ({err}); restore the run folder or re-train") from None
    header_len = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8:8 + header_len])
    return tensors, header.get("__metadata__", {})


def _describe(task, spec: dict) -> str:
    parts = [f"{k} {spec[k]}" for k in SPACE_KEYS if k in spec]
    return f"task {task!r}" + (f" ({', '.join(parts)})" if parts else "")


def check_compatible(run_dir, cfg: dict, task: str | None = None, spec: dict | None = None) -> None:
    """Raise a one-line UserError if the checkpoint's task or spaces differ from the requested ones."""
    ck_task, ck_spec = cfg["task"], cfg["spec"]
    spec = dict(spec or {})
    task = task if task is not None else spec.get("task")
    bad_task = task is not None and canonical_task(str(task)) != canonical_task(str(ck_task))
    bad_space = [k for k in SPACE_KEYS if k in spec and k in ck_spec and list(
        spec[k] if isinstance(spec[k], (list, tuple)) else [spec[k]]) != list(
        ck_spec[k] if isinstance(ck_spec[k], (list, tuple)) else [ck_spec[k]])]
    if bad_task or bad_space:
        raise UserError(f"{run_dir}: checkpoint was trained for {_describe(ck_task, ck_spec)} but is being loaded "
                        f"into {_describe(task if task is not None else ck_task, spec)}; use a checkpoint trained "
                        f"on {task if task is not None else 'this task'!r} or train one with `embodied train`")


def import_plugins(modules) -> None:
    """Import the modules a user's own training config names in ``plugins`` (they may register architectures).

    Only ``embodied train`` calls this, with the config the user passed; loading
    a checkpoint never imports what the checkpoint names.
    """
    for name in modules or ():
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise UserError(f"plugin module {name!r} cannot be imported ({err}); install it or remove it "
                            "from the config's plugins list") from None


def build_from_config(cfg: dict, where) -> torch.nn.Module:
    """A fresh model of the architecture and spaces a checkpoint's config.json describes."""
    arch = cfg["model"].get("arch")
    if arch not in MODELS:
        raise UserError(f"{where}: checkpoint architecture {arch!r} is unknown here (known: {', '.join(MODELS)}); "
                        "import the module that registers it in embodied.models.MODELS before loading (a checkpoint's "
                        "own plugins list is never imported)")
    try:
        return build_model(dict(cfg["model"]), dict(cfg["spec"]))
    except (ValueError, TypeError) as err:
        raise UserError(f"{where}: cannot rebuild the {arch!r} model from config.json ({err}); "
                        "the checkpoint was made by other model code") from None


def load(run_dir, task: str | None = None, spec: dict | None = None, device="cpu"):
    """Rebuild the model saved in ``run_dir`` from its config.json and weights (eval mode).

    With ``task`` and/or ``spec`` (image_size, action_dim, proprio_dim), a
    checkpoint trained for another task or other spaces is refused with a
    one-line error naming both.
    """
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    check_compatible(run_dir, cfg, task, spec)
    payload = _read_checked(run_dir, cfg, "model.safetensors")
    path = file_path(run_dir, cfg, "model.safetensors")
    tensors, meta = _load_safetensors(path, payload)
    if meta.get("step") != str(cfg["step"]):
        raise UserError(f"{path}: weights of step {meta.get('step')} but config.json is step {cfg['step']}; "
                        "the checkpoint is inconsistent, restore the run folder or re-train")
    for alias, name in json.loads(meta.get("aliases", "{}")).items():
        tensors[alias] = tensors[name]
    model = build_from_config(cfg, run_dir)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).strip().splitlines()[:3])[:300]
        raise UserError(f"{path}: weights do not fit the {cfg['model'].get('arch')!r} model built from config.json "
                        f"({detail}); the checkpoint was made by other model code") from None
    model.to(device)
    model.eval()
    return model


def load_arrays(run_dir) -> dict[str, torch.Tensor]:
    """The ``arrays`` the checkpoint in ``run_dir`` was saved with ({} if none)."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if "arrays.safetensors" not in cfg["files"]:
        return {}
    return _load_safetensors(file_path(run_dir, cfg, "arrays.safetensors"),
                             _read_checked(run_dir, cfg, "arrays.safetensors"))[0]


def load_training_state(run_dir, optimizer=None) -> tuple[int, dict]:
    """Step and ``extra`` bookkeeping of the checkpoint in ``run_dir``; loads ``optimizer``'s state in place."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    raw = _read_checked(run_dir, cfg, "state.json")
    try:
        state = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{file_path(run_dir, cfg, 'state.json')}: corrupt ({err}); restore the run folder or "
                        "re-train") from None
    if state.get("step") != cfg["step"]:
        raise UserError(f"{file_path(run_dir, cfg, 'state.json')}: step {state.get('step')} but config.json is step "
                        f"{cfg['step']}; "
                        "the checkpoint is inconsistent, restore the run folder or start a new run")
    if optimizer is not None:
        ostate = state.get("optimizer")
        if ostate is None:
            raise UserError(f"{run_dir}: checkpoint has no optimizer state, so it cannot be resumed; "
                            "start a new run (out=NEW_DIR)")
        if ostate["type"] != type(optimizer).__name__:
            raise UserError(f"{run_dir}: optimizer state is {ostate['type']}, not {type(optimizer).__name__}")
        path = file_path(run_dir, cfg, "optim.safetensors")
        tensors, meta = _load_safetensors(path, _read_checked(run_dir, cfg, "optim.safetensors"))
        per_param: dict[int, dict] = {}
        for key, t in tensors.items():
            pid, name = key.split(".", 1)
            per_param.setdefault(int(pid), {})[name] = t
        for key, v in ostate["scalars"].items():
            pid, name = key.split(".", 1)
            per_param.setdefault(int(pid), {})[name] = v
        per_param = dict(sorted(per_param.items()))
        groups = [{k: tuple(v) if k in ostate["tuple_keys"] else v for k, v in g.items()}
                  for g in ostate["param_groups"]]
        try:
            optimizer.load_state_dict({"state": per_param, "param_groups": groups})
        except (ValueError, KeyError, RuntimeError) as err:
            raise UserError(f"{path}: optimizer state does not fit this model ({err}); start a new run") from None
    return int(state["step"]), state.get("extra") or {}
