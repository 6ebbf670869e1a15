"""Held-out open-loop evaluation of a world model, next to the copy-last-frame baseline.

From ``model.context`` real frames (with their proprioception and the actions
between them) the model predicts the next frames open loop from the real
future actions. At each horizon h (1, 8, 32 steps by default; horizons longer
than the held-out episodes allow are skipped) the h-th predicted frame is
scored against the real one:

* PSNR and SSIM (scikit-image; PSNR of identical frames, +inf, is capped at
  ``PSNR_CAP`` dB so averages stay finite),
* body error: distance in pixels between the actuated body's colour centroid
  in the predicted and the real frame (``embodied.vision``); a body missing
  from the prediction but visible in the truth costs the image diagonal.

The copy-last-frame baseline predicts the last context frame forever; a model
that does not beat it has learned nothing about the dynamics. Windows are
drawn deterministically (fixed seed), so evaluations are comparable across
steps and runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from embodied import io
from embodied.envs.context import batch_windows, pad_window
from embodied.vision import colour_centroid, pixel_error

PSNR_CAP = 100.0
HORIZONS = (1, 8, 32)


def heldout_windows(episodes, context: int, horizons=HORIZONS, n_windows: int = 32,
                    seed: int = 0) -> tuple[list[tuple[int, int]], list[int]]:
    """Deterministic (episode index, start frame) windows and the horizons they allow.

    A window holds ``context`` real frames followed by max(horizons kept) real
    future frames; a horizon is kept when at least one episode is long enough.
    """
    longest = max((len(e) + 1 for e in episodes), default=0)
    kept = sorted(h for h in set(horizons) if context + h <= longest)
    if not kept:
        return [], []
    need = context + kept[-1]
    eligible = [i for i, e in enumerate(episodes) if len(e) + 1 >= need]
    rng = np.random.default_rng(seed)
    windows = []
    for k in range(n_windows):
        i = eligible[k % len(eligible)]
        windows.append((i, int(rng.integers(0, len(episodes[i]) + 1 - need + 1))))
    return windows, kept


def _model_device(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def open_loop(model, episodes, windows, context: int, horizon: int, chunk: int = 16):
    """Real context (N,C,...), real future (N,K,...) and predicted future (N,K,H,W,3) uint8 numpy arrays.

    The model is given the episode's frames up to the window's last context frame, as many as it makes use
    of (``model.max_context``: a model with memory sees what it would have seen in a real loop).
    """
    device = _model_device(model)
    memory = max(context, int(model.max_context))
    ctx_all, real_all, pred_all = [], [], []
    for s in range(0, len(windows), chunk):
        rows = windows[s:s + chunk]
        frames, actions, proprio = batch_windows([
            pad_window(episodes[i].frames.numpy(), episodes[i].actions.numpy(), episodes[i].proprio.numpy(),
                       t + context - 1, memory, episodes[i].actions.shape[-1]) for i, t in rows])
        future_actions = torch.stack([episodes[i].actions[t + context - 1:t + context - 1 + horizon] for i, t in rows])
        real = torch.stack([episodes[i].frames[t + context:t + context + horizon] for i, t in rows])
        pred = model.predict(frames.to(device), proprio.to(device), actions.to(device), future_actions.to(device))
        pred = torch.as_tensor(pred).detach().cpu()
        if pred.dtype != torch.uint8:
            pred = pred.float().clamp(0, 255).round().to(torch.uint8)
        if tuple(pred.shape) != tuple(real.shape):
            raise ValueError(f"{type(model).__name__}.predict returned shape {tuple(pred.shape)}, "
                             f"expected {tuple(real.shape)} (B, K, H, W, 3)")
        ctx_all.append(frames[:, -context:].numpy())
        real_all.append(real.numpy())
        pred_all.append(pred.numpy())
    return np.concatenate(ctx_all), np.concatenate(real_all), np.concatenate(pred_all)


def _psnr(real: np.ndarray, pred: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        vals = [min(peak_signal_noise_ratio(r, p, data_range=255), PSNR_CAP) for r, p in zip(real, pred)]
    return float(np.mean(vals))


def _ssim(real: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([structural_similarity(r, p, channel_axis=-1, data_range=255) for r, p in zip(real, pred)]))


def _body_err(real: np.ndarray, pred: np.ndarray, bodies: list[dict]) -> float:
    errs = []
    for body in bodies:
        true_xy, _ = colour_centroid(real, body["rgb"])
        pred_xy, _ = colour_centroid(pred, body["rgb"])
        errs.append(pixel_error(pred_xy, true_xy, image_size=real.shape[-3:-1]))
    errs = np.concatenate([e.reshape(-1) for e in errs])
    return float(np.nanmean(errs)) if np.isfinite(errs).any() else float("nan")


def evaluate(model, episodes, objects=(), horizons=HORIZONS, n_windows: int = 32, seed: int = 0,
             video_path: Path | None = None, videos: int = 4, prefix: str = "heldout") -> dict:
    """Flat dict of ``{prefix}.psnr_h1``, ``.ssim_h1``, ``.body_err_h1``, ``.copy_last_*`` ... per kept horizon.

    ``objects`` is the dataset manifest's ``objects`` list; the ones flagged
    ``actuated`` are scored by colour. With ``video_path``, the first
    ``videos`` windows are written there as a real | imagined video.
    """
    context = int(model.context)
    windows, kept = heldout_windows(episodes, context, horizons, n_windows, seed)
    if not windows:
        return {f"{prefix}.windows": 0}
    was_training = model.training
    model.eval()
    try:
        ctx, real, pred = open_loop(model, episodes, windows, context, kept[-1])
    finally:
        model.train(was_training)
    copy = np.repeat(ctx[:, -1:], real.shape[1], axis=1)
    bodies = [o for o in objects if o.get("actuated")]
    out: dict = {f"{prefix}.windows": len(windows), f"{prefix}.max_horizon": kept[-1]}
    for h in kept:
        r, p, c = real[:, h - 1], pred[:, h - 1], copy[:, h - 1]
        out[f"{prefix}.psnr_h{h}"] = _psnr(r, p)
        out[f"{prefix}.copy_last_psnr_h{h}"] = _psnr(r, c)
        out[f"{prefix}.ssim_h{h}"] = _ssim(r, p)
        out[f"{prefix}.copy_last_ssim_h{h}"] = _ssim(r, c)
        if bodies:
            out[f"{prefix}.body_err_h{h}"] = _body_err(r, p, bodies)
            out[f"{prefix}.copy_last_body_err_h{h}"] = _body_err(r, c, bodies)
    if video_path is not None and videos > 0:
        write_video(video_path, ctx[:videos], real[:videos], pred[:videos])
    return out


def side_by_side(ctx: np.ndarray, real: np.ndarray, pred: np.ndarray, scale: int = 2) -> np.ndarray:
    """(T, H', W', 3) uint8 frames: each window a row of real | imagined; imagined frames get a red border."""
    n, c = ctx.shape[:2]
    real_seq = np.concatenate([ctx, real], axis=1)                       # (N, T, H, W, 3)
    pred_seq = np.concatenate([ctx, pred], axis=1).copy()
    pred_seq[:, c:, [0, -1], :] = (255, 0, 0)
    pred_seq[:, c:, :, [0, -1]] = (255, 0, 0)
    sep = np.full(real_seq.shape[:3] + (2, 3), 255, np.uint8)
    rows = np.concatenate([real_seq, sep, pred_seq], axis=3)               # (N, T, H, 2W+2, 3)
    gap = np.full(rows.shape[:2] + (2,) + rows.shape[3:], 255, np.uint8)
    video = np.concatenate([np.concatenate([r, g], axis=1) for r, g in zip(rows, gap)], axis=1)[:, :-2]
    video = video.repeat(scale, axis=1).repeat(scale, axis=2)
    pad_h, pad_w = (-video.shape[1]) % 16, (-video.shape[2]) % 16          # codec-friendly size
    return np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))


def write_video(path: Path, ctx: np.ndarray, real: np.ndarray, pred: np.ndarray, fps: int = 8) -> Path:
    """Atomically write a real | imagined video (mp4, or gif by the file extension)."""
    return io.write_video(path, side_by_side(ctx, real, pred), fps=fps)
