"""Our episode dataset -> a LeRobot v2.1 dataset, the camera as PNG bytes in the parquet (bit-exact frames).

The format and the frame/step convention are described in :mod:`embodied.lerobot`.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embodied.data import read_episode, read_manifest, reconcile_manifest
from embodied.dataset_checks import check_episode_values
from embodied.errors import UserError
from embodied.io import atomic_write_bytes, atomic_write_json
from embodied.lerobot import (CODEBASE_VERSION, CHUNKS_SIZE, DATA_PATH, IMAGE_KEY, INDEX_FEATURES, check_new_folder,
                             staging_folder, jsonl_bytes, episode_bar)


def _stats(values: np.ndarray) -> dict:
    """lerobot's per-episode statistics of one feature: min, max, mean, std over frames, and the count."""
    a = values.reshape(len(values), -1) if values.ndim > 1 else values[:, None]
    f = a.astype(np.float64)
    return {"min": a.min(0).tolist(), "max": a.max(0).tolist(), "mean": f.mean(0).tolist(),
            "std": f.std(0).tolist(), "count": [len(values)]}


def _image_stats(frames: np.ndarray) -> dict:
    """Per-channel statistics of frames scaled to [0, 1], shaped (3, 1, 1) as lerobot writes them."""
    per_channel = frames.reshape(-1, 3).astype(np.float64) / 255.0
    stats = {name: [[[float(x)]] for x in f(per_channel, axis=0)]
             for name, f in (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std))}
    return stats | {"count": [len(frames)]}


def _features(manifest: dict) -> dict:
    h, w, c = manifest["image_size"]
    return {IMAGE_KEY: {"dtype": "image", "shape": [h, w, c], "names": ["height", "width", "channels"]},
            "observation.state": {"dtype": "float32", "shape": [manifest["proprio_dim"]], "names": None},
            "action": {"dtype": "float32", "shape": [manifest["action_dim"]], "names": None},
            "next.reward": {"dtype": "float32", "shape": [1], "names": None},
            "next.done": {"dtype": "bool", "shape": [1], "names": None},
            **{k: {"dtype": v, "shape": [1], "names": None} for k, v in INDEX_FEATURES.items()}}


def _hf_features(features: dict) -> dict:
    """The Hugging Face ``datasets`` feature description that lerobot reads from a parquet file's schema."""
    out = {}
    for key, ft in features.items():
        if ft["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif ft["shape"] == [1]:
            out[key] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            out[key] = {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": ft["shape"][0],
                        "_type": "Sequence"}
    return {"info": {"features": out}}


def _episode_table(arrays: dict, manifest: dict, features: dict, episode: int, first: int, fps: float) -> tuple:
    """One episode as a parquet payload (T+1 rows, see the module doc) and its lerobot statistics."""
    import imageio.v3 as iio

    frames, state = arrays["observation.image"], arrays["observation.state"]
    n = len(frames)
    action = np.concatenate([arrays["action"], arrays["action"][-1:]])
    norm = manifest.get("action_normalization")
    if norm:  # back to the units the dataset was imported from
        low, high = np.asarray(norm["low"], np.float64), np.asarray(norm["high"], np.float64)
        action = (low + (action.astype(np.float64) + 1.0) / 2.0 * (high - low)).astype(np.float32)
    columns = {
        IMAGE_KEY: [{"bytes": iio.imwrite("<bytes>", f, extension=".png"), "path": f"frame_{t:06d}.png"}
                    for t, f in enumerate(frames)],
        "observation.state": state.astype(np.float32),
        "action": action.astype(np.float32),
        "next.reward": np.concatenate([arrays["reward"], [0.0]]).astype(np.float32),
        "next.done": np.concatenate([arrays["terminated"].astype(bool), [True]]),
        "timestamp": (np.arange(n) / fps).astype(np.float32),
        "frame_index": np.arange(n, dtype=np.int64),
        "episode_index": np.full(n, episode, np.int64),
        "index": np.arange(first, first + n, dtype=np.int64),
        "task_index": np.zeros(n, np.int64),
    }
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    cols = []
    for key in features:
        v = columns[key]
        if key == IMAGE_KEY:
            cols.append(pa.array(v, type=image_type))
        elif v.ndim == 2:
            cols.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]))
        else:
            cols.append(pa.array(v))
    schema = pa.schema([pa.field(k, c.type) for k, c in zip(features, cols)],
                       metadata={"huggingface": json.dumps(_hf_features(features))})
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(cols, schema=schema), sink)
    stats = {k: (_image_stats(frames) if k == IMAGE_KEY else _stats(columns[k])) for k in features}
    return sink.getvalue(), stats


def export_lerobot(dataset_dir, out_dir, fps: float | None = None, progress: bool = True) -> dict:
    """Write the dataset at ``dataset_dir`` as a LeRobot v2.1 dataset in the new folder ``out_dir``.

    ``fps`` (frames per second of the recording) sets the timestamps; default: the manifest's ``fps``
    (kept by an import), else 20. Returns a summary (episodes, frames, fps, out).
    """
    root, out = Path(dataset_dir), Path(out_dir)
    manifest = reconcile_manifest(root, read_manifest(root))
    check_new_folder(out, "--out")
    fps = float(fps if fps is not None else manifest.get("fps", 20))
    if not (math.isfinite(fps) and 0 < fps <= 1000):
        raise UserError(f"--fps must be a number of frames per second in (0, 1000], not {fps:g}")
    rows = manifest["episodes"]
    if not rows:
        raise UserError(f"{root}: dataset has no episodes; run `embodied collect --out {root}`")
    free = [r["file"] for r in rows if r.get("actions") is False]
    if free:
        raise UserError(f"{root}: {len(free)} episodes are action-free ({free[0]}, ...) and LeRobot stores an action "
                        "per frame; export a dataset whose episodes all have actions")
    features = _features(manifest)
    task = manifest["task"]
    episodes, stats, total = [], [], 0
    with staging_folder(out, "--out") as tmp:
        for i, row in enumerate(episode_bar(rows, progress, f"export {task}")):
            path = root / row["file"]
            arrays, _ = read_episode(path)
            check_episode_values(path, arrays)
            payload, ep_stats = _episode_table(arrays, manifest, features, i, total, fps)
            atomic_write_bytes(tmp / DATA_PATH.format(episode_chunk=i // CHUNKS_SIZE, episode_index=i), payload)
            n = len(arrays["observation.image"])
            episodes.append({"episode_index": i, "tasks": [task], "length": n, "embodied_seed": row["seed"],
                             "embodied_success": bool(row.get("success", False))})
            stats.append({"episode_index": i, "stats": ep_stats})
            total += n
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": task, "total_episodes": len(rows),
                "total_frames": total, "total_tasks": 1, "total_videos": 0,
                "total_chunks": (len(rows) - 1) // CHUNKS_SIZE + 1, "chunks_size": CHUNKS_SIZE,
                "fps": int(fps) if fps.is_integer() else fps, "splits": {"train": f"0:{len(rows)}"},
                "data_path": DATA_PATH, "video_path": None, "features": features}
        atomic_write_bytes(tmp / "meta/tasks.jsonl", jsonl_bytes([{"task_index": 0, "task": task}]))
        atomic_write_bytes(tmp / "meta/episodes.jsonl", jsonl_bytes(episodes))
        atomic_write_bytes(tmp / "meta/episodes_stats.jsonl", jsonl_bytes(stats))
        atomic_write_json(tmp / "meta/info.json", info)
    return {"out": str(out), "format": f"lerobot {CODEBASE_VERSION}", "task": task, "episodes": len(rows),
            "frames": total, "fps": info["fps"]}
