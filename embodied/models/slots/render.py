"""Rendering: each slot's sprite in its palette colour, composed by depth over the background, under a front layer."""
from __future__ import annotations

import torch
from torch.nn import functional as F

LAYER_GAIN = 8.0          # the front layer's and depth order's logits are this times their parameters, so
                          # Adam (steps of ~lr per parameter) can open a front layer within a training run


class SpriteRendering:
    """Slot positions to frames: the pixels of a slot are the model's belief about its object."""

    def _render(self, pos: torch.Tensor, learn_looks: bool = True, known: torch.Tensor | None = None) -> torch.Tensor:
        """Positions (N,K,2) -> frames (N,3,H,W) in [0,1]; ``known`` (N,K) leaves out slots not yet seen.

        Each slot is drawn in its palette colour (the colour perception keys on). ``learn_looks=False``
        renders with the sprites, depth order and front layer detached, so a
        loss on the frame trains only the positions: predicted frames, whose positions are uncertain, would
        otherwise teach faint, smeared sprites that hedge between places.
        """
        n, k = pos.shape[:2]
        s = self.image_size
        half = self.cfg.sprite_px / s                                            # sprite half width, image units
        grid = (self.grid[None] - pos.reshape(n * k, 1, 1, 2)) / half            # (N*K,1,HW,2)
        looks = lambda t: t if learn_looks else t.detach()  # noqa: E731
        alpha = torch.sigmoid(looks(self.sprites)).repeat(n, 1, 1, 1)           # (N*K,1,S',S')
        a = F.grid_sample(alpha, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        a = a.view(n, k, s, s) * self.active[None, :, None, None]
        if known is not None:
            a = a * known[:, :, None, None].to(a.dtype)
        none = torch.prod(1 - a, dim=1, keepdim=True)                            # (N,1,H,W)
        depth = LAYER_GAIN * looks(self.depth)
        w = a * torch.exp(depth - depth.max())[None, :, None, None]
        w = w / (w.sum(1, keepdim=True) + 1e-6)
        objects = torch.einsum("nkhw,kc->nchw", w, self.palette)
        img = none * self.background[None] + (1 - none) * objects
        front = torch.sigmoid(LAYER_GAIN * looks(self.front))[None]
        return front * self.background[None] + (1 - front) * img

