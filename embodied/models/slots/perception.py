"""Perception: the palette found in the data, colour-keyed slot positions, proprio placement and the filter."""
from __future__ import annotations

import torch
from torch.nn import functional as F

PALETTE_MIN_SHARE = 0.01  # a colour must cover this share of the changing pixels to get a slot


def find_palette(frames: torch.Tensor, slots: int, min_share: float = PALETTE_MIN_SHARE):
    """The scene's background and the colours of the objects that move over it, from sample frames.

    ``frames`` (N,H,W,3) uint8 from many episodes. The background is the per-pixel
    median; pixels away from it are the objects. Their colours (quantised to 8
    levels of 256) that cover at least ``min_share`` of those pixels are the
    palette, the most common ``slots`` kept, sorted by RGB so the order does not
    depend on the sample. Returns (background (H,W,3) uint8, colours (k,3) float
    in [0,1], usual size in pixels (k,)).
    """
    frames = frames.reshape(-1, *frames.shape[-3:])
    background = frames.median(dim=0).values
    moving = (frames.int() - background.int()).abs().amax(-1) > 30             # (N,H,W)
    pixels = frames[moving]                                                      # (M,3)
    if pixels.shape[0] == 0:
        return background, torch.zeros(0, 3), torch.zeros(0)
    quant = torch.div(pixels, 32, rounding_mode="floor")
    keys, inverse, counts = torch.unique(quant, dim=0, return_inverse=True, return_counts=True)
    # the scenery's own colours (floor, occluders) are never objects, even where an object stood still
    scenery, scenery_counts = torch.unique(torch.div(background.reshape(-1, 3), 32, rounding_mode="floor"), dim=0,
                                           return_counts=True)
    scenery = scenery[scenery_counts >= 0.05 * background.shape[0] * background.shape[1]]
    is_scenery = (keys[:, None, :] == scenery[None]).all(-1).any(-1)
    order = torch.argsort(counts, descending=True)
    chosen = [int(i) for i in order if counts[i] >= min_share * pixels.shape[0] and not is_scenery[i]][:slots]
    colours = torch.stack([pixels[inverse == i].float().mean(0) / 255.0 for i in chosen]) if chosen \
        else torch.zeros(0, 3)
    colours = colours[sorted(range(len(chosen)), key=lambda j: tuple(colours[j].tolist()))]
    sizes = []
    for c in colours:
        near = ((frames.float() / 255.0 - c).abs().amax(-1) < 0.1) & moving     # (N,H,W)
        count = near.flatten(1).sum(1).float()
        sizes.append(count[count > 0].median() if (count > 0).any() else torch.tensor(1.0))
    return background, colours, torch.stack(sizes) if sizes else torch.zeros(0)


class ColourPerception:
    """Where each slot's object is seen in a frame, and the filter that mixes what is seen with what the
    dynamics (:class:`embodied.models.slots.dynamics.SlotDynamics`) predict."""

    def _fit_locate(self, frames: torch.Tensor, proprio: torch.Tensor) -> None:
        """Least-squares linear map from raw proprio to each slot's observed position on the frames that show
        it whole; each slot's running error starts at the map's mean error."""
        pos, weight = self.observe(frames.flatten(0, 1))
        x = torch.cat([proprio.flatten(0, 1).float().to(pos.device), torch.ones(pos.shape[0], 1, device=pos.device)], 1)
        self.locate_linear.weight.zero_()
        self.locate_linear.bias.zero_()
        for k in range(self.cfg.slots):
            rows = weight[:, k] >= 1
            if int(rows.sum()) <= x.shape[1]:
                continue
            coef = torch.linalg.lstsq(x[rows], pos[rows, k]).solution                    # (P+1, 2)
            self.locate_linear.weight[2 * k:2 * k + 2] = coef[:-1].T
            self.locate_linear.bias[2 * k:2 * k + 2] = coef[-1]
            self.locate_err[k] = (x[rows] @ coef - pos[rows, k]).norm(dim=-1).mean()


    @torch.no_grad()
    def observe(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (N,H,W,3) uint8 -> observed positions (N,K,2) and visibility weights (N,K) in [0,1].

        Each pixel's colour (8 levels per channel) is looked up in a table that names the palette colour
        within ``colour_tol`` of it, if any; a slot's position is the mean coordinate of its pixels. Only the
        pixels of some slot (a small share of a frame) are summed, by slot and frame.
        """
        n, h, w, _ = frames.shape
        k = self.palette.shape[0]
        q = (frames.to(self.lut.device) >> 5).movedim(-1, 0).contiguous()                # (3,N,H,W) in 0..7
        colour_bin = ((q[0] << 3) | q[1]).int().bitwise_left_shift_(3).bitwise_or_(q[2])  # (N,H,W) in 0..511
        label = self.lut.index_select(0, colour_bin.flatten()).view(n, h, w)            # slot, K: none
        frame, row, col = (label < k).nonzero(as_tuple=True)
        cell = frame * k + label[frame, row, col]                                        # (frame, slot) of a pixel
        mass = torch.bincount(cell, minlength=n * k).view(n, k).float()                  # (N,K) pixels per slot
        xy = self.grid[0].view(h, w, 2)
        coords = torch.stack([xy[0, col, 0], xy[row, 0, 1]], -1)                         # each pixel's (x, y)
        pos = coords.new_zeros(n * k, 2).index_add_(0, cell, coords).view(n, k, 2) / mass.clamp(min=1)[..., None]
        seen = mass / self.usual_size
        c = self.cfg
        weight = ((seen - c.see_from) / (c.see_full - c.see_from)).clamp(0, 1) * self.active
        return pos, weight

    def _with_located(self, pos_obs: torch.Tensor, weight: torch.Tensor, p: torch.Tensor, pmask: torch.Tensor,
                      raw: torch.Tensor):
        """Observations (B,T,K,2) and weights (B,T,K) with the slots the frames do not show placed from proprio
        (``raw`` (B,T,P) and normalised ``p``), where ``proprio_locate`` is on, proprio is given (``pmask``
        (B,1,1)) and the slot's running error of it is under ``locate_trust``."""
        if not self.cfg.proprio_locate:
            return pos_obs, weight
        b, t, k = weight.shape
        located = self._locate(p, raw).view(b, t, k, 2).detach()
        use = (weight == 0) & (self.locate_err < self.cfg.locate_trust)[None, None] & (pmask > 0) \
            & (self.active > 0)[None, None]
        return torch.where(use[..., None], located, pos_obs), torch.where(use, torch.ones_like(weight), weight)

    def _filter(self, pos_obs: torch.Tensor, weight: torch.Tensor, a: torch.Tensor):
        """Filtered (pos, vel) per frame, (B,T,K,2) each, and whether each slot has been seen yet (B,T,K).

        From observations (B,T,K,2) and weights (B,T,K). A slot is placed where it is first seen (its
        velocity starts at 0); before that it has no belief and stays at the origin, out of the losses.
        """
        known = weight[:, 0] > 0
        pos = pos_obs[:, 0] * known[..., None]
        vel = torch.zeros_like(pos)
        out_p, out_v, out_k = [pos], [vel], [known]
        for t in range(1, pos_obs.shape[1]):
            pos, vel, known = self._filter_step(pos, vel, known, a[:, t - 1], pos_obs[:, t], weight[:, t])
            out_p.append(pos)
            out_v.append(vel)
            out_k.append(known)
        return torch.stack(out_p, 1), torch.stack(out_v, 1), torch.stack(out_k, 1)

    def _filter_step(self, pos: torch.Tensor, vel: torch.Tensor, known: torch.Tensor, a: torch.Tensor,
                     pos_obs: torch.Tensor, weight: torch.Tensor):
        """One filter step: the belief (pos, vel (B,K,2), known (B,K) bool) after action ``a`` (B,A) led to the
        observation ``pos_obs`` (B,K,2) seen with ``weight`` (B,K)."""
        p_pred, v_pred = self._dynamics(pos, vel, a, known.float())
        g = weight[..., None]
        new_pos = g * pos_obs + (1 - g) * p_pred
        new_vel = g * (pos_obs - pos) + (1 - g) * v_pred
        first = ((weight > 0) & ~known)[..., None]
        was = known[..., None]
        pos_next = torch.where(first, pos_obs, torch.where(was, new_pos, torch.zeros_like(pos)))
        vel_next = torch.where(was & ~first, new_vel, torch.zeros_like(vel))
        return pos_next, vel_next, known | (weight > 0)

    def _raw_proprio(self, proprio: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
        if proprio is None or self.proprio_dim == 0:
            return torch.zeros(*shape, max(self.proprio_dim, 1), device=self.palette.device)
        return proprio.float().to(self.palette.device)

    def _locate(self, p: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """Slot positions (...,2K) from proprio: a linear map of the raw values (least squares, fit_data) plus
        a learned MLP of the normalised ones (what is not linear, as an arm's kinematics)."""
        return self.locate_linear(raw) + self.locate(p)

    def _locate_loss(self, pos_obs: torch.Tensor, weight: torch.Tensor, p: torch.Tensor,
                     pmask: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """Position error of the proprio -> slot head on the frames that show each slot whole (0 without the
        head); updates each slot's running error, which decides where the head is trusted."""
        if not self.cfg.proprio_locate:
            return pos_obs.new_zeros(())
        b, t, k = weight.shape
        seen = ((weight >= 1) & (pmask > 0)).float()[..., None]                 # (B,T,K,1)
        located = self._locate(p, raw).view(b, t, k, 2)
        err = F.smooth_l1_loss(located, pos_obs, reduction="none", beta=0.02) * seen
        if self.training:
            with torch.no_grad():
                dist = ((located - pos_obs).norm(dim=-1, keepdim=True) * seen).sum((0, 1, 3))
                count = seen.sum((0, 1, 3))
                has = count > 0
                self.locate_err[has] = 0.9 * self.locate_err[has] + 0.1 * (dist[has] / count[has])
        return err.sum() / (2 * seen.sum() + 1e-6)

