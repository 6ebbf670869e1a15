"""Pseudo-labels for action-free episodes, as VPT does: inverse dynamics fit on the few labelled episodes.

The third recipe of `embodied train` for episodes without actions
(``pseudo_labels.enabled``; the other two are in :mod:`embodied.action_free`).
Before the world model trains, an inverse-dynamics model learns, from the
labelled train episodes alone, which action was taken between frames: it sees
frames t-1 .. t+2 (a velocity-servoed robot answers an action over more than
one frame) and their differences, and with ``pseudo_labels.proprio`` the
proprioception read with them, and regresses a_t. It then labels every
step of the action-free episodes, and the world model trains on all of them
as if they were labelled. Its held-out fit (R^2 on the labelled held-out
episodes, which it never trains on) is written beside the run's metrics.

The inverse dynamics is saved in the run folder (``inverse_dynamics.safetensors``,
written atomically), so a resumed run labels the same episodes the same way
instead of fitting it again.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from embodied.config import PseudoLabelsConfig
from embodied.dataset import Dataset, Episode
from embodied.errors import UserError
from embodied.io import atomic_write_bytes, atomic_write_json
from embodied.models.codec import frames_to_float, mlp
from embodied.models.latent_actions import down_convs, r2_score

BEFORE, AFTER = 1, 2        # frames the inverse dynamics sees before frame t and after it, for action t
WEIGHTS = "inverse_dynamics.safetensors"
REPORT = "inverse_dynamics.json"
HELDOUT_STEPS = 4000        # held-out steps its fit is scored on (at most)
SHIFT_PX = 4                # random shift of the training clips (pixels, each way)


class InverseDynamics(nn.Module):
    """Frames t-1 .. t+2 (and, with ``proprio_dim``, the proprioception read with them) -> the action a_t in
    [-1, 1]. The frames go through a conv net pooled over the image (mean and max), so it reads how things move
    rather than where they are; the proprioception, standardised with the labelled episodes' statistics,
    through an MLP."""

    def __init__(self, image_size: int, action_dim: int, proprio_dim: int, channels: int, hidden: int):
        super().__init__()
        n = BEFORE + 1 + AFTER
        self.convs, width = down_convs(3 * n + 3 * (n - 1), channels, image_size)
        self.proprio = mlp(n * proprio_dim, hidden, hidden, layers=1) if proprio_dim else None
        self.register_buffer("p_mean", torch.zeros(proprio_dim))
        self.register_buffer("p_std", torch.ones(proprio_dim))
        self.head = mlp(2 * width + (hidden if proprio_dim else 0), hidden, action_dim, layers=1)

    def forward(self, clips: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """(N, 4, H, W, 3) uint8 clips and their (N, 4, P) proprioception -> (N, A) actions."""
        x = frames_to_float(clips)                                   # (N, 4, 3, H, W)
        x = torch.cat([x - 0.5, 4.0 * (x[:, 1:] - x[:, :-1])], 1).flatten(1, 2)
        h = self.convs(x).flatten(2)
        h = [h.mean(2), h.amax(2)]
        if self.proprio is not None:
            h.append(self.proprio(((proprio - self.p_mean) / self.p_std).flatten(1)))
        return torch.tanh(self.head(torch.cat(h, 1)))


def _around(series: torch.Tensor, steps: np.ndarray) -> torch.Tensor:
    """(N, 4, ...) entries t-1 .. t+2 of an episode's per-frame ``series`` (T+1, ...) around each step t
    (repeating its first and last entry)."""
    idx = np.clip(steps[:, None] + np.arange(-BEFORE, AFTER + 1)[None], 0, len(series) - 1)
    return series[torch.from_numpy(idx)]


def _sample(episodes: list[Episode], weights: np.ndarray, size: int, rng: np.random.Generator):
    """``size`` random labelled steps: their clips, each shifted by up to ``SHIFT_PX`` pixels (the same shift for
    the whole clip, edges repeated), their proprioception and their actions. The shifts keep a net fit on a
    few episodes from recognising frames instead of reading motion."""
    clips, proprio, actions = [], [], []
    for e in rng.choice(len(episodes), size=size, p=weights):
        ep = episodes[e]
        t = rng.integers(0, len(ep), size=1)
        clip = _around(ep.frames, t)                                          # (1, 4, H, W, 3)
        h, w = clip.shape[2:4]
        padded = torch.nn.functional.pad(clip.movedim(-1, 2).float().flatten(1, 2), (SHIFT_PX,) * 4,
                                         mode="replicate").unflatten(1, (-1, 3)).movedim(2, -1).to(clip.dtype)
        dy, dx = rng.integers(0, 2 * SHIFT_PX + 1, size=2)
        clips.append(padded[:, :, dy:dy + h, dx:dx + w])
        proprio.append(_around(ep.proprio, t))
        actions.append(ep.actions[t])
    return torch.cat(clips), torch.cat(proprio), torch.cat(actions)


@torch.no_grad()
def label(model: InverseDynamics, episode: Episode, chunk: int = 256) -> torch.Tensor:
    """The inverse dynamics' actions (T, A) for every step of ``episode``."""
    steps = np.arange(len(episode))
    return torch.cat([model(_around(episode.frames, steps[i:i + chunk]), _around(episode.proprio, steps[i:i + chunk]))
                      for i in range(0, len(steps), chunk)])


def heldout_fit(model: InverseDynamics, episodes: list[Episode]) -> dict:
    """R^2 of the inverse dynamics' actions against the true ones, pooled and per action dimension."""
    pred, true = [], []
    for ep in episodes:
        pred.append(label(model, ep).numpy())
        true.append(ep.actions.numpy())
        if sum(len(p) for p in pred) >= HELDOUT_STEPS:
            break
    pred, true = np.concatenate(pred), np.concatenate(true)
    return {"pseudo_labels.heldout_r2": r2_score(true, pred),
            **{f"pseudo_labels.heldout_r2_dim{k}": r2_score(true[:, k:k + 1], pred[:, k:k + 1])
               for k in range(true.shape[1])}}


def build(cfg: PseudoLabelsConfig, spec: dict) -> InverseDynamics:
    """An untrained inverse dynamics for a dataset's ``spec``: frames only unless ``pseudo_labels.proprio``."""
    size = spec.get("image_size", 64)
    return InverseDynamics(int(size[0] if isinstance(size, (list, tuple)) else size), int(spec["action_dim"]),
                           int(spec.get("proprio_dim", 0)) if cfg.proprio else 0, cfg.channels, cfg.hidden)


def fit(cfg: PseudoLabelsConfig, spec: dict, train: list[Episode], heldout: list[Episode], seed: int,
        progress: bool = True) -> tuple[InverseDynamics, dict]:
    """Train the inverse dynamics on the labelled ``train`` episodes; returns it (in eval mode) and its report."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 7])
    model = build(cfg, spec)
    if model.proprio is not None:
        readings = torch.cat([e.proprio for e in train])
        model.p_mean.copy_(readings.mean(0))
        model.p_std.copy_(readings.std(0).clamp(min=1e-6))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    weights = np.array([len(e) for e in train], dtype=np.float64)
    weights /= weights.sum()
    tic, loss = time.perf_counter(), float("nan")
    for step in tqdm(range(cfg.steps), desc="inverse dynamics", unit="step", disable=not progress,
                     mininterval=1.0, dynamic_ncols=True):
        for g in opt.param_groups:  # cosine decay to a tenth
            g["lr"] = cfg.lr * (0.55 + 0.45 * np.cos(np.pi * step / cfg.steps))
        clips, proprio, actions = _sample(train, weights, cfg.batch, rng)
        loss_t = ((model(clips, proprio) - actions) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss_t.backward()
        opt.step()
        loss = float(loss_t.detach())
    model.eval()
    report = {"pseudo_labels.train_s": time.perf_counter() - tic, "pseudo_labels.final_loss": loss,
              "pseudo_labels.labelled_episodes": len(train)}
    return model, report | heldout_fit(model, heldout)


def label_unlabelled(cfg: PseudoLabelsConfig, ds: Dataset, out: Path, spec: dict, seed: int, write: bool = True,
                     progress: bool = True) -> dict:
    """Fit (or, on resume, load) the inverse dynamics and move ``ds.unlabelled`` into ``ds.train`` with its
    actions; returns its report (``write``: also saves both to ``out``)."""
    if not ds.unlabelled:
        raise UserError(f"pseudo_labels.enabled, but every episode of {ds.root} has actions: there is nothing to "
                        "label; set data.labelled_fraction below 1, add episodes collected with --no-actions, or "
                        "set pseudo_labels.enabled=false")
    model = build(cfg, spec)
    if (out / WEIGHTS).exists() and (out / REPORT).exists():
        try:
            model.load_state_dict(load_tensors((out / WEIGHTS).read_bytes()))
        except (RuntimeError, SafetensorError) as err:
            raise UserError(f"{out / WEIGHTS} does not fit pseudo_labels.channels={cfg.channels}, "
                            f"pseudo_labels.hidden={cfg.hidden} and pseudo_labels.proprio={cfg.proprio} "
                            f"({str(err).splitlines()[0][:80]}); resume with the settings the run started with, "
                            "or start a new run with out=NEW_DIR") from None
        model.eval()
        report = json.loads((out / REPORT).read_text())
    else:
        print(f"embodied train: fitting inverse dynamics on {len(ds.train)} labelled episodes to label "
              f"{len(ds.unlabelled)} without actions", file=sys.stderr)
        model, report = fit(cfg, spec, ds.train, ds.heldout, seed, progress)
        if write:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out / WEIGHTS, save_tensors(model.state_dict()))
            atomic_write_json(out / REPORT, report)
    report["pseudo_labels.labelled_by_it"] = len(ds.unlabelled)
    ds.train = ds.train + [replace(e, actions=label(model, e), inferred=True) for e in ds.unlabelled]
    ds.unlabelled = []
    return report


class LabelRefiner:
    """With ``pseudo_labels.refine_lr``: Adam on the inferred actions of ``ds.train``, which the world model's loss
    reaches through its batches, from step ``start`` on (clipped to [-1, 1]); so they come to explain what the
    model sees, EM-style, while the recorded episodes keep their meaning. Saved with each checkpoint."""

    def __init__(self, ds: Dataset, lr: float, start: int):
        self.episodes = [e for e in ds.train if e.inferred] if lr > 0 else []
        for e in self.episodes:  # leaves the loss reaches through the samplers' slices of them
            e.actions.requires_grad_(True)
        self.start = start
        self.opt = torch.optim.Adam([e.actions for e in self.episodes], lr=lr) if self.episodes else None

    def step(self, step: int) -> None:
        """After the world model's backward pass of training step ``step``."""
        if self.opt is None:
            return
        if step >= self.start:
            self.opt.step()
            with torch.no_grad():
                for e in self.episodes:
                    e.actions.clamp_(-1, 1)
        self.opt.zero_grad(set_to_none=True)

    def arrays(self) -> dict[str, torch.Tensor]:
        """The refined actions by episode seed, and their Adam moments once refinement has begun, for the
        checkpoint: ``"SEED"`` and ``"SEED.<Adam state key>"`` (``step``, ``exp_avg``, ``exp_avg_sq``)."""
        out = {}
        for e in self.episodes:
            out[str(e.seed)] = e.actions
            out.update({f"{e.seed}.{k}": v for k, v in self.opt.state.get(e.actions, {}).items()})
        return out

    def load(self, arrays: dict[str, torch.Tensor], out: Path) -> None:
        """Resume from a checkpoint's ``arrays``: the refined actions and, where saved, their Adam moments."""
        saved = {k for k in arrays if "." not in k}
        if saved != {str(e.seed) for e in self.episodes}:
            raise UserError(f"{out}: the checkpoint's refined actions ({len(saved)} episodes) are not those of the "
                            f"{len(self.episodes)} inferred now; resume with the data and pseudo_labels.refine_lr the "
                            "run started with, or start a new run")
        with torch.no_grad():
            for e in self.episodes:
                e.actions.copy_(arrays[str(e.seed)])
                prefix = f"{e.seed}."
                moments = {k[len(prefix):]: v.clone() for k, v in arrays.items() if k.startswith(prefix)}
                if moments:
                    self.opt.state[e.actions] = moments
