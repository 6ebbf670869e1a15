"""Episode datasets on disk: one safetensors file per episode and a JSON manifest.

Loading one into memory (:class:`~embodied.dataset.Dataset`) and sampling training windows from it
(:class:`~embodied.dataset.WindowSampler`) is :mod:`embodied.dataset`.

Layout of a dataset folder::

    manifest.json                    task, spaces, counts, policies, one row per episode
    episodes/ep_000042.safetensors   one episode (the number is its reset seed)

Keys of an episode file (LeRobot-style names; T steps, T+1 frames):

    observation.image  (T+1, H, W, 3) uint8   camera frames
    observation.state  (T+1, P) float32        proprioception (robot joints only)
    action             (T, A) float32          action taken after frame t
    reward             (T,) float32            reward on arriving at frame t+1
    terminated         (T,) uint8
    sim_state          (T+1, S) float64        exact MuJoCo state (validation only)
    objects.<name>     (T+1, 3) float64        world position of each scored object

The header metadata holds task, seed, policy, length and a CRC32 of the data,
so a truncated or corrupted file is caught on load. safetensors was chosen
over HDF5/Minari/npz: no pickle, memory-mappable, readable from numpy, torch
and Rust, and dependency-light (Minari's writer pulls jax).

An action-free episode (video whose actions were not recorded: ``embodied
collect --no-actions``) has ``actions`` "False" in its header and no ``action``
array; its manifest row says ``"actions": false``. A :class:`~embodied.dataset.Dataset` keeps such
episodes apart (``Dataset.unlabelled``, actions None), with the train episodes
that ``labelled_fraction`` leaves out, so nothing that needs actions sees them.

Loading checks the manifest and every episode with :mod:`embodied.dataset_checks`
and rebuilds a manifest that disagrees with the folder from the episode headers.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import zlib
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from embodied.dataset_checks import (FORMAT, bad_episode, check_episode_header, fov_args,
                                     header_factors, manifest_problem)
from embodied.errors import UserError
from embodied.io import atomic_write_bytes, atomic_write_json

EPISODE_GLOB, EPISODE_NAME = "ep_*.safetensors", "ep_{:06d}.safetensors"
DERIVED_KEYS = ("format", "episodes_total", "steps_total", "success_rate", "policies",
                "episodes")  # the rest is the spec


def _crc(arrays: dict[str, np.ndarray]) -> str:
    crc = 0
    for key in sorted(arrays):
        crc = zlib.crc32(np.ascontiguousarray(arrays[key]).view(np.uint8).reshape(-1), crc)
    return f"{crc:08x}"


def write_episode(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Atomically write one episode with its metadata and checksum."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    header = {k: str(v) for k, v in meta.items()} | {"crc32": _crc(arrays), "format": FORMAT}
    atomic_write_bytes(path, save(arrays, metadata=header))


UNREADABLE = (SafetensorError, ValueError, RuntimeError, OSError)  # what safetensors raises for a damaged file


def _corrupt(path: Path, err: Exception) -> UserError:
    return UserError(f"{path}: truncated or corrupt episode file ({err}); delete it and re-run `embodied collect`")


def read_episode_header(path: Path) -> tuple[dict, dict[str, tuple[tuple[int, ...], str]]]:
    """Header metadata and ``{key: (shape, dtype)}`` of an episode file, without reading its arrays."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            shapes = {k: (tuple(v.get_shape()), v.get_dtype()) for k, v in slices.items()}
            return dict(f.metadata() or {}), shapes
    except UNREADABLE as err:
        raise _corrupt(path, err) from None


def read_episode(path: Path, verify: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """All arrays and the metadata of one episode; checks the CRC unless verify=False."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except UNREADABLE as err:
        raise _corrupt(path, err) from None
    if verify and meta.get("crc32") != _crc(arrays):
        raise UserError(f"{path}: checksum mismatch, the file is corrupt; delete it and re-run `embodied collect`")
    return arrays, meta


def _row(path: Path, meta: dict) -> dict:
    """The manifest row of one episode file, from its header."""
    try:
        seed, length = int(meta["seed"]), int(meta["length"])
    except (KeyError, ValueError):
        raise bad_episode(path, "header has no integer 'seed' and 'length'") from None
    if path.name != EPISODE_NAME.format(seed):
        raise bad_episode(path, f"header seed {seed} does not match the file name")
    row = {"file": f"episodes/{path.name}", "seed": seed, "policy": meta.get("policy", ""), "length": length,
           "success": meta.get("success") == "True"}
    return row | ({"actions": False} if meta.get("actions") == "False" else {})


def episode_files(root: Path) -> list[Path]:
    """Episode files of a dataset, sorted by seed."""
    return sorted((Path(root) / "episodes").glob(EPISODE_GLOB))


def episode_path(root: Path, seed: int) -> Path:
    """Where the episode of reset seed ``seed`` lives in the dataset at ``root``."""
    return Path(root) / "episodes" / EPISODE_NAME.format(seed)


def check_dataset_task(root: Path, task: str, flag: str = "--out", size: int | None = None,
                       factors: dict | None = None) -> None:
    """Refuse to add ``task`` episodes (of ``size`` pixels, if given) to a dataset of another task or frame size,
    or (``factors`` given: {name: value, or [low, high] sampled per episode}) under other factors of variation."""
    existing = episode_files(root)
    if not existing:
        return
    meta, shapes = read_episode_header(existing[0])
    if meta.get("task") != task:
        raise UserError(f"{root}: holds a dataset of task {meta.get('task')!r}, not {task!r}; "
                        f"choose another {flag} folder")
    if factors is not None and header_factors(existing[0], meta) != dict(factors):
        have, want = fov_args(header_factors(existing[0], meta)), fov_args(dict(factors))
        raise UserError(f"{root}: holds episodes recorded under factors {', '.join(have) or 'none'}, not "
                        f"{', '.join(want) or 'none'}; pass {' '.join(f'--fov {a}' for a in have) or 'no --fov'} "
                        f"to add to it or choose another {flag} folder")
    frame = shapes["observation.image"][0][1:3] if "observation.image" in shapes else None
    if size is not None and frame and frame != (size, size):
        raise UserError(f"{root}: holds {'x'.join(map(str, frame))} frames, not {size}x{size}; "
                        f"pass --size {frame[0]} or choose another {flag} folder")


def is_heldout(seed: int, fraction: float = 0.1) -> bool:
    """Stable train/held-out split by episode seed: adding episodes never moves old ones."""
    return (seed * 2654435761 % 2**32) / 2**32 < fraction


def labelled_subset(seeds: list[int], fraction: float, label_seed: int = 0) -> set[int]:
    """The seeds of ``round(fraction * n)`` episodes (at least one) whose actions are kept, picked by ``label_seed``.

    Each seed is ranked by a hash of (label_seed, seed), so the same call gives the
    same subset, and smaller fractions give subsets of larger ones (5% within 10% within 25%).
    """
    def rank(seed: int) -> bytes:
        return hashlib.sha256(f"{label_seed}:{seed}".encode()).digest()

    keep = max(1, round(fraction * len(seeds))) if seeds else 0
    return set(sorted(seeds, key=rank)[:keep])


def episode_rows(root: Path, spec: dict) -> list[dict]:
    """Manifest rows of every episode file in ``root``, each header checked against ``spec``."""
    rows = []
    for path in episode_files(root):
        meta, shapes = read_episode_header(path)
        check_episode_header(path, meta, shapes, spec)
        rows.append(_row(path, meta))
    return rows


def _manifest(spec: dict, rows: list[dict]) -> dict:
    policies: dict[str, int] = {}
    for r in rows:
        kind = r["policy"].split("(")[0]
        policies[kind] = policies.get(kind, 0) + 1
    return {**spec, "format": FORMAT, "episodes_total": len(rows), "steps_total": sum(r["length"] for r in rows),
            "success_rate": float(np.mean([r["success"] for r in rows])) if rows else 0.0,
            "policies": policies, "episodes": rows}


def build_manifest(root: Path, spec: dict) -> dict:
    """The manifest of a dataset folder, rebuilt from its episode headers (each checked against ``spec``)."""
    return _manifest(spec, episode_rows(root, spec))


def _rebuild_hint(root: Path) -> str:
    """How to rebuild a broken manifest: a collect of one more episode rewrites it from the episode headers."""
    task, size = "TASK", ""
    files = episode_files(root)
    with contextlib.suppress(UserError, KeyError, IndexError):
        meta, shapes = read_episode_header(files[0])
        task = meta.get("task", task)
        size = f" --size {shapes['observation.image'][0][1]}"
    return (f"re-run `embodied collect --task {task}{size} --episodes 1 --out {root}` "
            "to rebuild it from the episode files")


def read_manifest(root: Path) -> dict:
    """The manifest of a dataset folder, with one-line errors for missing or broken ones."""
    root = Path(root)
    path = root / "manifest.json"
    if not root.is_dir():
        raise UserError(f"{root}: no such dataset folder; create one with `embodied collect --out {root}`")
    if not path.exists():
        raise UserError(f"{root}: no manifest.json, this is not a dataset folder (or it is empty); "
                        f"run `embodied collect --out {root}`")
    try:
        manifest = json.loads(path.read_text())
        problem = manifest_problem(manifest)
    except (ValueError, OSError) as err:  # not JSON, not UTF-8, not a readable file
        problem = f"corrupt manifest ({err})"
    if problem:
        raise UserError(f"{path}: {problem}; {_rebuild_hint(root)}")
    return manifest


def reconcile_manifest(root: Path, manifest: dict) -> dict:
    """The manifest of ``root`` checked against its episode files; rebuilt and saved if they disagree.

    A collect killed before it rewrote the manifest leaves episodes it does not
    list (and a removed broken episode leaves a row without a file). Refusing
    would leave no way to fix it short of collecting more, and silently using
    the listed subset trains on other data than the folder holds; the manifest
    is derived data (every field comes from the episode headers and the spec),
    so it is rebuilt, saved atomically, and said so in one line. Every header is
    checked first, so a refused dataset is left untouched.
    """
    root = Path(root)
    spec = {k: v for k, v in manifest.items() if k not in DERIVED_KEYS}
    rows = episode_rows(root, spec)
    if rows == manifest["episodes"]:
        return manifest
    rebuilt = _manifest(spec, rows)
    listed, held = {r["file"] for r in manifest["episodes"]}, {r["file"] for r in rows}
    note = (f"listed {len(listed)} episodes, the folder holds {len(held)} ({len(held - listed)} not listed, "
            f"{len(listed - held)} missing)" if listed != held else "rows disagree with the episode headers")
    try:
        atomic_write_json(root / "manifest.json", rebuilt)
        done = "rebuilt it from the episode files"
    except OSError as err:
        done = f"using the episode files (could not save the manifest: {err.strerror or err})"
    print(f"embodied: {root / 'manifest.json'} {note}; {done}", file=sys.stderr)
    return rebuilt


def manifest_fingerprint(root: Path) -> str:
    """``sha256:<hex>`` of a dataset: its manifest's spec and episode rows, each row with its file's CRC32.

    Two datasets with the same task, spaces, episodes (seed, policy, length,
    success) and episode contents have the same fingerprint; any added,
    removed or changed episode changes it. Reads the episode headers only.
    """
    root = Path(root)
    manifest = read_manifest(root)
    spec = {k: v for k, v in manifest.items() if k not in DERIVED_KEYS}
    rows = []
    for row in manifest["episodes"]:
        path = root / row["file"]
        if not path.is_file():
            raise UserError(f"{root / 'manifest.json'} lists {row['file']}, which is missing; "
                            f"{_rebuild_hint(root)}")
        meta, _ = read_episode_header(path)
        rows.append({**row, "crc32": meta.get("crc32")})
    payload = json.dumps({"spec": spec, "episodes": rows}, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()
