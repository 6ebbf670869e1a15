"""Training with episodes whose actions are unknown: recipes of `embodied train`, and their batches.

A dataset's action-free episodes, and the train episodes that
``data.labelled_fraction`` leaves unlabelled, are ``Dataset.unlabelled``. By
default a run never sees them. Two recipes learn from them too:

* ``latent_actions.enabled``: a latent action model learns from the frames of
  every train episode, the world model learns on its codes, and a small MLP
  maps real actions to codes, fit on the labelled windows
  (:mod:`embodied.models.latent_actions`, arch ``latent_actions`` around
  ``model``). Each batch: windows of every train episode without actions, plus
  a quarter as many labelled windows under ``labelled.*`` keys.
* ``train.pretrain_steps``: the first steps train ``model`` on windows of every
  train episode without actions (a learned null action stands in,
  :mod:`embodied.models.null_action`); the rest post-train it on the labelled
  windows with their actions.

(A third, ``pseudo_labels.enabled``, labels them first: :mod:`embodied.pseudo_labels`.)

Each recipe's second phase starts its own warm-up and cosine learning-rate
schedule (:func:`phase_start`). Batches are drawn by step, so a resumed run
draws what an uninterrupted one would.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from embodied.config import Config
from embodied.dataset import Dataset, WindowSampler
from embodied.errors import UserError
from embodied.models import WRAPPERS
from embodied.models.latent_actions import LABELLED, LatentActionWorldModel, latent_probe

Draw = Callable[[int, np.random.Generator, int], dict]  # (windows, rng, step) -> batch


def recipe(cfg: Config) -> str:
    """``latent_actions``, ``pretrain``, ``pseudo_labels`` (:mod:`embodied.pseudo_labels`: every episode, the
    action-free ones labelled by inverse dynamics) or ``labelled`` (the labelled episodes alone)."""
    if cfg.latent_actions.enabled:
        return "latent_actions"
    if cfg.pseudo_labels.enabled:
        return "pseudo_labels"
    return "pretrain" if cfg.train.pretrain_steps else "labelled"


def model_config(cfg: Config) -> dict:
    """The model config a run builds: ``cfg.model``, wrapped when the recipe needs it."""
    model = dict(cfg.model)
    if model.get("arch") in WRAPPERS:
        raise UserError(f"model.arch={model['arch']} is built by a recipe, not named: set model.arch to the world "
                        "model's own (recurrent, transformer, slots) and latent_actions.enabled=true or "
                        "train.pretrain_steps=N")
    if recipe(cfg) == "latent_actions":
        lam = {k: v for k, v in vars(cfg.latent_actions).items() if k != "enabled"}
        return {"arch": "latent_actions", **lam, "world": model}
    if recipe(cfg) == "pretrain":
        return {"arch": "null_action", "world": model}
    return model


def phase_start(cfg: Config) -> int:
    """The step where the recipe's second phase starts (0: a single phase)."""
    return {"latent_actions": cfg.latent_actions.steps, "pretrain": cfg.train.pretrain_steps}.get(recipe(cfg), 0)


def batches(cfg: Config, ds: Dataset, rank: int = 0, world: int = 1) -> tuple[Draw, WindowSampler]:
    """How the run draws a training batch at each step, and the sampler of the batch ``model.fit_data`` sees."""
    n = cfg.train.seq_len
    labelled = WindowSampler(ds.train, n, rank, world)
    kind = recipe(cfg)
    if kind == "labelled":
        return (lambda size, rng, step: labelled.sample(size, rng)), labelled
    if kind == "pseudo_labels":  # ds.train holds the action-free episodes too, their actions inferred
        share = cfg.pseudo_labels.recorded_share
        inferred = [e for e in ds.train if e.inferred]
        if not share or not inferred:
            return (lambda size, rng, step: labelled.sample(size, rng)), labelled
        recorded_windows = WindowSampler([e for e in ds.train if not e.inferred], n, rank, world)
        inferred_windows = WindowSampler(inferred, n, rank, world)

        def shared(size: int, rng: np.random.Generator, step: int) -> dict:
            k = int(round(share * size))
            parts = [s.sample(m, rng) for s, m in ((recorded_windows, k), (inferred_windows, size - k)) if m]
            return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

        return shared, labelled
    frames = WindowSampler(ds.train + ds.unlabelled, n, rank, world, actions=False)
    if kind == "pretrain":
        return (lambda size, rng, step: (frames if step < cfg.train.pretrain_steps else labelled).sample(size, rng)
                ), frames

    def mixed(size: int, rng: np.random.Generator, step: int) -> dict:
        batch = frames.sample(size, rng)
        return batch | {LABELLED + k: v for k, v in labelled.sample(max(1, size // 4), rng).items()}

    return mixed, frames


def recipe_metrics(model, ds: Dataset, cfg: Config, pseudo: dict | None = None) -> dict:
    """What the run learned from: episode counts; for latent actions the linear probe from code to action, for
    pseudo-labels the inverse dynamics' report (``pseudo``)."""
    kind = recipe(cfg)
    if kind == "labelled" and not ds.unlabelled:
        return {}
    if kind == "pseudo_labels":
        labelled_by_it = pseudo["pseudo_labels.labelled_by_it"]
        return {"recipe": kind, "data.labelled_episodes": len(ds.train) - labelled_by_it,
                "data.unlabelled_episodes": labelled_by_it, **pseudo}
    out = {"recipe": kind, "data.labelled_episodes": len(ds.train), "data.unlabelled_episodes": len(ds.unlabelled)}
    if isinstance(model, LatentActionWorldModel):
        out |= latent_probe(model, ds.train, ds.heldout, seed=cfg.train.seed)
    return out
