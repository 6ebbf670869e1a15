"""Factored state: one slot per object, an interaction network between slots, sprites composed over the scene.

State: ``{"pos": (B,K,2), "vel": (B,K,2), "seen": (B,K)}``, the image-plane position
(x = column, y = row, in [-1, 1]) and per-step velocity of each of the K slots, and
whether the slot's object has been seen at all (a slot never seen has no belief: it is
not drawn and touches nothing). Slot k is always
the same object: slots are bound to the colours of a palette found in the
training data (:func:`find_palette`), nothing is written per task.

* **Perception** (``encode``): colour-keyed attention. Each slot attends to the
  pixels near its palette colour; the attention-weighted mean coordinate is the
  observed position and the attended mass over the object's usual size its
  visibility. A slot whose object is hidden (under an occluder, behind another
  object) or only partly seen keeps the position its dynamics predict: the
  filter mixes observation and prediction by visibility.
* **Dynamics** (``step``): each slot's own motion (an MLP of its position,
  velocity and identity, and of the action through a learned per-slot gate that
  a sparsity loss closes for slots the action does not drive), then an
  interaction network: pairs of slots within a learned contact range exchange
  messages (an edge MLP of relative position, distance, relative velocity and
  identities), summed per slot into a further change of velocity; position
  integrates velocity. So a slot the action does not drive moves only by its own
  velocity or through contact, and velocity in the state keeps a hidden object
  moving.
* **Rendering** (``decode``): a learned sprite (alpha mask) per slot, in its palette colour,
  placed at the slot's position and composed by a learned depth order over the
  background (the scene's median, found with the palette); a learned static front layer (the scene's occluders)
  covers what passes under it. The pixels of a slot are the model's belief
  about its object.
* **Heads**: reward and proprio read the slots' positions, velocities and
  pairwise distances; ``goal_distance`` compares slot positions.

Training (``loss``): the filter over ``context`` real frames, then an open-loop
rollout over the rest of the window: position error against the observed
positions wherever the object is fully seen, pixel error of the rendered
frames (filtered and open-loop), reward and proprio errors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from embodied.errors import UserError
from embodied.models.base import State, repeat_state
from embodied.models.codec import (FLOOR_RGB, coord_grid, float_to_frames, foreground_mask, foreground_weighted_mse,
                                   frames_to_float, mlp)
from embodied.models.learned import LearnedWorldModel, check_fields

VEL_SCALE = 0.1      # typical per-step velocity in image units: inputs are divided by it
PALETTE_MIN_SHARE = 0.01  # a colour must cover this share of the changing pixels to get a slot
RENDERED = 4              # frames per training window that are rendered for the pixel loss
CONTACT_SOFTNESS = 0.02   # width (image units, ~0.6 px) of the contact-range gate on messages
LAYER_GAIN = 8.0          # the front layer's and depth order's logits are this times their parameters, so
                          # Adam (steps of ~lr per parameter) can open a front layer within a training run


@dataclass
class SlotsConfig:
    """Defaults: the recipe measured on push and occlusion (README, "Object-factored model")."""

    context: int = 4            # real frames the training loss filters before its open-loop rollout
    memory: int = 60            # real frames ``encode`` filters at most (max_context): a covered object keeps
                                # the place it was last seen, up to this many frames back
    slots: int = 4              # the most objects; the palette found in the data fills the first ones
    sprite: int = 16            # sprite resolution (cells per side)
    sprite_px: int = 24         # sprite window width in pixels (the largest object must fit)
    hidden: int = 128           # interaction-network width
    colour_tol: float = 0.12    # width of the colour key (fraction of full scale)
    see_from: float = 0.6       # visibility (seen share of the usual size) below which a slot is not corrected
    see_full: float = 0.9       # ... above which it is fully corrected
    pos_weight: float = 100.0   # open-loop position error (image units)
    pixel_weight: float = 1.0   # rendered frames (foreground-weighted MSE)
    reward_weight: float = 1.0
    proprio_weight: float = 1.0
    object_weight: float = 0.0  # object-position head on the dataset's object tracks (training signal only)
    proprio_locate: bool = False  # place a slot its frame does not show from proprioception, where proprio
                                  # predicts its position (the robot's own body under an occluder)
    locate_trust: float = 0.03  # ... to within this error (image units; running mean over seen frames)
    sparsity_weight: float = 0.1  # L1 on the action gates and the contact ranges: the action drives few slots,
                                  # and slots touch only when close
    touch_floor: bool = False   # a pair's contact range is at least the distance at which the two objects touch
                                # (their usual areas as discs); the learned range only adds to it
    inertia: bool = False       # Newton's first law: a slot at rest, not driven and not touched stays at rest (its
                                # own motion and its contact response are 0 without velocity, action or messages)
    fg_weight: float = 10.0
    proprio_dropout: float = 0.0
    floor_rgb: tuple = FLOOR_RGB

    def __post_init__(self):
        check_fields(self, positive=("context", "memory", "slots", "sprite", "sprite_px", "hidden"),
                     non_negative=("pos_weight", "pixel_weight", "reward_weight", "proprio_weight",
                                   "object_weight", "sparsity_weight", "fg_weight"),
                     fractions=("proprio_dropout",))
        if not 0 < self.colour_tol < 1:
            raise UserError(f"model.colour_tol = {self.colour_tol} must be between 0 and 1")
        if not 0 <= self.see_from < self.see_full <= 1:
            raise UserError(f"model.see_from = {self.see_from} and model.see_full = {self.see_full} must satisfy "
                            "0 <= see_from < see_full <= 1")


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


class SlotsWorldModel(LearnedWorldModel):
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
        self.register_buffer("slot_ids", torch.arange(K, dtype=torch.int32), persistent=False)
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
        if self.cfg.proprio_locate and batch.get("proprio") is not None and self.proprio_dim:
            self._fit_locate(batch["frames"], batch["proprio"])

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

    def _check_ready(self) -> None:
        if not bool(self.active.any()):
            raise ValueError("this slots model has no palette yet: it is found from the data when training starts "
                             "(embodied train)")

    # -- perception ----------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (N,H,W,3) uint8 -> observed positions (N,K,2) and visibility weights (N,K) in [0,1].

        Each pixel's colour (8 levels per channel) is looked up in a table that names the palette colour
        within ``colour_tol`` of it, if any; a slot's position is the mean coordinate of its pixels.
        """
        q = (frames.to(self.lut.device) >> 5).flatten(1, 2).to(torch.int32)                     # (N,HW,3)
        label = self.lut[(q[..., 0] << 6) | (q[..., 1] << 3) | q[..., 2]]                          # (N,HW)
        att = (label[..., None] == self.slot_ids).float()                                         # (N,HW,K)
        mass = att.sum(1)                                                                         # (N,K)
        pos = att.transpose(1, 2) @ self.grid[0] / mass.clamp(min=1)[..., None]
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
            p_pred, v_pred = self._dynamics(pos, vel, a[:, t - 1], known.float())
            g = weight[:, t, :, None]
            new_pos = g * pos_obs[:, t] + (1 - g) * p_pred
            new_vel = g * (pos_obs[:, t] - pos) + (1 - g) * v_pred
            first = ((weight[:, t] > 0) & ~known)[..., None]
            was = known[..., None]
            pos = torch.where(first, pos_obs[:, t], torch.where(was, new_pos, torch.zeros_like(pos)))
            vel = torch.where(was & ~first, new_vel, torch.zeros_like(vel))
            known = known | (weight[:, t] > 0)
            out_p.append(pos)
            out_v.append(vel)
            out_k.append(known)
        return torch.stack(out_p, 1), torch.stack(out_v, 1), torch.stack(out_k, 1)

    # -- dynamics ------------------------------------------------------------------------------
    def _dynamics(self, pos: torch.Tensor, vel: torch.Tensor, a: torch.Tensor,
                  seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: (B,K,2) positions and velocities, (B,A) action, (B,K) seen -> next (pos, vel).

        First each slot's own motion: a change of velocity from its position, velocity, identity and the
        action through the slot's learned gate (sparse: the gates of slots the action does not drive go
        to 0). Then contact: every ordered pair of active slots within the pair's learned contact range
        after that motion sends a message (edge MLP on relative position, distance, relative velocity and
        both identities), and a node MLP turns the summed messages into a further change of velocity. Slots
        never seen stay where they are and send no messages.
        """
        b, k = pos.shape[:2]
        present = self.active[None] * seen                                       # (B,K)
        ident = self.ident.expand(b, k, k)
        gated = a[:, None, :] * torch.sigmoid(self.action_gate)[None, :, None]
        own_in = torch.cat([pos, vel / VEL_SCALE, ident, gated], -1)
        vel = vel + self._less_at_rest(self.own, own_in, (slice(2, 4), slice(4 + k, None))) * VEL_SCALE
        ahead = pos + vel
        i, j = self.pairs
        rel = ahead[:, j] - ahead[:, i]                                          # (B,E,2): receiver i, sender j
        dist = rel.norm(dim=-1, keepdim=True)
        near = torch.sigmoid((self._contact_range(i, j)[None, :, None] - dist) / CONTACT_SOFTNESS)
        edge_in = torch.cat([rel, dist, (vel[:, j] - vel[:, i]) / VEL_SCALE, ident[:, i], ident[:, j]], -1)
        msg = self.edge(edge_in) * near * (present[:, i] * present[:, j])[..., None]
        total = torch.zeros(b, k, msg.shape[-1], dtype=msg.dtype, device=msg.device).index_add_(1, i, msg)
        node_in = torch.cat([ahead, vel / VEL_SCALE, ident, total], -1)
        vel = vel + self._less_at_rest(self.node, node_in, (slice(4 + k, None),)) * VEL_SCALE
        vel = vel * present[..., None]
        return pos + vel, vel

    def _contact_range(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The contact range (image units) of the pairs (i, j): the learned ``reach``, or with ``touch_floor``
        the distance at which the two objects touch plus the learned part (kept >= 0)."""
        if not self.cfg.touch_floor:
            return self.reach[i, j]
        radius = self._radii()
        return radius[i] + radius[j] + self.reach[i, j].clamp(min=0)

    def _radii(self) -> torch.Tensor:
        """(K,) radius of each slot's object (its usual area as a disc), image units."""
        return (self.usual_size / math.pi).sqrt() * 2 / self.image_size

    def _less_at_rest(self, net: nn.Module, x: torch.Tensor, causes: tuple) -> torch.Tensor:
        """``net(x)``; with ``inertia``, minus ``net`` of the same input with the ``causes`` (slices of the last
        axis) zeroed: the velocity and the action for ``own`` (a slot at rest and undriven), the summed
        messages for ``node`` (a slot untouched). The change of velocity is then 0 without a cause."""
        if not self.cfg.inertia:
            return net(x)
        rest = x.clone()
        for part in causes:
            rest[..., part] = 0
        both = net(torch.cat([x, rest], 0))
        return both[: x.shape[0]] - both[x.shape[0]:]

    @property
    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(receiver, sender) indices of the ordered pairs of distinct active slots."""
        idx = torch.nonzero(self.active > 0).flatten()
        i, j = torch.meshgrid(idx, idx, indexing="ij")
        keep = i != j
        return i[keep], j[keep]

    # -- rendering -----------------------------------------------------------------------------
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
        l_sparse = torch.sigmoid(self.action_gate)[self.active > 0].sum() + self.reach[i, j].clamp(min=0).sum()
        total = (c.pos_weight * (l_pos + l_loc) + c.pixel_weight * l_pix + c.reward_weight * l_rew
                 + c.proprio_weight * l_prop + c.object_weight * l_obj + c.sparsity_weight * l_sparse)
        with torch.no_grad():
            px = (((ol_p - pos_obs[:, ctx:]).norm(dim=-1) * g[..., 0]).sum() / (g.sum() + 1e-6)) * self.image_size / 2
            mse_last = ((rendered[:, -1].clamp(0, 1) - x[:, -1]) ** 2).mean()
        metrics = {"loss": total.item(), "pos": l_pos.item(), "pos_px": px.item(), "pixels": l_pix.item(),
                   "reward": l_rew.item(), "proprio": l_prop.item(), "objects": l_obj.item(),
                   "sparsity": l_sparse.item(), "locate": l_loc.item(),
                   "psnr_last": (-10 * torch.log10(mse_last + 1e-10)).item()}
        return total, metrics

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

    def _weighted_mse(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        extra = foreground_mask(pred.detach().clamp(0, 1), self.cfg.floor_rgb)
        return foreground_weighted_mse(pred, target, self.cfg.fg_weight, extra, self.cfg.floor_rgb)
