"""LeRobot datasets, format v2.1: the layout, its constants and the staging both directions write through.

Export is :mod:`embodied.lerobot_export`, import :mod:`embodied.lerobot_import`.

LeRobotDataset v2.1 (``codebase_version`` "v2.1", written by ``lerobot`` up to 0.3.x and still the most
widely shipped version on the Hugging Face Hub) keeps one parquet file per episode::

    meta/info.json                         fps, features {key: dtype, shape, names}, totals, path templates
    meta/episodes.jsonl                    {"episode_index", "tasks", "length"} per episode
    meta/episodes_stats.jsonl              per-episode min/max/mean/std/count of every feature
    meta/tasks.jsonl                       {"task_index", "task"}
    data/chunk-000/episode_000000.parquet  one row per frame: observation.state, action, next.reward,
                                           next.done, timestamp, frame_index, episode_index, index, task_index
                                           (and the camera, when images are stored in the parquet)
    videos/chunk-000/<camera key>/episode_000000.mp4   the camera, when it is stored as video

**Export** writes v2.1 with the camera as an ``image`` feature: PNG bytes in the parquet (what
``LeRobotDataset.create(..., use_videos=False)`` writes). PNG is lossless, so a round trip gives the
frames back bit for bit; LeRobot's videos (AV1, yuv420p) would not. **Import** reads v2.0 and v2.1,
with the camera stored either way (videos are decoded with the ffmpeg of imageio-ffmpeg).
v3.0 (many episodes per file) is refused with a one-line error.

Frames and steps. Our episode holds T+1 frames and the T actions between them; a LeRobot episode
holds one row per frame, each with the action taken at that frame. Export writes T+1 rows: row t < T
holds frame t, action t, ``next.reward`` = reward t and ``next.done`` = terminated t; the last row
holds the last frame, repeats the last action (as lerobot's own ``eval.py`` pads the final
observation), has ``next.reward`` 0 (no step is taken from it) and ``next.done`` true. Import takes an
episode of n rows as n frames and the n-1 transitions between them: the last row's action, reward and
done belong to a step whose outcome frame was not recorded, and are dropped. A round trip
ours -> LeRobot -> ours is therefore exact for frames, state, actions, rewards and terminated flags,
and keeps episode seeds and success flags (``embodied_seed`` and ``embodied_success`` in
``meta/episodes.jsonl``, extra keys that lerobot ignores).

What LeRobot data lacks: a real robot has no simulator state and no object tracks, so imported
episodes store a zero-width ``sim_state`` (T+1, 0) and no ``objects.<name>``; a missing
``next.reward`` becomes 0 and a missing ``next.done`` false. Our actions live in [-1, 1]: actions
outside it (joint targets in radians, say) are mapped per dimension from the dataset's [min, max] onto
[-1, 1], and the range is kept in the manifest (``action_normalization``) so that export maps them back.
Frames must be square, 4 x a power of two pixels (the image codecs halve them down to 4x4).

Both directions write into a staging folder beside the output and move it into place at the end, so
an interrupted run leaves no half-written dataset; parquet is read with pyarrow, no pickle anywhere.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from embodied.errors import UserError

CODEBASE_VERSION = "v2.1"
CHUNKS_SIZE = 1000  # episodes per chunk folder (lerobot's DEFAULT_CHUNK_SIZE)
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
IMAGE_KEY = "observation.image"
SIZES = tuple(4 * 2 ** n for n in range(2, 8))  # 16 .. 512, as `embodied collect --size`
INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                  "task_index": "int64"}  # lerobot's DEFAULT_FEATURES, each of shape [1]
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$")


def check_new_folder(out: Path, flag: str) -> None:
    """Refuse an output folder that holds anything: nothing is ever overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{flag} {out} already exists and is not empty; choose a new folder (nothing is overwritten)")


@contextmanager
def staging_folder(out: Path, flag: str):
    """A fresh folder beside ``out`` that becomes ``out`` (one rename) when the block succeeds."""
    out = Path(out)
    check_new_folder(out, flag)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, out)  # an empty `out` folder is replaced too (rename(2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def jsonl_bytes(rows: list[dict]) -> bytes:
    """One JSON object per line, as the meta/*.jsonl files hold them."""
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def episode_bar(items, progress: bool, desc: str):
    """A tqdm bar over episodes (off with ``progress=False``)."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="ep", disable=not progress)
