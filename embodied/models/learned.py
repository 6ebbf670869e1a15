"""What the learned pixel world models share, on top of the codec (:mod:`embodied.models.codec`).

:class:`LearnedWorldModel` handles the dataset spec, the proprio / reward /
object normalisers, batch preparation, the read-out heads and the compositing
decoder (``composite=True``): the decoder outputs colour and a mask and paints
over the last real context frame, carried in the state as ``ref`` (B,H,W,3)
uint8. Static scenery then costs nothing to model and the capacity goes to
what moves; without it the models measured blurry after the same budget.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, asdict, fields

import torch

from embodied.errors import UserError
from embodied.models.base import Abilities, WorldModel
from embodied.models.codec import (ConvDecoder, RunningNorm, float_to_frames, foreground_mask,
                                   foreground_weighted_mse, frames_to_float, mlp)

PIXEL_LOSSES = ("mse", "l1")


def config_from_dict(cls, cfg: dict):
    """Build the dataclass ``cls`` from a dict, rejecting unknown keys with a clear message."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(cfg) - names - {"arch"})
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f"did you mean model.{close[0]}?" if close else f"known: {', '.join(sorted(names))}"
        raise UserError(f"unknown {cls.__name__} option(s) {', '.join('model.' + k for k in unknown)}; {hint}")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in names})


def check_fields(cfg, positive=(), non_negative=(), fractions=(), choices: dict | None = None) -> None:
    """Check a model config's values against the types of its defaults and the given ranges.

    ``positive``: integers >= 1 (widths, counts); ``non_negative``: numbers
    >= 0 (loss weights); ``fractions``: numbers in [0, 1); ``choices``: field
    -> allowed strings. A number given as text ("1e-3", as YAML 1.1 leaves it)
    becomes a float. Errors are one-line UserErrors naming ``model.<field>``.
    """
    for f in fields(cfg):
        value, default = getattr(cfg, f.name), f.default
        if default is MISSING:
            continue
        key = f"model.{f.name} = {value!r}"
        if isinstance(default, (bool, str)):
            if type(value) is not type(default):
                kind = "true or false" if isinstance(default, bool) else "a string"
                raise UserError(f"{key} must be {kind} (default {default!r}); set model.{f.name}=VALUE")
        elif isinstance(default, int):
            if type(value) is not int:
                raise UserError(f"{key} must be an integer (default {default}); set model.{f.name}=N")
        elif isinstance(default, float):
            number = _number(value)
            if number is None:
                raise UserError(f"{key} must be a finite number (default {default}); set model.{f.name}=X")
            setattr(cfg, f.name, number)
        elif isinstance(default, tuple) and (not isinstance(value, (tuple, list)) or len(value) != len(default)
                                             or any(_number(v) is None for v in value)):
            raise UserError(f"{key} must be a list of {len(default)} numbers (default {list(default)})")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise UserError(f"model.{name} = {getattr(cfg, name)} must be at least 1; set model.{name}=N")
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise UserError(f"model.{name} = {getattr(cfg, name)} must be 0 or more; set model.{name}=X")
    for name in fractions:
        if not 0 <= getattr(cfg, name) < 1:
            raise UserError(f"model.{name} = {getattr(cfg, name)} must be at least 0 and less than 1")
    for name, allowed in (choices or {}).items():
        if getattr(cfg, name) not in allowed:
            raise UserError(f"model.{name} = {getattr(cfg, name)!r} must be one of {', '.join(allowed)}")


def _number(value) -> float | None:
    """``value`` as a finite float (numbers and numeric text), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


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

    def fit_data(self, batch: dict) -> None:
        """Data-dependent set-up from a sample batch before the first training step (default: nothing)."""

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

    def _prepare(self, batch: dict, float_frames: bool = True) -> dict:
        """Float frames (unless ``float_frames`` is False), normalised proprio/rewards and clipped actions of a
        WindowSampler batch."""
        frames = batch["frames"]
        proprio = batch.get("proprio")
        rewards = batch["rewards"].float()
        if self.training:
            if proprio is not None and self.proprio_dim:
                self.pnorm.update(proprio.float())
            self.rnorm.update(rewards[..., None])
        p, pmask = self._proprio(proprio, frames.shape[:2], drop=self.cfg.proprio_dropout)
        out = {"x": frames_to_float(frames) if float_frames else None, "p": p, "pmask": pmask,
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
