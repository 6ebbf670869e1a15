"""Latent actions learned from frames alone (as Genie's latent action model), driven by real actions.

The latent action model (:class:`LatentActionModel`) has two parts:

* inverse dynamics: consecutive frames (o_t, o_t+1) -> a code c_t in [-1, 1]^D
  (a conv net, pooled over the image so it reads motion rather than places;
  standardised per dimension, then ``tanh``); while it trains, Gaussian noise
  (``noise``) is added to the code, which bounds what D numbers can carry: a
  wide-open bottleneck would pass the whole next frame instead of the action.
  The standardisation keeps the codes spread against that noise: without it
  they shrank into the noise and collapsed in the first hundred steps;
* a forward model that must predict o_t+1 from o_t and the code (a small U-Net
  over o_t that paints a colour and a mask over it), with a pixel loss ten
  times heavier on the pixels that change between the two frames.

The code is continuous, not a VQ codebook: every architecture here takes
real-valued actions in [-1, 1], so a D-dim code in the same box plugs into any
of them unchanged, and it keeps the magnitude of a continuous action that a
handful of discrete codes would throw away.

:class:`LatentActionWorldModel` (arch ``latent_actions``) holds the latent
action model, an inner world model (any arch, ``world``) whose action input is
the code, and a small MLP from a real action to its code. One ``embodied
train`` run (``latent_actions.enabled``) trains, by step: below ``steps`` the
latent action model on ``pairs`` consecutive frame pairs per step, drawn from
windows of every episode, labelled or not; from ``steps`` on the world model on
every episode with the (frozen) inverse dynamics' codes as its actions.
Throughout, the MLP is fit on the labelled windows (batch keys ``labelled.*``)
by regressing the code the inverse dynamics gives from the real action.
``align`` > 0 adds, while the latent action model trains, a linear read-out
from code to real action on the labelled windows whose loss reaches the
inverse dynamics: a little action supervision, as LAOM found necessary when
other things than the robot move. In use, ``step`` and ``rollout`` take real
actions through the MLP; ``encode`` reads the context's codes off its frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from embodied.config import LatentActionsConfig
from embodied.models.codec import _groups, frames_to_float, mlp
from embodied.models.wrapped import WrappedWorldModel

MOTION_WEIGHT = 10.0   # pixel-loss weight of the pixels that change between the two frames
MOTION_THRESH = 0.08   # a change above this (0..1 colour scale) counts as motion
CODE_MOMENTUM = 0.05   # of the codes' running statistics
LABELLED = "labelled."  # batch keys of the labelled windows the action -> code MLP is fit on


@dataclass
class LatentActionsModelConfig(LatentActionsConfig):
    world: dict = field(default_factory=lambda: {"arch": "recurrent"})  # the inner model's config


def down_convs(cin: int, channels: int, image_size: int) -> tuple[nn.Sequential, int]:
    """Stride-2 conv stages from ``image_size`` down to 4x4; returns them and their last width."""
    layers, size, i = [], image_size, 0
    while size > 4:
        cout = channels * 2 ** i
        layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.GroupNorm(_groups(cout), cout), nn.SiLU()]
        cin, size, i = cout, size // 2, i + 1
    return nn.Sequential(*layers), cin


class ForwardModel(nn.Module):
    """(o_t, code) -> o_t+1: a small U-Net over o_t, the code broadcast into every scale, painting over o_t.

    The skip connections carry where everything is in o_t, so the code only has to say how things move.
    """

    def __init__(self, image_size: int, code_dim: int, channels: int, levels: int = 3):
        super().__init__()
        widths = [channels * 2 ** i for i in range(levels)]
        self.downs = nn.ModuleList()
        cin = 3
        for w in widths:
            self.downs.append(nn.Sequential(nn.Conv2d(cin + code_dim, w, 4, 2, 1), nn.GroupNorm(_groups(w), w),
                                            nn.SiLU()))
            cin = w
        self.mid = nn.Sequential(nn.Conv2d(cin + code_dim, cin, 3, 1, 1), nn.GroupNorm(_groups(cin), cin), nn.SiLU())
        self.ups = nn.ModuleList()
        for w, skip in zip(reversed([3] + widths[:-1]), reversed(widths)):
            self.ups.append(nn.ConvTranspose2d(cin + skip + code_dim, max(w, channels), 4, 2, 1))
            cin = max(w, channels)
        self.out = nn.Conv2d(cin + 3, 4, 3, 1, 1)
        with torch.no_grad():  # start close to "nothing changes": mask logits biased negative
            self.out.bias[3] = -3.0

    @staticmethod
    def _with_code(h: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return torch.cat([h, code[:, :, None, None].expand(-1, -1, *h.shape[2:])], 1)

    def forward(self, x0: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        h, skips = x0 - 0.5, []
        for down in self.downs:
            h = down(self._with_code(h, code))
            skips.append(h)
        h = self.mid(self._with_code(h, code))
        for up, skip in zip(self.ups, reversed(skips)):
            h = F.silu(up(self._with_code(torch.cat([h, skip], 1), code)))
        out = self.out(torch.cat([h, x0 - 0.5], 1))
        mask = torch.sigmoid(out[:, 3:4] - 0.5)
        return mask * (out[:, :3] + 0.5) + (1 - mask) * x0


class LatentActionModel(nn.Module):
    """Inverse dynamics (o_t, o_t+1) -> code, and a forward model (o_t, code) -> o_t+1."""

    def __init__(self, image_size: int, code_dim: int, cfg: LatentActionsConfig):
        super().__init__()
        self.noise = cfg.noise
        self.idm_convs, width = down_convs(9, cfg.channels, image_size)
        self.idm_head = mlp(2 * width, cfg.hidden, code_dim, layers=1)
        # the pre-tanh code standardised per dimension (batch statistics while it trains, running ones after):
        # codes keep a fixed spread against the noise, so they cannot shrink into it and collapse
        self.register_buffer("code_mean", torch.zeros(code_dim))
        self.register_buffer("code_var", torch.ones(code_dim))
        self.forward_model = ForwardModel(image_size, code_dim, cfg.channels)

    def codes(self, x0: torch.Tensor, x1: torch.Tensor, fit: bool = False) -> torch.Tensor:
        """Codes (N, D) in [-1, 1] of the steps between frames ``x0`` and ``x1`` (N,3,H,W) in [0, 1];
        ``fit``: standardise with this batch's statistics and update the running ones."""
        h = self.idm_convs(torch.cat([x0 - 0.5, x1 - 0.5, 4.0 * (x1 - x0)], 1)).flatten(2)
        h = self.idm_head(torch.cat([h.mean(2), h.amax(2)], 1))
        if fit:
            mean, var = h.mean(0), h.var(0, unbiased=False)
            with torch.no_grad():
                self.code_mean.lerp_(mean.detach(), CODE_MOMENTUM)
                self.code_var.lerp_(var.detach(), CODE_MOMENTUM)
        else:
            mean, var = self.code_mean, self.code_var
        return torch.tanh((h - mean) / (var + 1e-5).sqrt())

    def predict(self, x0: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """The next frame (N,3,H,W) after ``x0`` under ``code`` (N, D)."""
        return self.forward_model(x0, code)

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Motion-weighted pixel loss of predicting ``x1`` from ``x0`` through the noisy code; and the code."""
        code = self.codes(x0, x1, fit=True)
        pred = self.predict(x0, code + self.noise * torch.randn_like(code))
        moved = ((x1 - x0).abs().amax(1, keepdim=True) > MOTION_THRESH).float()
        weight = 1.0 + (MOTION_WEIGHT - 1.0) * moved
        return 100.0 * (weight * (pred - x1) ** 2).mean(), code


def _pairs(frames: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive frames of uint8 windows (B,T,H,W,3) as float pairs (B*(T-1),3,H,W) on ``device``."""
    x = frames_to_float(frames.to(device))
    return x[:, :-1].flatten(0, 1), x[:, 1:].flatten(0, 1)


class LatentActionWorldModel(WrappedWorldModel):
    """A world model over latent actions, driven by real actions through a learned action -> code map."""

    arch = "latent_actions"

    def __init__(self, cfg: LatentActionsModelConfig, spec: dict):
        code_dim = int(cfg.code_dim or spec["action_dim"])
        super().__init__(cfg, spec, code_dim)
        self.code_dim = code_dim
        self.lam = LatentActionModel(self.image_size, code_dim, cfg)
        self.to_code = mlp(self.action_dim, cfg.hidden, code_dim, layers=2)
        self.to_action = nn.Linear(code_dim, self.action_dim)  # the ``align`` read-out: code -> real action

    @property
    def config(self) -> dict:
        return {k: v for k, v in super().config.items() if k != "enabled"}  # a train-config switch, not a setting

    def _device(self) -> torch.device:
        return self.to_code[0].weight.device

    def world_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Real actions (..., A) -> their codes (..., D)."""
        return torch.tanh(self.to_code(actions.to(self._device()).clamp(-1, 1)))

    @torch.no_grad()
    def frame_codes(self, frames: torch.Tensor) -> torch.Tensor:
        """The inverse dynamics' codes (B, T-1, D) between consecutive uint8 frames (B, T, H, W, 3)."""
        b = frames.shape[0]
        return self.lam.codes(*_pairs(frames, self._device())).view(b, frames.shape[1] - 1, self.code_dim)

    def context_actions(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The context's codes, read off its frames (what the world model was trained on)."""
        return self.frame_codes(frames)

    def loss(self, batch: dict, step: int = 0):
        """Latent action model (step < ``steps``) or world model on codes (after), plus the action -> code fit."""
        c = self.cfg
        frames = {k: v for k, v in batch.items() if not k.startswith(LABELLED)}
        labelled = {k[len(LABELLED):]: v for k, v in batch.items() if k.startswith(LABELLED)}
        if step < c.steps:
            x0, x1 = _pairs(frames["frames"], self._device())
            pick = torch.randperm(len(x0), device=x0.device)[:c.pairs]
            total, code = self.lam.loss(x0[pick], x1[pick])
            logs = {"lam": total.item(), "code_std": code.detach().std(0).mean().item()}
        else:
            world = {**frames, "actions": self.frame_codes(frames["frames"])}
            total, logs = self.world.loss(world, step - c.steps)
            logs = dict(logs or {})
        with torch.set_grad_enabled(step < c.steps and torch.is_grad_enabled()):
            codes = self.lam.codes(*_pairs(labelled["frames"], self._device()))
        actions = labelled["actions"].flatten(0, 1).to(codes.device)
        l_map = ((self.world_actions(actions) - codes.detach()) ** 2).mean()
        total = total + l_map
        logs = {**logs, "map": l_map.item()}
        if c.align and step < c.steps:
            l_align = ((self.to_action(codes) - actions) ** 2).mean()
            total = total + c.align * l_align
            logs["align"] = l_align.item()
        return total, {**logs, "loss": total.item()}


def r2_score(target: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination of ``pred`` for ``target`` (N, K), pooled over the K columns."""
    return float(1.0 - ((target - pred) ** 2).sum() / max(((target - target.mean(0)) ** 2).sum(), 1e-12))


@torch.no_grad()
def _episode_codes(model: LatentActionWorldModel, episodes, max_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes and real actions (N, D), (N, A) of the steps of ``episodes``, at most about ``max_pairs``."""
    codes, actions = [], []
    steps = [(ep, s) for ep in episodes for s in range(0, len(ep), 64)]
    for ep, s in steps:
        if sum(len(a) for a in actions) >= max_pairs:
            break
        codes.append(model.frame_codes(ep.frames[None, s:s + 65])[0].cpu().numpy())
        actions.append(ep.actions[s:s + 64].numpy())
    return np.concatenate(codes).astype(np.float64), np.concatenate(actions).astype(np.float64)


def latent_probe(model: LatentActionWorldModel, fit_episodes, test_episodes, max_pairs: int = 4000,
                 seed: int = 0) -> dict:
    """How well the codes separate the real actions, on labelled episodes.

    ``latent.probe_r2``: R^2 on ``test_episodes`` of a linear map (least squares, with a bias) from code to
    real action fit on ``fit_episodes``; ``latent.probe_r2_shuffled``: the same map fit to shuffled actions
    (a control that must score about 0 or below); ``latent.map_r2``: R^2 of the action -> code MLP for the
    test codes; ``latent.code_std``: the codes' spread (near 0: collapsed).
    """
    fit_c, fit_a = _episode_codes(model, fit_episodes, max_pairs)
    test_c, test_a = _episode_codes(model, test_episodes, max_pairs)

    def linear(codes, actions):
        x = np.concatenate([codes, np.ones((len(codes), 1))], 1)
        w = np.linalg.lstsq(x, actions, rcond=None)[0]
        return np.concatenate([test_c, np.ones((len(test_c), 1))], 1) @ w

    shuffled = fit_a[np.random.default_rng(seed).permutation(len(fit_a))]
    with torch.no_grad():
        mapped = model.world_actions(torch.from_numpy(test_a).float()).cpu().numpy()
    return {"latent.probe_r2": r2_score(test_a, linear(fit_c, fit_a)),
            "latent.probe_r2_shuffled": r2_score(test_a, linear(fit_c, shuffled)),
            "latent.map_r2": r2_score(test_c, mapped), "latent.code_std": float(test_c.std(0).mean())}
