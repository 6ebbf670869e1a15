"""The slots world model: perception, dynamics and rendering put behind the world-model interface, and its loss."""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from embodied.errors import UserError
from embodied.models.base import Abilities, State, repeat_state
from embodied.models.codec import (coord_grid, float_to_frames, foreground_mask, foreground_weighted_mse,
                                   frames_to_float, mlp)
from embodied.models.learned import LearnedWorldModel
from embodied.models.slots.config import SlotsConfig
from embodied.models.slots.dynamics import VEL_SCALE, SlotDynamics
from embodied.models.slots.perception import ColourPerception, find_palette
from embodied.models.slots.render import LAYER_GAIN, SpriteRendering

RENDERED = 4              # frames per training window that are rendered for the pixel loss
SOLID_START = 0.25        # with model.solid, every pair starts 0.88 solid (sigmoid(GATE_GAIN x this)): objects
                          # that never overlap keep it, a marker passed over learns it down
SQUARENESS_START = 0.1    # with model.shapes, every outline starts nearly a disc (superellipse exponent 2.16)


class SlotsWorldModel(ColourPerception, SlotDynamics, SpriteRendering, LearnedWorldModel):
    """Object-factored world model: colour-keyed slots, interaction-network dynamics, sprite rendering."""

    arch = "slots"

    def __init__(self, cfg: SlotsConfig, spec: dict):
        super().__init__(cfg, spec)
        c, K, S, A = cfg, cfg.slots, self.image_size, self.action_dim
        if c.sprite_px > S:
            raise UserError(f"model.sprite_px = {c.sprite_px} is larger than the {S}-pixel frames")
        P = max(self.proprio_dim, 1)
        # found in the data by fit_data(); buffers so they travel in the checkpoint
        self.register_buffer("palette", torch.zeros(K, 3))
        self.register_buffer("usual_size", torch.ones(K))
        self.register_buffer("active", torch.zeros(K))
        self.register_buffer("lut", torch.full((512,), K, dtype=torch.int32))  # colour bin -> slot (K: none)
        self.register_buffer("background", torch.full((3, S, S), 0.15))
        self.register_buffer("grid", coord_grid(S).permute(1, 2, 0).reshape(1, S * S, 2), persistent=False)
        self.register_buffer("ident", torch.eye(K), persistent=False)
        # renderer
        self.front = nn.Parameter(torch.full((1, S, S), -4.0 / LAYER_GAIN))
        self.sprites = nn.Parameter(torch.zeros(K, 1, c.sprite, c.sprite))
        self.depth = nn.Parameter(torch.zeros(K))
        # dynamics: a slot's own motion (the action through its learned gate), then contact with the others
        self.action_gate = nn.Parameter(torch.zeros(K))
        self.reach = nn.Parameter(torch.full((K, K), 0.5))       # contact range of each ordered pair, image units
        if c.solid:  # per pair: how solid; per object: how heavy (who gives way in an overlap)
            self.solid_logit = nn.Parameter(torch.full((K, K), SOLID_START))
            self.heaviness = nn.Parameter(torch.zeros(K))
        if c.shapes:  # per object: how square its outline is (0: a disc)
            self.squareness = nn.Parameter(torch.full((K,), SQUARENESS_START))
        if c.walls:  # per object: the box it stays in (image units; fit_data starts it from the data)
            self.wall_lo = nn.Parameter(torch.full((K, 2), -1.0))
            self.wall_hi = nn.Parameter(torch.full((K, 2), 1.0))
        self.own = mlp(4 + K + A, c.hidden, 2, layers=2)
        self.edge = mlp(2 + 1 + 2 + 2 * K, c.hidden, c.hidden, layers=2)
        self.node = mlp(4 + K + c.hidden, c.hidden, 2, layers=2)
        with torch.no_grad():
            for net in (self.own, self.node):
                net[-1].weight.mul_(0.1)
                net[-1].bias.zero_()
        feat = self.feat_dim = 4 * K + K * (K - 1) // 2
        self.reward_head = mlp(feat, c.hidden, 1, layers=2)
        self.proprio_head = mlp(feat, c.hidden, P, layers=1)
        self.object_head = self._make_object_head(feat)
        if c.proprio_locate:  # proprio -> slot positions (linear part + MLP), and each slot's running error of it
            self.locate_linear = nn.Linear(P, 2 * K)
            self.locate = mlp(P, c.hidden, 2 * K, layers=1)
            with torch.no_grad():  # starts at the least-squares fit (fit_data)
                self.locate[-1].weight.zero_()
                self.locate[-1].bias.zero_()
            self.register_buffer("locate_err", torch.ones(K))

    # -- data-dependent start ------------------------------------------------------------------
    @torch.no_grad()
    def fit_data(self, batch: dict) -> None:
        """Find the palette, background and sprite sizes in a sample batch (before training)."""
        background, colours, sizes = find_palette(batch["frames"].cpu(), self.cfg.slots)
        if colours.shape[0] == 0:
            raise UserError("model.arch=slots found no objects moving over a static background in the data; "
                            "use arch=recurrent or arch=transformer for this dataset")
        n, dev = colours.shape[0], self.palette.device
        self.palette.zero_()
        self.palette[:n] = colours.to(dev)
        self.usual_size.fill_(1.0)
        self.usual_size[:n] = sizes.to(dev)
        self.active.zero_()
        self.active[:n] = 1.0
        self.background.copy_(background.to(dev).permute(2, 0, 1).float() / 255.0)
        levels = (torch.arange(8, device=dev).float() * 32 + 16) / 255.0
        centres = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(512, 3)
        dist = (centres[:, None] - self.palette[None, :n]).norm(dim=-1)                  # (512, n)
        near, slot = dist.min(1)
        none = torch.full_like(slot, self.cfg.slots)
        self.lut.copy_(torch.where(near < self.cfg.colour_tol * math.sqrt(3), slot, none))
        # contact ranges start at 1.5x the sum of the two objects' radii (image units)
        radius = self._radii()
        touch = radius[:, None] + radius[None, :]
        self.reach.copy_((0.5 if self.cfg.touch_floor else 1.5) * touch)
        # a disc of the object's usual area, in sprite cells
        cells = self.cfg.sprite / self.cfg.sprite_px
        radius = self._radii() * self.image_size / 2 * cells
        r = torch.arange(self.cfg.sprite, device=dev).float() - (self.cfg.sprite - 1) / 2
        dist = (r[None, :] ** 2 + r[:, None] ** 2).sqrt()
        self.sprites.copy_(4.0 * (radius[:, None, None] - dist)[:, None].clamp(-3, 3))
        if self.cfg.walls:
            self._fit_walls(batch["frames"])
        if self.cfg.proprio_locate and batch.get("proprio") is not None and self.proprio_dim:
            self._fit_locate(batch["frames"], batch["proprio"])

    def _fit_walls(self, frames: torch.Tensor) -> None:
        """Start each slot's box at the extremes of its positions where the sample frames show it whole."""
        pos, weight = self.observe(frames.flatten(0, 1).to(self.palette.device))
        whole = (weight >= 1)[..., None]
        seen = whole.any(0)                                                  # (K,1): a slot never seen keeps [-1, 1]
        lo = torch.where(whole, pos, torch.ones_like(pos)).amin(0).clamp(max=0.0)
        hi = torch.where(whole, pos, -torch.ones_like(pos)).amax(0).clamp(min=0.0)
        self.wall_lo.copy_(torch.where(seen, lo, -1.0))
        self.wall_hi.copy_(torch.where(seen, hi, 1.0))

    def _check_ready(self) -> None:
        if not bool(self.active.any()):
            raise ValueError("this slots model has no palette yet: it is found from the data when training starts "
                             "(embodied train)")

    # -- interface -----------------------------------------------------------------------------
    def features(self, state: State) -> torch.Tensor:
        """Slot positions, velocities (scaled) and pairwise distances (B, 4K + K(K-1)/2)."""
        pos, vel = state["pos"], state["vel"]
        k = pos.shape[1]
        i, j = torch.triu_indices(k, k, 1, device=pos.device)
        dist = (pos[:, i] - pos[:, j]).norm(dim=-1)
        act = self.active[None, :, None]
        return torch.cat([(pos * act).flatten(1), (vel / VEL_SCALE * act).flatten(1), dist * self.active[i] *
                          self.active[j]], -1)

    def encode(self, frames: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor | None = None,
               sim_state: torch.Tensor | None = None) -> State:
        self._check_ready()
        dev = self.palette.device
        b, t = frames.shape[:2]
        a = actions.float().to(dev).clamp(-1, 1).reshape(b, -1, self.action_dim)
        pos_obs, weight = self.observe(frames.flatten(0, 1))
        pos_obs, weight = self._with_located(pos_obs.view(b, t, -1, 2), weight.view(b, t, -1),
                                             *self._proprio(proprio, (b, t)), self._raw_proprio(proprio, (b, t)))
        pos, vel, known = self._filter(pos_obs, weight, a)
        return {"pos": pos[:, -1], "vel": vel[:, -1], "seen": known[:, -1].float()}

    @property
    def abilities(self) -> Abilities:
        return replace(super().abilities, update=True)

    @torch.no_grad()
    def update(self, state: State, action: torch.Tensor, frames: torch.Tensor,
               proprio: torch.Tensor | None = None) -> State:
        self._check_ready()
        b = frames.shape[0]
        a = action.float().to(self.palette.device).clamp(-1, 1).reshape(b, self.action_dim)
        proprio = None if proprio is None else proprio[:, None]
        pos_obs, weight = self.observe(frames)
        pos_obs, weight = self._with_located(pos_obs.view(b, 1, -1, 2), weight.view(b, 1, -1),
                                             *self._proprio(proprio, (b, 1)), self._raw_proprio(proprio, (b, 1)))
        pos, vel, known = self._filter_step(state["pos"], state["vel"], state["seen"] > 0, a, pos_obs[:, 0],
                                            weight[:, 0])
        return {"pos": pos, "vel": vel, "seen": known.float()}

    @property
    def max_context(self) -> int:
        """The most real frames encode() filters: the memory of where covered objects were last seen."""
        return max(self.context, int(self.cfg.memory))

    def step(self, state: State, action: torch.Tensor) -> State:
        a = action.float().reshape(state["pos"].shape[0], self.action_dim).clamp(-1, 1)
        pos, vel = self._dynamics(state["pos"], state["vel"], a, state["seen"])
        return {"pos": pos, "vel": vel, "seen": state["seen"]}

    def decode(self, state: State) -> torch.Tensor:
        return float_to_frames(self._render(state["pos"], known=state["seen"]))

    def reward(self, state: State) -> torch.Tensor:
        return self.rnorm.inverse(self.reward_head(self.features(state)))[:, 0]

    def goal_distance(self, state: State, goal: State) -> torch.Tensor:
        goal = repeat_state(goal, state["pos"].shape[0])
        return ((state["pos"] - goal["pos"]).norm(dim=-1) * self.active).sum(-1)

    @torch.no_grad()
    def rollout(self, state: State, actions: torch.Tensor) -> tuple[State, torch.Tensor]:
        state = repeat_state(state, actions.shape[0])
        pos, vel, seen, rewards = state["pos"], state["vel"], state["seen"], []
        for t in range(actions.shape[1]):
            pos, vel = self._dynamics(pos, vel, actions[:, t].float().clamp(-1, 1), seen)
            rewards.append(self.reward({"pos": pos, "vel": vel, "seen": seen}))
        return {"pos": pos, "vel": vel, "seen": seen}, torch.stack(rewards, 1)

    # -- training ------------------------------------------------------------------------------
    def loss(self, batch: dict, step: int = 0) -> tuple[torch.Tensor, dict]:
        self._check_ready()
        c = self.cfg
        d = self._prepare(batch, float_frames=False)
        frames, p, a, r = batch["frames"], d["p"], d["a"], d["r"]
        b, t = frames.shape[:2]
        ctx = max(1, min(c.context, t - 1))
        pos_obs, weight = self.observe(frames.flatten(0, 1))
        pos_obs, weight = pos_obs.view(b, t, -1, 2), weight.view(b, t, -1)
        raw = self._raw_proprio(batch.get("proprio"), (b, t))
        l_loc = self._locate_loss(pos_obs, weight, p, d["pmask"], raw)
        l_one = self._one_step_loss(*self._with_located(pos_obs, weight, p, d["pmask"], raw), a) \
            if c.one_step_weight else pos_obs.new_zeros(())
        f_obs, f_weight = self._with_located(pos_obs[:, :ctx], weight[:, :ctx], p[:, :ctx], d["pmask"], raw[:, :ctx])
        f_pos, f_vel, f_known = self._filter(f_obs, f_weight, a)
        pos, vel, ol_p, ol_v = f_pos[:, -1], f_vel[:, -1], [], []
        for k in range(t - ctx):
            pos, vel = self._dynamics(pos, vel, a[:, ctx - 1 + k], f_known[:, -1].float())
            ol_p.append(pos)
            ol_v.append(vel)
        ol_p, ol_v = torch.stack(ol_p, 1), torch.stack(ol_v, 1)                  # (B,H,K,2)
        known = f_known[:, -1]                                                   # (B,K): seen in the context
        g = ((weight[:, ctx:] >= 1) & known[:, None]).float()[..., None]
        err = F.smooth_l1_loss(ol_p, pos_obs[:, ctx:], reduction="none", beta=0.02)
        l_pos = (err * g).sum() / (2 * g.sum() + 1e-6)

        all_p, all_v = torch.cat([f_pos, ol_p], 1), torch.cat([f_vel, ol_v], 1)  # (B,T,K,2)
        # render two context frames (positions as observed: they teach the sprites, depth order and
        # front layer) and two open-loop frames (they teach only the predicted positions)
        seen = torch.tensor([max(ctx - 2, 0), ctx - 1])
        ahead = ctx + torch.randperm(t - ctx)[:RENDERED - 2]
        x = frames_to_float(frames[:, torch.cat([seen, ahead])].to(p.device))
        all_k = torch.cat([f_known, known[:, None].expand(-1, t - ctx, -1)], 1)   # (B,T,K)
        rendered = torch.cat([self._render(all_p[:, seen].flatten(0, 1), known=all_k[:, seen].flatten(0, 1))
                              .view(b, len(seen), *x.shape[2:]),
                              self._render(all_p[:, ahead].flatten(0, 1), learn_looks=False,
                                           known=all_k[:, ahead].flatten(0, 1)).view(b, len(ahead), *x.shape[2:])], 1)
        l_pix = 100.0 * self._weighted_mse(rendered, x)
        feats = self.features({"pos": all_p.flatten(0, 1), "vel": all_v.flatten(0, 1)}).view(b, t, -1)
        # the reward depends on every object: only frames where each has been seen teach it
        placed = (all_k | (self.active[None, None] == 0)).all(-1)[:, 1:].float()        # (B,T-1)
        l_rew = (((self.reward_head(feats[:, 1:])[..., 0] - r) ** 2) * placed).sum() / (placed.sum() + 1e-6)
        pmask = d["pmask"]
        l_prop = (((self.proprio_head(feats) - p) ** 2) * pmask).mean() if self.proprio_dim else r.new_zeros(())
        l_obj = ((self.object_head(feats) - d["o"]) ** 2).mean() if self.object_names else r.new_zeros(())
        i, j = self.pairs
        l_sparse = self.action_gates()[self.active > 0].sum() + self.reach[i, j].clamp(min=0).sum()
        total = (c.pos_weight * (l_pos + l_loc) + c.one_step_weight * l_one + c.pixel_weight * l_pix
                 + c.reward_weight * l_rew + c.proprio_weight * l_prop + c.object_weight * l_obj
                 + c.sparsity_weight * l_sparse)
        with torch.no_grad():
            px = (((ol_p - pos_obs[:, ctx:]).norm(dim=-1) * g[..., 0]).sum() / (g.sum() + 1e-6)) * self.image_size / 2
            mse_last = ((rendered[:, -1].clamp(0, 1) - x[:, -1]) ** 2).mean()
        metrics = {"loss": total.item(), "pos": l_pos.item(), "pos_px": px.item(), "pixels": l_pix.item(),
                   "reward": l_rew.item(), "proprio": l_prop.item(), "objects": l_obj.item(),
                   "sparsity": l_sparse.item(), "locate": l_loc.item(), "one_step": l_one.item(),
                   "psnr_last": (-10 * torch.log10(mse_last + 1e-10)).item()}
        return total, metrics

    def _one_step_loss(self, pos_obs: torch.Tensor, weight: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Position error of one dynamics step from each filtered frame of the window (B,T,K,2 observations,
        B,T,K weights) to the next observation, where the object is seen whole in both frames."""
        b, t, k = weight.shape
        with torch.no_grad():
            f_pos, f_vel, f_known = self._filter(pos_obs, weight, a)
        nxt, _ = self._dynamics(f_pos[:, :-1].flatten(0, 1), f_vel[:, :-1].flatten(0, 1),
                                a[:, :t - 1].flatten(0, 1), f_known[:, :-1].flatten(0, 1).float())
        g = ((weight[:, 1:] >= 1) & (weight[:, :-1] >= 1) & f_known[:, :-1]).float()[..., None]
        err = F.smooth_l1_loss(nxt.view(b, t - 1, k, 2), pos_obs[:, 1:], reduction="none", beta=0.02)
        return (err * g).sum() / (2 * g.sum() + 1e-6)

    def _weighted_mse(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        extra = foreground_mask(pred.detach().clamp(0, 1), self.cfg.floor_rgb)
        return foreground_weighted_mse(pred, target, self.cfg.fg_weight, extra, self.cfg.floor_rgb)
