"""The run page's pictures: training curves from the TensorBoard scalars (matplotlib, Agg) and, from the
latest real | imagined video of `embodied train`, a GIF with a difference panel and a PNG strip at a few
horizons. :mod:`embodied.run_page` puts them on the page."""
from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np

from embodied.io import atomic_write_bytes, write_video
from embodied.report import _plt, triptych

CURVES_VERSION = 1   # bump when plot_training draws differently: cached plots are redrawn
VIDEO_SCALE = 2      # embodied.evaluate.side_by_side upscales each frame 2x and separates panels by 2 pixels
DIFF_NOISE = 16      # video-codec noise in |real - imagined| (measured: 99th percentile ~15 on identical frames)
STRIP_HORIZONS = (1, 2, 4, 8, 16, 32, 64, 128)
NOT_CURVES = {"loss", "lr", "frames_per_s", "grad_norm", "psnr_last"}  # train/* scalars that are not loss terms


def _save_png(plt, fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # margins are set by the caller: tight_layout costs more than the rest
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _ema(values: list[float], alpha: float) -> list[float]:
    out, acc = [], None
    for v in values:
        acc = v if acc is None or not math.isfinite(acc) else alpha * acc + (1 - alpha) * v
        out.append(acc)
    return out


def _log_if_wide(ax, values) -> None:
    v = [x for x in values if math.isfinite(x)]
    if v and min(v) > 0 and max(v) / min(v) > 20:
        ax.set_yscale("log")


def plot_training(scalars: dict, assets: Path) -> list[tuple[Path, str]]:
    """PNGs of the training curves; returns (path, caption) per plot."""
    plt = _plt()
    plots = []

    def figure(title, twin=False):
        fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=100)
        fig.subplots_adjust(left=0.14, right=0.83 if twin else 0.97, bottom=0.14, top=0.91)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        return fig, ax

    def marker(steps):  # few points: show each
        return "o" if len(steps) <= 30 else None

    if "train/loss" in scalars:
        steps, values = scalars["train/loss"]
        fig, ax = figure("training loss")
        ax.plot(steps, values, color="tab:blue", alpha=0.35 if len(steps) > 30 else 1, marker=marker(steps), ms=3,
                label="loss")
        if len(steps) > 30:
            ax.plot(steps, _ema(values, 0.9), color="tab:blue", lw=2, label="smoothed (EMA 0.9)")
        _log_if_wide(ax, values)
        ax.legend(fontsize=7)
        plots.append((_save_png(plt, fig, assets / "loss.png"), "training loss (train/loss)"))
    terms = {t.split("/", 1)[1]: sv for t, sv in scalars.items()
             if t.startswith("train/") and t.split("/", 1)[1] not in NOT_CURVES}
    if terms:
        fig, ax = figure("loss terms")
        colours = plt.get_cmap("tab10")
        for i, (name, (steps, values)) in enumerate(sorted(terms.items())):
            ys = _ema(values, 0.9) if len(steps) > 30 else values
            ax.plot(steps, ys, label=name, color=colours(i % 10), marker=marker(steps), ms=2)
        _log_if_wide(ax, [v for _, vs in terms.values() for v in vs])
        ax.legend(fontsize=7, ncol=2)
        plots.append((_save_png(plt, fig, assets / "loss_terms.png"),
                      "terms of the loss (train/*" + (", smoothed" if any(len(s) > 30 for s, _ in terms.values())
                                                      else "") + ")"))
    psnr = sorted((int(t.rsplit("_h", 1)[1]), t) for t in scalars
                  if re.fullmatch(r"heldout/psnr_h\d+", t) and t.replace("psnr", "copy_last_psnr") in scalars)
    if psnr:
        fig, ax = figure("held-out PSNR during training")
        colours = plt.get_cmap("viridis")
        for i, (h, tag) in enumerate(psnr):
            c = colours(i / max(1, len(psnr) - 1) * 0.85)
            for t, style, label in ((tag, {"lw": 2}, f"model h{h}"),
                                    (tag.replace("psnr", "copy_last_psnr"), {"ls": "--"}, f"copy-last h{h}")):
                steps, values = scalars[t]
                ax.plot(steps, values, color=c, marker=marker(steps), ms=3, label=label, **style)
        ax.set_ylabel("PSNR (dB, higher is better)", fontsize=8)
        ax.legend(fontsize=7, ncol=2)
        plots.append((_save_png(plt, fig, assets / "heldout_psnr.png"),
                      "held-out PSNR at each horizon: model (solid) against copy-last (dashed)"))
    if "train/grad_norm" in scalars or "train/lr" in scalars:
        fig, ax = figure("optimisation", twin="train/lr" in scalars)
        handles = []
        if "train/grad_norm" in scalars:
            steps, values = scalars["train/grad_norm"]
            handles += ax.plot(steps, values, color="tab:red", alpha=0.8, marker=marker(steps), ms=2,
                               label="gradient norm")
            _log_if_wide(ax, values)
            ax.set_ylabel("gradient norm (before clipping)", fontsize=8)
        if "train/lr" in scalars:
            steps, values = scalars["train/lr"]
            ax2 = ax.twinx()
            handles += ax2.plot(steps, values, color="tab:gray", ls="--", label="learning rate")
            ax2.set_ylabel("learning rate", fontsize=8)
        ax.legend(handles=handles, fontsize=7)
        plots.append((_save_png(plt, fig, assets / "optimisation.png"), "gradient norm and learning-rate schedule"))
    return plots


def split_video(frames: np.ndarray, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """(real, imagined), each (windows, T, h, w, 3), from a `embodied train` real | imagined video.

    The layout is :func:`embodied.evaluate.side_by_side`'s: one row per window, real then imagined,
    2x upscaled, 2-pixel gaps, padded to a multiple of 16. None when the frames do not fit it.
    """
    s, (h, w) = VIDEO_SCALE, image_hw
    _, height, width = frames.shape[:3]
    pitch = s * (h + 2)
    n = (height + 2 * s) // pitch
    def pad16(x):
        return x + (-x) % 16

    if n < 1 or pad16(n * pitch - 2 * s) != height or pad16(s * (2 * w + 2)) != width:
        return None
    real = np.stack([frames[:, i * pitch:i * pitch + s * h, :s * w] for i in range(n)])
    pred = np.stack([frames[:, i * pitch:i * pitch + s * h, s * (w + 2):s * (2 * w + 2)] for i in range(n)])
    return real, pred


def _panels(real: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """report.triptych of one window with the difference panel cleaned of codec noise and the imagined border."""
    frames = triptych(real, pred, scale=1).copy()
    w = real.shape[2]
    diff = np.abs(real.astype(np.int16) - pred.astype(np.int16)).max(axis=-1)
    diff = np.clip((diff - DIFF_NOISE) * 2, 0, 255).astype(np.uint8)
    b = VIDEO_SCALE  # the imagined frames' red border is not an error
    diff[:, :b], diff[:, -b:], diff[:, :, :b], diff[:, :, -b:] = 0, 0, 0, 0
    frames[:, :, 2 * w + 4:] = diff[..., None]
    return frames


def video_pictures(video: Path, image_hw, context: int, assets: Path) -> tuple[Path, Path | None] | None:
    """GIF of every window's real | imagined | difference, and a PNG strip of the first window; None
    when the video cannot be read or has another layout. Skipped when already newer than the video."""
    gif, strip = assets / f"video_{video.stem}.gif", assets / f"strip_{video.stem}.png"
    mtime = video.stat().st_mtime
    if gif.is_file() and strip.is_file() and min(gif.stat().st_mtime, strip.stat().st_mtime) >= mtime:
        return gif, strip
    import imageio.v3 as iio

    try:
        frames = np.asarray(iio.imread(video, index=None))
    except (OSError, RuntimeError, ValueError):  # no codec, a truncated file: the page links the video instead
        return None
    if frames.ndim != 4 or frames.shape[-1] < 3:
        return None
    split = split_video(frames[..., :3], image_hw)
    if split is None:
        return None
    real, pred = split
    rows = [_panels(r, p) for r, p in zip(real, pred)]
    gap = np.full((rows[0].shape[0], 4, rows[0].shape[2], 3), 255, np.uint8)
    stacked = np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=1)
    pad_h, pad_w = (-stacked.shape[1]) % 16, (-stacked.shape[2]) % 16  # white, not write_video's black padding
    stacked = np.pad(stacked, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=255)
    write_video(gif, stacked, fps=6)
    _strip(rows[0], real.shape[3], context, strip)
    for old in (*assets.glob("video_*.gif"), *assets.glob("strip_*.png")):  # pictures of earlier videos
        if old not in (gif, strip):
            old.unlink(missing_ok=True)
    return gif, strip


def _strip(panels: np.ndarray, w: int, context: int, path: Path) -> Path:
    """PNG: rows real / imagined / difference, columns the last context frame and a few horizons."""
    plt = _plt()
    t_max = panels.shape[0] - context
    cols = [(context - 1, "last context frame")] + [(context - 1 + h, f"{h} step{'s' if h > 1 else ''} ahead")
                                                     for h in STRIP_HORIZONS if h <= t_max]
    if t_max > 0 and context - 1 + t_max not in [c for c, _ in cols]:
        cols.append((context - 1 + t_max, f"{t_max} steps ahead"))
    names = ("real", "imagined", "difference")
    fig, axes = plt.subplots(3, len(cols), figsize=(1.45 * len(cols) + 0.4, 4.6), dpi=100, squeeze=False)
    for j, (t, label) in enumerate(cols):
        for i, name in enumerate(names):
            ax = axes[i, j]
            ax.imshow(panels[t, :, i * (w + 2):i * (w + 2) + w], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=8)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.subplots_adjust(left=0.35 / fig.get_figwidth(), right=0.99, bottom=0.01, top=0.94, wspace=0.05, hspace=0.05)
    return _save_png(plt, fig, path)
