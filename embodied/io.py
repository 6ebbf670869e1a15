"""Files every command writes: atomic bytes and JSON, and videos for people.

A reader never sees a file half written: each is written to a temporary name
in the same folder, fsynced and moved into place with ``os.replace``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so a reader never sees it half written (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` as indented JSON (numpy scalars and arrays become numbers and lists)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(x):
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_video(path: str | os.PathLike, frames, fps: float = 20, scale: int = 1) -> Path | None:
    """Frames (T, H, W, 3) uint8 as an mp4 (imageio-ffmpeg), or a looping GIF when ffmpeg is missing.

    ``path``'s suffix is replaced by the format written (``.gif`` asks for a
    GIF directly); frames are upscaled ``scale`` x and padded to a multiple of
    16 pixels for the codec. Written atomically; returns the path, or None for
    no frames.
    """
    import imageio.v2 as imageio

    frames = [np.asarray(f, np.uint8) for f in frames]
    if not frames:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if scale > 1:
        frames = [f.repeat(scale, axis=0).repeat(scale, axis=1) for f in frames]
    pad_h, pad_w = (-frames[0].shape[0]) % 16, (-frames[0].shape[1]) % 16
    if pad_h or pad_w:
        frames = [np.pad(f, ((0, pad_h), (0, pad_w), (0, 0))) for f in frames]
    formats = [(".mp4", {"fps": fps, "macro_block_size": 16, "ffmpeg_log_level": "error"}),
               (".gif", {"duration": 1000 / fps, "loop": 0})]
    if path.suffix == ".gif":
        formats = formats[1:]
    for suffix, kwargs in formats:
        out = path.with_suffix(suffix)
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{suffix}")
        try:
            imageio.mimwrite(tmp, frames, **kwargs)
        except Exception:  # noqa: BLE001  (no ffmpeg backend: fall back to GIF)
            tmp.unlink(missing_ok=True)
            continue
        os.replace(tmp, out)
        return out
    raise RuntimeError(f"could not write a video to {path.with_suffix('.mp4')} or .gif: is imageio installed?")
