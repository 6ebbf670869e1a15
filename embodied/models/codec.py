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
* :class:`LearnedWorldModel`: what both models share, including the
  compositing decoder (``composite=True``): the decoder outputs colour and a
  mask and paints over the last real context frame, carried in the state as
  ``ref`` (B,H,W,3) uint8. Static scenery then costs nothing to model and the
  capacity goes to what moves; without it the models measured blurry (PSNR@8
  18.9 dB against copy-last's 21.3, the pusher lost) after the same budget.
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

    def __init__(self, in_dim: int, image_size: int = 64, channels: int = 32, broadcast: int = 0, out_channels: int = 3):
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
                            extra_mask: torch.Tensor | None = None, floor_rgb=FLOOR_RGB, power: int = 2) -> torch.Tensor:
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


# ----------------------------------------------------------------------------------------------
# What the two learned models share: spec handling, normalisers, batch preparation, predict().
# ----------------------------------------------------------------------------------------------
from dataclasses import asdict, fields  # noqa: E402

from embodied.models.base import Abilities, WorldModel  # noqa: E402


def config_from_dict(cls, cfg: dict):
    """Build the dataclass ``cls`` from a dict, rejecting unknown keys with a clear message."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(cfg) - names - {"arch"})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; known: {sorted(names)}")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in names})


class LearnedWorldModel(WorldModel):
    """Base of the pixel world models: codec, proprio/reward normalisers, batch preparation, predict()."""

    arch = ""

    def __init__(self, cfg, spec: dict):
        super().__init__()
        self.cfg = cfg
        self.spec = {k: spec[k] for k in ("task", "image_size", "action_dim", "proprio_dim", "objects") if k in spec}
        self.task = str(spec.get("task", ""))
        size = spec.get("image_size", 64)
        self.image_size = int(size[0] if isinstance(size, (list, tuple)) else size)
        self.action_dim = int(spec["action_dim"])
        self.proprio_dim = int(spec.get("proprio_dim", 0) or 0)
        self.context = int(cfg.context)
        self.pnorm = RunningNorm(max(self.proprio_dim, 1))
        self.rnorm = RunningNorm(1)
        # object-position head (``object_weight > 0``): planar positions of the task's objects, supervised by the
        # dataset's object tracks during training only; it makes the latent carry where the small bodies are
        self.object_names = [o["name"] for o in spec.get("objects", [])] if cfg.object_weight > 0 else []
        if self.object_names:
            self.onorm = RunningNorm(2 * len(self.object_names))

    @property
    def abilities(self) -> Abilities:
        heads = self.proprio_dim > 0 or bool(self.object_names)
        return Abilities(goal_distance=True, proprio=self.proprio_dim > 0, objects=bool(self.object_names),
                         readout=heads)

    @property
    def config(self) -> dict:
        """JSON-able dict that rebuilds this model with ``build_model(model.config, model.spec)``."""
        return {"arch": self.arch, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.cfg).items()}}

    def forward(self, batch: dict, step: int = 0):
        """Same as ``loss``: lets DistributedDataParallel(model)(batch, step) sync gradients."""
        return self.loss(batch, step)

    def loss(self, batch: dict, step: int = 0):
        """(scalar loss, dict of float metrics) on a WindowSampler batch; see the subclasses."""
        raise NotImplementedError

    # -- inputs -------------------------------------------------------------------------------
    def _proprio(self, proprio: torch.Tensor | None, shape: tuple[int, int], drop: float = 0.0):
        """Normalised proprio (B,T,P) and its presence mask (B,1,1); zeros and mask 0 when absent."""
        b, t = shape
        dev = self.pnorm.mean.device
        if proprio is None or self.proprio_dim == 0:
            return torch.zeros(b, t, max(self.proprio_dim, 1), device=dev), torch.zeros(b, 1, 1, device=dev)
        p = self.pnorm(proprio.float().to(dev))
        mask = torch.ones(b, 1, 1, device=dev)
        if drop > 0 and self.training:
            mask = (torch.rand(b, 1, 1, device=dev) >= drop).float()
        return p * mask, mask

    def _prepare(self, batch: dict) -> dict:
        """Float frames, normalised proprio/rewards and clipped actions of a WindowSampler batch."""
        frames = batch["frames"]
        proprio = batch.get("proprio")
        rewards = batch["rewards"].float()
        if self.training:
            if proprio is not None and self.proprio_dim:
                self.pnorm.update(proprio.float())
            self.rnorm.update(rewards[..., None])
        p, pmask = self._proprio(proprio, frames.shape[:2], drop=self.cfg.proprio_dropout)
        out = {"x": frames_to_float(frames), "p": p, "pmask": pmask,
               "a": batch["actions"].float().clamp(-1, 1), "r": self.rnorm(rewards[..., None])[..., 0]}
        if self.object_names:
            if "objects" not in batch or batch["objects"].shape[2] != len(self.object_names):
                raise ValueError(f"model.object_weight > 0 needs object tracks for {self.object_names} in the "
                                 "dataset; set model.object_weight=0 for a dataset without them")
            o = batch["objects"].float().flatten(2).to(frames.device)
            if self.training:
                self.onorm.update(o)
            out["o"] = self.onorm(o)
        return out

    def _make_object_head(self, feat_dim: int):
        """The object-position head over ``feat_dim`` features, or None when ``object_weight`` is 0."""
        return mlp(feat_dim, self.cfg.hidden, 2 * len(self.object_names), layers=1) if self.object_names else None

    def _object_loss(self, feats: torch.Tensor, d: dict, ctx: int) -> torch.Tensor:
        """MSE of the normalised object positions predicted from ``feats`` = [filtered (T), open-loop (T-ctx)]."""
        if not self.object_names:
            return feats.new_zeros(())
        o = d["o"]
        return ((self.object_head(feats) - torch.cat([o, o[:, ctx:]], 1)) ** 2).mean()

    def objects(self, state: dict) -> torch.Tensor:
        """Predicted planar world positions (B, K, 2) of the task's objects (needs ``object_weight > 0``)."""
        if not self.object_names:
            raise ValueError("this model has no object head: train it with model.object_weight > 0")
        xy = self.onorm.inverse(self.object_head(self.features(state)))
        return xy.view(xy.shape[0], len(self.object_names), 2)

    def readout(self, state: dict) -> torch.Tensor:
        """Normalised low-dimensional read-outs (B, P + 2K): the proprio and object-position heads' outputs.

        Both heads are trained on filtered and on open-loop states alike, so this vector means the same
        in imagination and behind the real-env wrapper: a compact observation for policies.
        """
        feat = self.features(state)
        parts = ([self.proprio_head(feat)] if self.proprio_dim else []) + \
                ([self.object_head(feat)] if self.object_names else [])
        if not parts:
            raise ValueError("this model has neither a proprio nor an object head to read out: train it on a "
                             "dataset with proprio or with model.object_weight > 0")
        return torch.cat(parts, -1)

    def _pixel_loss(self, pred: torch.Tensor, target: torch.Tensor, prev: torch.Tensor | None = None):
        """100 x foreground-weighted MSE; foreground = target's, the previous real frame's and the prediction's
        own non-floor pixels (the last makes painting colour where there is none as costly as missing it)."""
        extra = foreground_mask(pred.detach().clamp(0, 1), self.cfg.floor_rgb)
        if prev is not None:
            extra = torch.maximum(extra, foreground_mask(prev, self.cfg.floor_rgb))
        if self.cfg.pixel_loss == "l1":  # per-pixel median: a body is drawn where it is more likely than not, sharp
            return 30.0 * foreground_weighted_mse(pred, target, self.cfg.fg_weight, extra, self.cfg.floor_rgb, power=1)
        return 100.0 * foreground_weighted_mse(pred, target, self.cfg.fg_weight, extra, self.cfg.floor_rgb)

    # -- compositing decoder ------------------------------------------------------------------
    def _make_decoder(self, in_dim: int) -> ConvDecoder:
        c = self.cfg
        dec = ConvDecoder(in_dim, self.image_size, c.channels, c.broadcast, out_channels=4 if c.composite else 3)
        if c.composite:  # start close to "copy the reference frame": mask logits biased negative
            with torch.no_grad():
                dec.deconvs[-1].bias[3] = -3.0
        return dec

    def _render(self, feat: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        """Decoder output (N,3,H,W) in ~[0,1]; with ``composite`` a painted layer over ``ref`` (N,3,H,W)."""
        out = self.decoder(feat)
        if not self.cfg.composite:
            return out
        mask = torch.sigmoid(out[:, 3:4] - 0.5)
        return mask * out[:, :3] + (1 - mask) * ref

    def _ref_state(self, frames: torch.Tensor) -> dict:
        """State entries carrying the reference frame (the last real frame) for the compositing decoder."""
        return {"ref": frames[:, -1].to(self.pnorm.mean.device).to(torch.uint8)} if self.cfg.composite else {}

    def decode(self, state: dict) -> torch.Tensor:
        return self._decode_feat(self.features(state), state)

    def reward(self, state: dict) -> torch.Tensor:
        return self.rnorm.inverse(self.reward_head(self.features(state)))[:, 0]

    def proprio(self, state: dict) -> torch.Tensor:
        """Predicted proprio (B,P) of the state, in the dataset's units."""
        return self.pnorm.inverse(self.proprio_head(self.features(state)))

    def _decode_feat(self, feat: torch.Tensor, state: dict) -> torch.Tensor:
        ref = frames_to_float(state["ref"]) if self.cfg.composite else None
        return float_to_frames(self._render(feat, ref))

    # -- convenience for evaluation -----------------------------------------------------------
    @torch.no_grad()
    def predict(self, frames_ctx: torch.Tensor, proprio_ctx: torch.Tensor | None, actions_ctx: torch.Tensor,
                future_actions: torch.Tensor) -> torch.Tensor:
        """Open-loop prediction from real context: (B,H,h,w,3) uint8 frames, one per future action."""
        state = self.encode(frames_ctx, actions_ctx, proprio_ctx)
        out = []
        for t in range(future_actions.shape[1]):
            state = self.step(state, future_actions[:, t])
            out.append(self.decode(state))
        return torch.stack(out, dim=1)
