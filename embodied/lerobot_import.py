"""A LeRobot v2.0 / v2.1 dataset -> one of ours (camera from the parquet or decoded from its videos).

The format, the frame/step convention and what LeRobot data lacks are described in :mod:`embodied.lerobot`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embodied.data import build_manifest, episode_path, write_episode
from embodied.dataset_checks import check_episode_values
from embodied.errors import UserError
from embodied.io import atomic_write_json
from embodied.lerobot import (CHUNKS_SIZE, DATA_PATH, VIDEO_PATH, IMAGE_KEY, SIZES, INDEX_FEATURES, TASK_NAME,
                             check_new_folder, staging_folder, episode_bar)


def _bad(where, what: str) -> UserError:
    return UserError(f"{where}: {what}")


def _read_info(src: Path) -> dict:
    path = src / "meta" / "info.json"
    if not src.is_dir():
        raise _bad(src, "no such folder; pass the folder of a LeRobot dataset (the one that holds meta/ and data/)")
    if not path.is_file():
        raise _bad(src, "no meta/info.json, so this is not a LeRobot dataset folder; pass the folder that holds "
                        "meta/info.json and data/ (e.g. a local copy of a LeRobot dataset from the Hugging Face Hub)")
    try:
        info = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise _bad(path, f"not readable JSON ({err}); restore the file from the original dataset") from None
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise _bad(path, "has no 'features' mapping; restore the file from the original dataset")
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v2."):
        raise _bad(path, f"codebase_version {version or 'missing'!r} is not supported: only LeRobot v2.0 and v2.1 "
                         "(one parquet file per episode) are read; convert the dataset to v2.1 first")
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000:
        raise _bad(path, f"'fps' is {fps!r}, not a number of frames per second; fix meta/info.json")
    return info


def _feature(info: dict, key: str, src: Path, hint: str) -> dict:
    ft = info["features"].get(key)
    if not isinstance(ft, dict) or not isinstance(ft.get("shape"), list):
        have = ", ".join(k for k in info["features"] if k not in INDEX_FEATURES)
        raise _bad(src / "meta/info.json", f"no {key!r} feature (it has {have}); {hint}")
    return ft


def _image_shape(ft: dict, key: str, src: Path) -> tuple[int, int]:
    """(height, width) of a camera feature; refuses sizes the image codecs cannot take."""
    where = src / "meta/info.json"
    if ft.get("dtype") not in ("image", "video"):
        raise _bad(where, f"feature {key!r} is {ft.get('dtype')!r}, not a camera ('image' or 'video'); "
                          "pass the camera's key with --image-key")
    shape, names = ft["shape"], [str(n).lower() for n in (ft.get("names") or [])]
    if len(shape) != 3:
        raise _bad(where, f"camera {key!r} has shape {shape}, not (height, width, 3)")
    h, w, c = (shape[1], shape[2], shape[0]) if names[:1] in (["channel"], ["channels"]) else shape
    if c != 3:
        raise _bad(where, f"camera {key!r} has {c} channels; only RGB (3 channels) frames are supported")
    if h != w or h not in SIZES:
        raise _bad(where, f"camera {key!r} frames are {h}x{w}; embodied needs square frames of 4 x a power of two "
                          f"({SIZES[0]} to {SIZES[-1]}, e.g. 64x64): resize the frames to such a size first")
    return h, w


def _vector_feature(info: dict, key: str, src: Path, hint: str) -> int:
    ft = _feature(info, key, src, hint)
    if len(ft["shape"]) != 1 or not isinstance(ft["shape"][0], int) or ft["shape"][0] < 1:
        raise _bad(src / "meta/info.json", f"feature {key!r} has shape {ft['shape']}, not a vector [n]; "
                                           "only flat state and action vectors are supported")
    return ft["shape"][0]


def _read_episodes(src: Path) -> list[dict]:
    path = src / "meta" / "episodes.jsonl"
    if not path.is_file():
        raise _bad(src, "no meta/episodes.jsonl (LeRobot v2.x lists its episodes there); "
                        "restore it from the original dataset")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            int(row["episode_index"])
        except (ValueError, TypeError, KeyError):
            raise _bad(path, f"line {i + 1} is not a JSON object with an integer 'episode_index'; "
                             "restore the file from the original dataset") from None
        rows.append(row)
    if not rows:
        raise _bad(path, "lists no episodes; the dataset is empty")
    return sorted(rows, key=lambda r: int(r["episode_index"]))


def _column(table, key: str, shape: tuple, file: Path) -> np.ndarray:
    """A numeric column as a float array of ``(rows, *shape)``."""
    try:
        values = np.asarray(table.column(key).to_pylist(), dtype=np.float64)
    except (TypeError, ValueError):
        raise _bad(file, f"column {key!r} is not numeric rows of shape {list(shape)}") from None
    want = (table.num_rows, *shape)
    if values.shape != want and values.size == int(np.prod(want)) and values.ndim == len(want) + 1:
        values = values.reshape(want)  # a scalar stored as a 1-element list
    if values.shape != want:
        raise _bad(file, f"column {key!r} holds {values.shape[1:] or 'scalars'} per row, meta/info.json says "
                         f"{list(shape) or [1]}; fix meta/info.json or the file")
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values.reshape(len(values), -1)))[0][0])
        raise _bad(file, f"column {key!r} is NaN or infinite at frame {row}; drop or repair that episode first")
    return values


def _decode_image(data, file: Path, key: str, row: int, size: tuple[int, int]) -> np.ndarray:
    import imageio.v3 as iio

    if not isinstance(data, dict) or not data.get("bytes"):
        raise _bad(file, f"row {row} of {key!r} holds no embedded image bytes; only images stored in the parquet "
                         "(as lerobot writes them) or videos are read")
    try:
        img = np.asarray(iio.imread(data["bytes"]))
    except (OSError, ValueError) as err:  # pillow's UnidentifiedImageError is an OSError: a corrupt image
        raise _bad(file, f"row {row} of {key!r} is not a readable image ({err}); repair or drop that episode") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.dtype != np.uint8 or img.shape[:2] != size or img.shape[2] not in (3, 4):
        raise _bad(file, f"row {row} of {key!r} is a {img.dtype} image of shape {img.shape}, meta/info.json says "
                         f"{size[0]}x{size[1]}x3 uint8; fix meta/info.json or the images")
    return img[..., :3]


def _decode_video(path: Path, timestamps: np.ndarray, fps: float, size: tuple[int, int]) -> np.ndarray:
    """The frames of one episode's video at the parquet's timestamps (frame k at k / fps)."""
    import imageio_ffmpeg

    if not path.is_file():
        raise _bad(path, "video file missing; restore it from the original dataset")
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        try:
            w, h = meta["size"]
            frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
        finally:
            reader.close()
    except (OSError, RuntimeError, StopIteration, ValueError) as err:
        raise _bad(path, f"not a readable video ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                         "restore it from the original dataset") from None
    if (h, w) != size:
        raise _bad(path, f"video frames are {h}x{w}, meta/info.json says {size[0]}x{size[1]}; fix meta/info.json")
    index = np.rint(timestamps * fps).astype(np.int64)
    if len(frames) == 0 or index.min() < 0 or index.max() >= len(frames):
        raise _bad(path, f"video has {len(frames)} frames, the episode's timestamps need {int(index.max()) + 1}; "
                         "restore it from the original dataset")
    return np.stack(frames)[index]


def _seeds(episodes: list[dict]) -> list[int]:
    """Episode seeds: the ``embodied_seed`` of an export of ours when every episode has a distinct one."""
    seeds = [e.get("embodied_seed") for e in episodes]
    if all(type(s) is int and s >= 0 for s in seeds) and len(set(seeds)) == len(seeds):
        return seeds
    return [int(e["episode_index"]) for e in episodes]


def import_lerobot(src_dir, out_dir, task: str | None = None, image_key: str = IMAGE_KEY,
                   progress: bool = True) -> dict:
    """Write the LeRobot v2.x dataset at ``src_dir`` as one of ours in the new folder ``out_dir``.

    ``task`` names the dataset (what ``embodied train ... task=NAME`` must say); default: the
    dataset's ``robot_type``, else the folder name. ``image_key`` is the camera to take. Returns a
    summary (episodes, steps, what was filled in).
    """
    src = Path(src_dir)
    info = _read_info(src)
    check_new_folder(Path(out_dir), "--out")
    size = _image_shape(_feature(info, image_key, src, "pass the camera's key with --image-key"), image_key, src)
    video = info["features"][image_key]["dtype"] == "video"
    state_dim = _vector_feature(info, "observation.state", src, "embodied needs the robot's proprioception")
    action_dim = _vector_feature(info, "action", src, "embodied needs the actions")
    optional = [k for k in ("next.reward", "next.done", "next.success") if k in info["features"]]
    if task is None:
        robot = info.get("robot_type")
        task = robot if isinstance(robot, str) and TASK_NAME.match(robot) and robot != "unknown" else src.resolve().name
    if not TASK_NAME.match(task or ""):
        raise UserError(f"--task {task!r} is not a usable name; pass letters, digits and _ . - / only (e.g. my_robot)")
    fps = float(info["fps"])
    episodes = _read_episodes(src)
    data_path = info.get("data_path") or DATA_PATH
    video_path = info.get("video_path") or VIDEO_PATH
    chunks = int(info.get("chunks_size") or CHUNKS_SIZE)

    def file_of(template: str, ep: int) -> Path:
        return src / template.format(episode_chunk=ep // chunks, episode_index=ep, video_key=image_key)

    # pass 1: the numeric columns (small), so that actions outside [-1, 1] are scaled by the whole dataset's range
    wanted = ["observation.state", "action", *optional, *(["timestamp"] if video else [])]
    numeric = []
    for e in episodes:
        ep = int(e["episode_index"])
        file = file_of(data_path, ep)
        if not file.is_file():
            raise _bad(file, f"data file of episode {ep} missing; restore it from the original dataset")
        try:
            names = pq.read_schema(file).names
            missing = [c for c in wanted + ([] if video else [image_key]) if c not in names]
            if missing:
                raise _bad(file, f"no {missing[0]!r} column, which meta/info.json lists; "
                                 "restore the file from the original dataset")
            table = pq.read_table(file, columns=wanted + (["frame_index"] if "frame_index" in names else []))
        except (pa.ArrowException, OSError) as err:
            raise _bad(file, f"not a readable LeRobot episode ({str(err).splitlines()[0]}); "
                             "restore it from the original dataset") from None
        order = None
        if "frame_index" in table.column_names:  # rows in frame order, whatever order they were written in
            order = pa.array(np.argsort(np.asarray(table.column("frame_index").to_pylist()), kind="stable"))
            table = table.take(order)
        numeric.append((ep, file, table, order))
    actions = [_column(t, "action", (action_dim,), f) for _, f, t, _ in numeric]
    every = np.concatenate(actions)
    if not len(every):
        raise _bad(src, "its episodes hold no frames; nothing to import")
    low, high = every.min(0), every.max(0)
    normalize = bool(np.abs(every).max() > 1.0)
    spec = {"task": task, "image_size": [size[0], size[1], 3], "action_dim": action_dim, "proprio_dim": state_dim,
            "objects": [], "fps": int(fps) if fps.is_integer() else fps,
            "source": {"format": f"lerobot {info.get('codebase_version')}", "robot_type": info.get("robot_type"),
                       "image_key": image_key}}
    if normalize:
        spec["action_normalization"] = {"low": low.tolist(), "high": high.tolist(),
                                        "rule": "stored = 2 * (raw - low) / (high - low) - 1 per dimension"}
    seeds = _seeds(episodes)
    skipped, steps = [], 0
    with staging_folder(Path(out_dir), "--out") as tmp:
        for (ep, file, table, order), action, seed, row in episode_bar(list(zip(numeric, actions, seeds, episodes)),
                                                                      progress, f"import {task}"):
            n = table.num_rows
            if n < 2:
                skipped.append(ep)  # one frame holds no step
                continue
            if video:
                frames = _decode_video(file_of(video_path, ep), _column(table, "timestamp", (), file), fps, size)
            else:
                images = pq.read_table(file, columns=[image_key])
                images = images.take(order) if order is not None else images
                frames = np.stack([_decode_image(d, file, image_key, r, size)
                                   for r, d in enumerate(images.column(image_key).to_pylist())])
            if normalize:
                span = np.where(high > low, high - low, 1.0)
                action = np.where(high > low, 2.0 * (action - low) / span - 1.0, 0.0)
            T = n - 1
            reward = _column(table, "next.reward", (), file)[:T] if "next.reward" in optional else np.zeros(T)
            done = _column(table, "next.done", (), file)[:T] if "next.done" in optional else np.zeros(T)
            success = (bool(_column(table, "next.success", (), file).any()) if "next.success" in optional
                       else row.get("embodied_success") is True)
            arrays = {"observation.image": np.ascontiguousarray(frames, np.uint8),
                      "observation.state": _column(table, "observation.state", (state_dim,), file).astype(np.float32),
                      "action": np.clip(action[:T], -1.0, 1.0).astype(np.float32),
                      "reward": reward.astype(np.float32), "terminated": (done != 0).astype(np.uint8),
                      "sim_state": np.zeros((n, 0), np.float64)}
            check_episode_values(file, arrays)
            write_episode(episode_path(tmp, seed), arrays,
                          {"task": task, "seed": seed, "policy": "lerobot", "length": T, "success": success})
            steps += T
        if len(skipped) == len(episodes):
            raise _bad(src, "every episode has fewer than 2 frames, so there is no step to learn from")
        atomic_write_json(tmp / "manifest.json", build_manifest(tmp, spec))
    return {"out": str(out_dir), "task": task, "episodes": len(episodes) - len(skipped), "steps": steps,
            "skipped_single_frame": skipped, "image_key": image_key, "images": "video" if video else "parquet",
            "rewards": "next.reward" if "next.reward" in optional else "none in the dataset: set to 0",
            "actions_normalized": normalize}
