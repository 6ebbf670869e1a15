"""What a valid dataset is: the manifest's structure, and each episode against the manifest's spec.

Each check raises (or returns) one line naming the file and the field, and
says how to fix it. The header checks read shapes and dtypes from the
safetensors header only, so checking every episode of a dataset costs far
less than loading it; the value checks run once per loaded episode.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from embodied.errors import UserError

FORMAT = "embodied-episodes/1"
# arrays every episode holds, with their safetensors dtypes (plus ``objects.<name>``, F64, per manifest object)
EPISODE_KEYS = {"observation.image": "U8", "observation.state": "F32", "action": "F32", "reward": "F32",
                "terminated": "U8", "sim_state": "F64"}
DTYPES = {"U8": "uint8", "F32": "float32", "F64": "float64"}  # safetensors names, for messages
# manifest fields and their JSON types
MANIFEST_KEYS = {"task": (str, "a task name"), "image_size": (list, "[height, width, 3]"),
                 "action_dim": (int, "an integer"), "proprio_dim": (int, "an integer"), "objects": (list, "a list"),
                 "episodes": (list, "a list of rows")}


def bad_episode(path: Path, what: str) -> UserError:
    """The one-line error for an episode file that breaks the rules."""
    return UserError(f"{path}: {what}; re-collect this episode or remove it")


def stores_actions(path: Path, meta: dict) -> bool:
    """Whether an episode stores its actions: False for an action-free one (header ``actions`` "False", no
    ``action`` array: video whose actions were not recorded)."""
    flag = meta.get("actions", "True")
    if flag not in ("True", "False"):
        raise bad_episode(path, f"header 'actions' is {flag!r}, not True or False")
    return flag == "True"


def check_episode_header(path: Path, meta: dict, shapes: dict, spec: dict) -> None:
    """Refuse an episode whose keys, dtypes, shapes or lengths disagree with the dataset ``spec``.

    ``meta`` and ``shapes`` come from the file's header
    (:func:`embodied.data.read_episode_header`); no array is read. An action-free
    episode (:func:`stores_actions`) has every array but ``action``.
    """
    labelled = stores_actions(path, meta)
    if not labelled and "action" in shapes:
        raise bad_episode(path, "header says actions False (action-free) but the file holds an 'action' array")
    if meta.get("task") != spec["task"]:
        raise bad_episode(path, f"episode is for task {meta.get('task')!r}, the dataset is {spec['task']!r}")
    objects = sorted(o["name"] for o in spec["objects"])
    tracks = sorted(k[len("objects."):] for k in shapes if k.startswith("objects."))
    if objects != tracks:
        raise bad_episode(path, f"object tracks {tracks} differ from the manifest's objects {objects}")
    state = shapes["sim_state"][0] if "sim_state" in shapes else ()
    rows = {"action": (spec["action_dim"],), "observation.image": tuple(spec["image_size"]),
            "observation.state": (spec["proprio_dim"],), "reward": (), "terminated": (),
            "sim_state": state[1:] if len(state) == 2 else None} | {f"objects.{n}": (3,) for n in objects}
    if not labelled:
        del rows["action"]
    counted = "action" if labelled else "reward"  # the per-step array that gives the episode's length
    action = shapes[counted][0] if counted in shapes else ()
    steps = action[0] if action else 0
    for key, row in rows.items():
        if key not in shapes:
            raise bad_episode(path, f"no {key!r} array")
        got, dtype = shapes[key]
        want = EPISODE_KEYS.get(key, "F64")
        if dtype != want:
            raise bad_episode(path, f"{key} is {DTYPES.get(dtype, dtype)}, the dataset format stores {DTYPES[want]}")
        if not got or got[1:] != row:
            raise bad_episode(path, _shape_problem(key, got, spec))
        per_frame = key not in ("action", "reward", "terminated")
        if got[0] != steps + per_frame:
            one = "frame (an episode has one frame more than actions)" if per_frame else "action"
            raise bad_episode(path, f"{key} has {got[0]} rows for {steps} actions, "
                                    f"expected {steps + per_frame}, one per {one}")
    if steps < 1:
        raise bad_episode(path, "the episode has no steps (0 actions)")
    if meta.get("length") != str(steps):
        raise bad_episode(path, f"header length {meta.get('length')!r} disagrees with its {steps} actions")


def _shape_problem(key: str, got: tuple, spec: dict) -> str:
    field = {"action": "action_dim", "observation.image": "image_size", "observation.state": "proprio_dim"}.get(key)
    if field:
        rule = f"the manifest says {field} {spec[field]}"
    else:
        rule = "expected " + {"reward": "(T,)", "terminated": "(T,)", "sim_state": "(T+1, S)"}.get(key, "(T+1, 3)")
    what = f"{got[1]} columns" if len(got) == 2 and field in ("action_dim", "proprio_dim") else f"shape {got}"
    return f"{key} has {what}, {rule}"


def header_factors(path: Path, meta: dict) -> dict:
    """The factor setting an episode header records: {name: value, or [low, high] for a value sampled from a range}."""
    try:
        return {**json.loads(meta.get("factors") or "{}"), **json.loads(meta.get("factor_ranges") or "{}")}
    except ValueError:
        raise bad_episode(path, "header 'factors' or 'factor_ranges' is not JSON") from None


def fov_args(setting: dict) -> list[str]:
    """A factor setting as ``--fov`` values: ``["block_mass=0.2..0.45", "light=0.9"]``."""
    return [f"{k}={v[0]:g}..{v[1]:g}" if isinstance(v, list) else f"{k}={v:g}" for k, v in setting.items()]


def check_episode_values(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Refuse non-finite float arrays and actions outside [-1, 1] (actions are stored normalised)."""
    for key, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            step = int(np.argwhere(~np.isfinite(a))[0][0])
            raise bad_episode(path, f"{key} is NaN or infinite at step {step}")
    worst = float(np.abs(arrays["action"]).max()) if "action" in arrays else 0.0
    if worst > 1.0:
        raise bad_episode(path, f"action reaches {worst:.3g}, outside [-1, 1] (actions are stored normalised)")


def manifest_problem(manifest) -> str | None:
    """What is wrong with the structure of a parsed manifest (None: it is what ``build_manifest`` writes)."""
    if not isinstance(manifest, dict):
        return f"holds a JSON {type(manifest).__name__}, not an object"
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')!r} is not {FORMAT!r}"
    for key, (kind, name) in MANIFEST_KEYS.items():
        if key not in manifest:
            return f"no {key!r} field"
        if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
            return f"{key!r} is {str(manifest[key])[:40]}, not {name}"
    size = manifest["image_size"]
    if not (len(size) == 3 and all(type(n) is int and n > 0 for n in size) and size[2] == 3):
        return f"'image_size' is {size}, not [height, width, 3]"
    if manifest["action_dim"] < 1 or manifest["proprio_dim"] < 0:
        return (f"'action_dim' is {manifest['action_dim']} and 'proprio_dim' {manifest['proprio_dim']}: "
                "need >= 1 and >= 0")
    if not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in manifest["objects"]):
        return "'objects' is not a list of {\"name\": ...} entries"
    for i, row in enumerate(manifest["episodes"]):
        if not (isinstance(row, dict) and isinstance(row.get("file"), str) and type(row.get("seed")) is int
                and type(row.get("length")) is int):
            return f"episodes[{i}] is {str(row)[:40]}, not a row with 'file', 'seed' and 'length'"
    return None
