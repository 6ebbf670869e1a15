"""Reading object positions out of frames by colour.

Every object a probe scores has its own flat colour (see ``ObjectSpec.rgb``), so
its position can be read from a real frame or a predicted, possibly blurry one
by finding the pixels close to that colour. All functions work on numpy arrays
of shape (..., H, W, 3) with values on the 0..255 scale (uint8, or float from a
decoder) and are vectorised over the leading dimensions.

Pixel coordinates are (col, row) floats with pixel centres at integers, the
convention of ``MujocoTaskEnv.world_to_pixel``.
"""
from __future__ import annotations

import numpy as np


def _frames(frames) -> np.ndarray:
    if hasattr(frames, "detach"):  # a torch tensor
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"frames have shape {frames.shape}, expected (..., H, W, 3) RGB on the 0..255 scale")
    return frames


def colour_mask(frames, rgb, tol: float = 60) -> np.ndarray:
    """(..., H, W) boolean mask of the pixels whose RGB distance to ``rgb`` is below ``tol``."""
    frames = _frames(frames)
    target = np.asarray(rgb, dtype=np.float32).reshape(3)
    diff = frames.astype(np.float32) - target
    return np.einsum("...c,...c->...", diff, diff) < np.float32(tol) ** 2


def colour_centroid(frames, rgb, tol: float = 60, min_pixels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Centroid of the pixels of one colour.

    Returns ``(xy, present)``: xy of shape (..., 2) in (col, row) pixel
    coordinates, NaN where fewer than ``min_pixels`` pixels match, and the
    (...) boolean array ``present``.
    """
    mask = colour_mask(frames, rgb, tol)
    h, w = mask.shape[-2:]
    count = mask.sum(axis=(-2, -1))
    col_sum = (mask.sum(axis=-2) * np.arange(w)).sum(axis=-1)
    row_sum = (mask.sum(axis=-1) * np.arange(h)).sum(axis=-1)
    present = count >= max(int(min_pixels), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xy = np.stack([col_sum, row_sum], axis=-1) / count[..., None]
    xy = np.where(present[..., None], xy, np.nan)
    return xy.astype(np.float64), present


def pixel_error(pred_xy, true_xy, penalty: float | None = None, image_size=(64, 64)) -> np.ndarray:
    """Euclidean distance in pixels between predicted and true (col, row) positions, (...).

    A missing prediction (NaN) where the truth is present costs ``penalty``
    (default: the image diagonal, the largest possible error); where the truth
    itself is missing the error is NaN (nothing to score), so aggregate with
    ``np.nanmean``.
    """
    pred = np.asarray(pred_xy, dtype=np.float64)
    true = np.asarray(true_xy, dtype=np.float64)
    if pred.shape[-1:] != (2,) or true.shape[-1:] != (2,):
        raise ValueError(f"positions must have a last axis of 2 (col, row): got {pred.shape} and {true.shape}")
    if penalty is None:
        h, w = image_size
        penalty = float(np.hypot(h, w))
    err = np.linalg.norm(pred - true, axis=-1)
    pred_missing = np.isnan(pred).any(axis=-1)
    true_missing = np.isnan(true).any(axis=-1)
    err = np.where(pred_missing, penalty, err)
    return np.where(true_missing, np.nan, err)
