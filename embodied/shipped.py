"""Shipped checkpoints: trained models that come with the package, loadable by name.

``embodied/shipped/<name>/`` holds what loading a model needs and nothing else::

    config.json                        the run's checkpoint config (its "files" list only the weights)
    model.<step>.<id>.safetensors      the weights, byte for byte as `embodied train` wrote them
    shipped.json                       name, task, arch, step, the command that trained it, the training
                                       dataset's fingerprint, and its measured metrics (held-out
                                       prediction, planning success beside the MuJoCo oracle, probe
                                       scores), each with the command that measured it

Wherever a run folder is accepted (``--model``, ``model=``, :func:`embodied.load.load_model`), a shipped
checkpoint's name works too; an existing path always wins over a name. ``embodied checkpoints`` lists them.

The folder searched is ``embodied/shipped/`` in the installed package, or the folder named by the
environment variable ``EMBODIED_SHIPPED_DIR`` (tests use it; so can a user with checkpoints of their own);
every function here also takes ``root=`` to name it directly.

Shipping a trained run (its metrics.json, and the plan.json / validation.json files that measured it)::

    python -m embodied.shipped RUN_DIR NAME [PLAN_OR_VALIDATION_JSON ...] [--data DIR] [--force]

copies the loadable files into a temporary folder beside the destination, checks that the copy loads,
then renames it into place (``--force`` replaces an existing checkpoint of that name).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

from embodied.checkpoint import file_path, load, read_config
from embodied.data import manifest_fingerprint, read_manifest
from embodied.envs.registry import canonical_task
from embodied.errors import UserError
from embodied.io import atomic_write_bytes, atomic_write_json, os_error_message

ENV = "EMBODIED_SHIPPED_DIR"
FORMAT = "embodied-shipped/1"
MANIFEST = "shipped.json"
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
RESERVED = ("mujoco", "oracle", "copy_last", "blind_oracle", "none")  # the reference models' names (embodied.load)


def shipped_root(root=None) -> Path:
    """The folder of shipped checkpoints: ``root``, else $EMBODIED_SHIPPED_DIR, else embodied/shipped/."""
    if root is not None:
        return Path(root)
    env = os.environ.get(ENV)
    return Path(env) if env else Path(__file__).resolve().parent / "shipped"


def _read_entry(folder: Path) -> dict:
    try:
        entry = json.loads((folder / MANIFEST).read_text())
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            raise ValueError(f"format {entry.get('format') if isinstance(entry, dict) else None!r}, "
                             f"expected {FORMAT!r}")
    except (OSError, ValueError) as err:
        return {"name": folder.name, "path": str(folder), "error": f"{folder / MANIFEST}: unreadable ({err})"}
    return entry | {"name": folder.name, "path": str(folder)}


def list_shipped(root=None) -> list[dict]:
    """Every shipped checkpoint, sorted by name: its shipped.json plus ``path`` (an unreadable one: ``error``)."""
    base = shipped_root(root)
    if not base.is_dir():
        return []
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and (p / MANIFEST).is_file())
    return [_read_entry(p) for p in folders]


def shipped_names(root=None) -> list[str]:
    return [e["name"] for e in list_shipped(root)]


def shipped_path(name, root=None) -> Path | None:
    """The folder of the shipped checkpoint called ``name``, or None when there is none."""
    name = str(name)
    if not NAME.fullmatch(name):
        return None
    folder = shipped_root(root) / name
    return folder if (folder / MANIFEST).is_file() else None


def shipped_for(task: str, arch: str | None = None, root=None) -> dict | None:
    """The shipped checkpoint to use for ``task``: one named after the task first, then one of ``arch``, then any."""
    task = canonical_task(task)
    entries = [e for e in list_shipped(root) if "error" not in e and canonical_task(str(e.get("task"))) == task]
    if not entries:
        return None
    entries.sort(key=lambda e: (e["name"] != task, arch is not None and e.get("arch") != arch, e["name"]))
    return entries[0]


# --- shipping a trained run --------------------------------------------------------------------------------------

def _load_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read {what} ({getattr(err, 'strerror', None) or err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not {what} (a JSON object was expected)")
    return data


def _measurement_file(path: Path) -> Path:
    """A plan.json or validation.json, or the folder holding one."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("plan.json", "validation.json") if (path / n).is_file()]
        if len(found) != 1:
            holds = "both plan.json and validation.json" if found else "neither plan.json nor validation.json"
            raise UserError(f"{path}: a folder holding {holds}; pass the JSON file itself")
        return found[0]
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass a plan.json (from `embodied plan`) or a validation.json "
                        "(from `embodied validate`)")
    return path


def _same_dir(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, TypeError):
        return False


def _finite(x):
    return x if not isinstance(x, float) or math.isfinite(x) else None


def _plan_entry(plan: dict) -> dict:
    seed, n = int(plan.get("seed", 0)), int(plan["episodes"])
    return {"success_rate": plan["success_rate"], "success_any_rate": plan.get("success_any_rate"),
            "return_mean": plan.get("return_mean"), "episodes": n, "seed": seed, "seeds": f"{seed}-{seed + n - 1}",
            "planner": plan.get("planner"), "objective": plan.get("objective"),
            "planner_settings": plan.get("planner_settings"),
            "per_episode_success": [bool(r.get("success")) for r in plan.get("per_episode", [])],
            "ms_per_action_median": plan.get("ms_per_action_median"), "torch_threads": plan.get("torch_threads"),
            "command": plan.get("command")}


def _measurements(files, run_dir: Path, cfg: dict) -> tuple[dict | None, dict | None]:
    """The planning and probe entries of shipped.json, from plan.json / validation.json files of this run."""
    task, step = canonical_task(cfg["task"]), cfg["step"]
    plans, validation = {}, None
    for given in files:
        path = _measurement_file(Path(given))
        data = _load_json(path, "a plan.json or validation.json")
        if data.get("task") is not None and canonical_task(str(data["task"])) != task:
            raise UserError(f"{path}: measured task {data['task']!r}, but the run was trained for {task!r}")
        if "probes" in data and "scores" in data:  # validation.json
            ck = data.get("checkpoint") or {}
            if not _same_dir(ck.get("run_dir"), run_dir) or ck.get("step") != step:
                raise UserError(f"{path}: validates {ck.get('run_dir')} at step {ck.get('step')}, not {run_dir} at "
                                f"step {step}; run `embodied validate --task {task} --model {run_dir} --out DIR` "
                                "and pass that validation.json")
            if validation is not None:
                raise UserError(f"{path}: a second validation.json; pass one")
            validation = {"scores": {p: (s or {}).get("model") for p, s in data["scores"].items()},
                          "separates": {p: r.get("separates") for p, r in data["probes"].items()},
                          "preset": "quick" if (data.get("settings") or {}).get("quick") else "full",
                          "seed": (data.get("settings") or {}).get("seed"), "command": data.get("command")}
        elif "success_rate" in data and "episodes" in data:  # plan.json
            kind = "oracle" if data.get("oracle") else "model"
            if kind == "model" and not _same_dir(data.get("model"), run_dir):
                raise UserError(f"{path}: plans with model {data.get('model')}, not {run_dir}; run `embodied plan "
                                f"--task {task} --model {run_dir} --out DIR` and pass that plan.json")
            if kind in plans:
                raise UserError(f"{path}: a second plan.json of the {kind}; pass one of the model and one of the "
                                "MuJoCo oracle")
            plans[kind] = _plan_entry(data)
        else:
            raise UserError(f"{path}: neither a plan.json nor a validation.json (no success_rate, no probes)")
    if "oracle" in plans and "model" not in plans:
        raise UserError("an oracle plan.json without the model's: pass the model's plan.json beside it")
    planning = None
    if "model" in plans:
        model, oracle = plans["model"], plans.get("oracle")
        if oracle is not None:
            same = [k for k in ("seed", "episodes", "planner", "objective") if model[k] != oracle[k]]
            if same:
                raise UserError("the model's and the oracle's plan.json differ in " + ", ".join(
                    f"{k} ({model[k]} / {oracle[k]})" for k in same) + "; plan both on the same seeds with the same "
                    "planner (--seed, --episodes, --planner)")
        ratio = (model["success_rate"] / oracle["success_rate"]
                 if oracle is not None and oracle["success_rate"] else None)
        planning = {"model": model, "oracle": oracle, "success_vs_oracle": ratio}
    return planning, validation


def _data_entry(run_dir: Path, cfg: dict, metrics: dict, data) -> dict:
    recorded = ((cfg.get("run_config") or {}).get("data") or {}).get("path") or metrics.get("data")
    path = Path(data) if data is not None else Path(recorded) if recorded else None
    if path is None or not (path / "manifest.json").is_file():
        raise UserError(f"{run_dir}: its training dataset {str(path) if path else '(not recorded)'!r} is not here, so "
                        "its fingerprint cannot be taken; pass the dataset folder with --data DIR")
    manifest = read_manifest(path)
    if canonical_task(str(manifest["task"])) != canonical_task(cfg["task"]):
        raise UserError(f"{path}: a dataset of task {manifest['task']!r}, but the run was trained for {cfg['task']!r}")
    max_episodes = ((cfg.get("run_config") or {}).get("data") or {}).get("max_episodes")
    return {"path": str(recorded or path), "fingerprint": manifest_fingerprint(path),
            "fingerprinted_at_ship_time": True, "episodes": manifest["episodes_total"],
            "steps": manifest["steps_total"], "policies": manifest.get("policies"), "max_episodes": max_episodes}


def ship(run_dir, name: str, *measurements, root=None, data=None, force: bool = False,
         command: str | None = None) -> Path:
    """Copy the loadable files of the trained run ``run_dir`` to ``<root>/<name>/`` with its shipped.json.

    ``measurements`` are plan.json files (the model's, and optionally the MuJoCo oracle's on the same seeds)
    and a validation.json of this run's checkpoint. ``data`` is the training dataset when it has moved from
    where the run recorded it; ``command`` overrides the training command metrics.json recorded. The new
    folder is built beside the destination and renamed into place; an existing one is refused unless
    ``force``. Returns the shipped folder.
    """
    run_dir = Path(run_dir)
    name = str(name)
    if not NAME.fullmatch(name) or name in RESERVED:
        raise UserError(f"shipped name {name!r}: use lower-case letters, digits, '_', '-' or '.', starting with a "
                        f"letter or digit, and none of {', '.join(RESERVED)}")
    cfg = read_config(run_dir)
    metrics = _load_json(run_dir / "metrics.json", "the run's metrics.json (written by `embodied train`)")
    if metrics.get("checkpoint_step") != cfg["step"]:
        raise UserError(f"{run_dir}/metrics.json measured step {metrics.get('checkpoint_step')} but the checkpoint "
                        f"is step {cfg['step']}; finish the run (`embodied train ... --resume`) so both agree")
    if not metrics.get("final"):
        print(f"embodied ship: {run_dir} stopped before train.steps (step {cfg['step']}); shipping it as it is",
              file=sys.stderr)
    planning, probes = _measurements(measurements, run_dir, cfg)
    data_entry = _data_entry(run_dir, cfg, metrics, data)
    base = shipped_root(root)
    dest = base / name
    if dest.exists() and not force:
        raise UserError(f"{dest}: a checkpoint is already shipped as {name!r}; pass --force to replace it")
    model_src = file_path(run_dir, cfg, "model.safetensors")
    files = {"model.safetensors": cfg["files"]["model.safetensors"]}
    train_command = command if command is not None else metrics.get("command") or None
    if not train_command:
        print(f"embodied ship: {run_dir}/metrics.json records no command (trained from Python?); pass --command",
              file=sys.stderr)
    entry = {
        "format": FORMAT, "name": name, "task": cfg["task"], "arch": cfg.get("arch") or cfg["model"].get("arch"),
        "step": cfg["step"], "params": metrics.get("params"), "command": train_command,
        "run_dir": str(run_dir.resolve()), "data": data_entry,
        "metrics": {
            "heldout": {k: _finite(v) for k, v in metrics.items() if k.startswith("heldout.")},
            "heldout_command": train_command,
            "heldout_note": "open-loop prediction on the dataset's held-out episodes, scored by `embodied train` "
                            "at the checkpoint's step (train.eval_windows windows, seed train.seed)",
            "train": {k: _finite(metrics.get(k)) for k in ("train.loss", "train.wall_s", "train.frames_per_s")},
            "planning": planning, "probes": probes},
        "files": [model_src.name, "config.json"],
        "shipped": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": cfg.get("torch"),
    }
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        shutil.copyfile(model_src, tmp / model_src.name)
        atomic_write_json(tmp / "config.json", {**cfg, "files": files})
        atomic_write_bytes(tmp / MANIFEST, (json.dumps(entry, indent=1) + "\n").encode())
        load(tmp, task=cfg["task"])  # the copy loads (weights checked against config.json's size and CRC32)
        old = None
        if dest.exists():
            old = base / f".{name}.{os.getpid()}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embodied.shipped",
                                     description="ship a trained run folder as a named checkpoint "
                                                 "(see the module docstring)")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder written by `embodied train`")
    parser.add_argument("name", metavar="NAME", help="the name `--model NAME` will load it by (e.g. push)")
    parser.add_argument("measurements", nargs="*", type=Path, metavar="JSON",
                        help="plan.json of the model (and of the MuJoCo oracle on the same seeds), validation.json")
    parser.add_argument("--data", type=Path, help="the training dataset, if it moved from where the run recorded it")
    parser.add_argument("--root", type=Path, help=f"shipped folder (default ${ENV} or embodied/shipped/)")
    parser.add_argument("--command", help="the training command, if metrics.json does not record it")
    parser.add_argument("--force", action="store_true", help="replace a checkpoint already shipped under NAME")
    args = parser.parse_args(argv)
    try:
        dest = ship(args.run_dir, args.name, *args.measurements, root=args.root, data=args.data, force=args.force,
                    command=args.command)
    except UserError as err:
        print(f"embodied ship: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"embodied ship: error: {os_error_message(err)}", file=sys.stderr)
        return 2
    print(f"shipped {args.name!r} -> {dest} (`embodied checkpoints` lists it; `--model {args.name}` loads it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
