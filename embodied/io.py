"""Files every command writes: atomic bytes and JSON, videos for people, and the writability check.

A reader never sees a file half written: each is written to a temporary name
in the same folder, fsynced and moved into place with ``os.replace``. An
OSError (full disk, read-only folder) names the file that was being written.
Commands call :func:`check_writable` on their output folders before any work,
so a bad ``--out`` costs nothing.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from embodied.errors import UserError

# a video write failing with one of these is a disk problem, not a missing codec: no GIF fallback
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def os_error_message(err: OSError) -> str:
    """One line for an OSError: the file, the reason and what to do (the CLI prints it; exit 2)."""
    where = f"{err.filename}: " if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some space or choose a folder on another disk"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "choose a folder you can write, or fix its permissions"
    else:
        advice = "check the path"
    return f"{where}{err.strerror or err}; {advice}, then re-run (files already written are kept)"


def check_writable(path: str | os.PathLike, name: str = "--out") -> Path:
    """``path`` if it is (or can become) a writable folder; else a one-line UserError naming ``name``.

    Probes the folder, or its nearest existing parent when it does not exist
    yet, by writing, fsyncing and removing a small file: a file in the way, a
    read-only folder or file system, missing permissions and a full disk are
    all caught before the work starts. Creates nothing.
    """
    path = Path(path)
    label = f"{name} {path}" if name.startswith("-") else f"{name}={path}"
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == path else f"is inside {probe}, which is a file"
        raise UserError(f"{label} {where}, not a folder; choose a folder path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".embodied-write-test-", dir=probe)
        try:
            os.write(fd, bytes(4096))
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as err:
        raise UserError(f"{label}: cannot write in {probe} ({err.strerror}); choose another folder, "
                        "or fix its permissions or free some space") from None
    return path


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so a reader never sees it half written (temp file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _unlink_quietly(tmp)
        raise type(err)(err.errno, err.strerror, str(path)) from None  # name the file, not its temporary
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # e.g. its folder is not there or not writable: nothing to clean up
        pass


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
        except (ImportError, RuntimeError, ValueError, OSError) as err:  # no ffmpeg backend: fall back to GIF
            _unlink_quietly(tmp)
            if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
                raise type(err)(err.errno, err.strerror, str(out)) from None
            continue
        os.replace(tmp, out)
        return out
    raise RuntimeError(f"could not write a video to {path.with_suffix('.mp4')} or .gif: is imageio installed?")
