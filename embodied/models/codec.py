"""Shared pieces of the learned world models: conv frame encoder/decoder, proprio encoder, losses.

Both architectures (``recurrent`` and ``transformer``) use the same codec so
they can be compared on equal terms:

* :class:`ConvEncoder`: uint8-range frames (N,3,H,W) -> a flat embedding. Stride-2
  4x4 convolutions down to 4x4, each followed by GroupNorm and SiLU (GroupNorm
  is what stops the early collapse to the mean image on small batches).
* :class:`ConvDecoder`: the mirror image, a flat feature -> (N,3,H,W) in [0,1].
* :class:`ProprioEncoder`: an MLP over the normalised robot joint readings.
* :class:`RunningNorm`: per-feature mean/std estimated from the first training
  batches, then frozen, stored as buffers (so it travels in the state dict).
* :func:`foreground_weighted_mse`: pixel MSE where pixels away from the floor
  colour weigh ``fg_weight`` times more; small moving parts (a 5-pixel pusher)
  otherwise cost almost nothing and the model learns to paint the floor.

What the models do with these pieces is in :mod:`embodied.models.learned`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

FLOOR_RGB = (38, 38, 38)


def _groups(channels: int, max_groups: int = 8) -> int:
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [0, 1]."""
    return frames.movedim(-1, -3).float() / 255.0


def float_to_frames(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float in [0, 1] -> (..., H, W, 3) uint8."""
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).movedim(-3, -1)


def _stages(image_size: int) -> int:
    n = int(round(math.log2(image_size / 4)))
    if 4 * 2 ** n != image_size:
        raise ValueError(f"image size {image_size} is not 4 * a power of two (e.g. 64)")
    return n


def coord_grid(size: int, device=None) -> torch.Tensor:
    """(2, size, size) x (column) and y (row) coordinates of cell centres in [-1, 1]."""
    c = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size * 2 - 1
    return torch.stack([c.view(1, -1).expand(size, size), c.view(-1, 1).expand(size, size)])


class ConvEncoder(nn.Module):
    """Frames in [0,1] (N,3,S,S) -> (N, embed_dim).

    Stride-2 convs down to 4x4, flattened; plus ``keypoints`` spatial-softmax
    keypoints read at 16x16 (expected x, y of each of those feature maps), which
    hand the positions of small flat-coloured objects to the latent directly.
    """

    def __init__(self, image_size: int = 64, channels: int = 32, embed_dim: int = 256, keypoints: int = 16):
        super().__init__()
        stages = []
        cin = 3
        for i in range(_stages(image_size)):
            cout = channels * 2 ** i
            stages.append(nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.GroupNorm(_groups(cout), cout), nn.SiLU()))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.keypoints = keypoints
        self.kp_stage = max(0, len(stages) - 3)  # the 16x16 stage at 64x64
        if keypoints:
            kc = channels * 2 ** self.kp_stage
            self.kp = nn.Conv2d(kc, keypoints, 1)
            self.register_buffer("kp_grid", coord_grid(image_size // 2 ** (self.kp_stage + 1)).flatten(1),
                                 persistent=False)
        self.out = nn.Linear(cin * 16 + 2 * keypoints, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, kps = x - 0.5, []
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if self.keypoints and i == self.kp_stage:
                att = torch.softmax(self.kp(h).flatten(2), -1)  # (N,K,HW)
                kps = [torch.einsum("nkp,cp->nkc", att, self.kp_grid).flatten(1)]
        return self.norm(self.out(torch.cat([h.flatten(1), *kps], 1)))


class ConvDecoder(nn.Module):
    """(N, in_dim) -> frames (N,3,S,S), roughly in [0,1] (clamp before display).

    ``broadcast=0``: the mirror of the encoder (linear to 4x4, transposed convs).
    ``broadcast=16`` (or 8): a spatial-broadcast start: the feature is tiled
    over a 16x16 grid with x/y coordinate channels and mixed by 1x1 and 3x3
    convs before the transposed convs; drawing "a blob at (x, y)" is then easy
    to learn, which is what the small moving bodies need.
    """

    def __init__(self, in_dim: int, image_size: int = 64, channels: int = 32, broadcast: int = 0,
                 out_channels: int = 3):
        super().__init__()
        n = _stages(image_size)
        self.broadcast = broadcast
        if broadcast:
            ups = int(round(math.log2(image_size / broadcast)))
            c0 = channels * 2 ** (ups - 1)
            self.inp = nn.Linear(in_dim, 2 * c0)
            self.register_buffer("grid", coord_grid(broadcast), persistent=False)
            self.mix = nn.Sequential(nn.Conv2d(2 * c0 + 2, 2 * c0, 1), nn.GroupNorm(_groups(2 * c0), 2 * c0), nn.SiLU(),
                                     nn.Conv2d(2 * c0, c0, 3, 1, 1))
            stages_up, cin = ups, c0
        else:
            self.c0 = channels * 2 ** (n - 1)
            self.inp = nn.Linear(in_dim, self.c0 * 16)
            stages_up, cin = n, self.c0
        layers = []
        for i in reversed(range(stages_up - 1)):
            cout = channels * 2 ** i
            layers += [nn.GroupNorm(_groups(cin), cin), nn.SiLU(), nn.ConvTranspose2d(cin, cout, 4, 2, 1)]
            cin = cout
        layers += [nn.GroupNorm(_groups(cin), cin), nn.SiLU(), nn.ConvTranspose2d(cin, out_channels, 4, 2, 1)]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        if self.broadcast:
            g = self.broadcast
            h = self.inp(feat)[:, :, None, None].expand(-1, -1, g, g)
            x = self.mix(torch.cat([h, self.grid.expand(feat.shape[0], -1, -1, -1)], 1))
        else:
            x = self.inp(feat).view(feat.shape[0], self.c0, 4, 4)
        return self.deconvs(x) + 0.5


def mlp(inp: int, hidden: int, out: int, layers: int = 2) -> nn.Sequential:
    """Linear/LayerNorm/SiLU MLP with ``layers`` hidden layers."""
    mods, d = [], inp
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        d = hidden
    mods.append(nn.Linear(d, out))
    return nn.Sequential(*mods)


class ProprioEncoder(nn.Module):
    """Normalised proprio (N, P) -> (N, out_dim); a missing reading (mask 0) embeds as zeros."""

    def __init__(self, proprio_dim: int, out_dim: int = 64):
        super().__init__()
        self.net = mlp(proprio_dim, out_dim, out_dim, layers=1)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return self.net(p)


class RunningNorm(nn.Module):
    """Per-feature standardisation, statistics accumulated over the first ``freeze_after`` updates."""

    def __init__(self, dim: int, freeze_after: int = 500, eps: float = 1e-3):
        super().__init__()
        self.freeze_after, self.eps = freeze_after, eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        if int(self.count) >= self.freeze_after:
            return
        x = x.reshape(-1, x.shape[-1]).double()
        n = int(self.count)
        w = 1.0 / (n + 1)
        self.mean.mul_(1 - w).add_(w * x.mean(0).float())
        self.var.mul_(1 - w).add_(w * x.var(0, unbiased=False).float())
        self.count += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.var + self.eps).sqrt()

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.var + self.eps).sqrt() + self.mean


def foreground_mask(target: torch.Tensor, floor_rgb=FLOOR_RGB, thresh: float = 0.08) -> torch.Tensor:
    """(..., 1, H, W) float mask of pixels of ``target`` ((...,3,H,W) in [0,1]) away from the floor colour."""
    floor = torch.tensor(floor_rgb, dtype=target.dtype, device=target.device).view(3, 1, 1) / 255.0
    return ((target - floor).abs().amax(dim=-3, keepdim=True) > thresh).to(target.dtype)


def foreground_weighted_mse(pred: torch.Tensor, target: torch.Tensor, fg_weight: float = 10.0,
                            extra_mask: torch.Tensor | None = None, floor_rgb=FLOOR_RGB,
                            power: int = 2) -> torch.Tensor:
    """Mean squared (``power=2``) or absolute (``power=1``) error over (...,3,H,W), foreground weighted ``fg_weight`` x.

    Foreground is every pixel of ``target`` (or of ``extra_mask``, e.g. the
    previous real frame, so a body that moves away is also penalised where it
    was) that differs from the floor colour.
    """
    mask = foreground_mask(target, floor_rgb)
    if extra_mask is not None:
        mask = torch.maximum(mask, extra_mask)
    weight = 1.0 + (fg_weight - 1.0) * mask
    err = (pred - target).abs() if power == 1 else (pred - target) ** 2
    return (weight * err).mean()
