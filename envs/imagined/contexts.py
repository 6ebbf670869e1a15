"""Where the real frames that start an imagined episode come from.

A reset encodes ``context`` real frames (with their proprio and the actions
between them), padded at the start by :func:`embodied.envs.context.pad_window`
(a robot at rest). They come from the dataset the model was trained on
(:class:`DatasetContexts`; its path is in the run folder's ``config.json``),
from a live env's reset (:class:`LiveEnvContexts`), or from frames handed to
``reset(options={"context": ...})`` (:func:`context_from_options`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from embodied.checkpoint import read_config
from embodied.data import Dataset
from embodied.envs.context import pad_window, split_obs
from embodied.errors import UserError

STARTS = ("first", "any")
SPLITS = ("heldout", "train", "all")


def dataset_path_of(run_dir) -> str | None:
    """The dataset a run was trained on, as recorded in its config.json (None when it records none)."""
    data = (read_config(run_dir).get("run_config") or {}).get("data") or {}
    return data.get("path")


class DatasetContexts:
    """Context windows drawn from recorded episodes: an episode's first frame, or any of its steps."""

    def __init__(self, episodes, context: int, action_dim: int, start: str = "first"):
        if start not in STARTS:
            raise ValueError(f"start={start!r} is not one of {STARTS}")
        if not episodes:
            raise UserError("no dataset episodes to seed imagined episodes from")
        self.episodes, self.context, self.action_dim, self.start = list(episodes), int(context), int(action_dim), start

    @classmethod
    def from_folder(cls, path, task: str, split: str, start: str, context: int, action_dim: int,
                    max_episodes: int | None = None) -> DatasetContexts:
        """The ``split`` episodes ("heldout", "train" or "all") of the dataset folder ``path``."""
        ds = Dataset(Path(path), task=task, max_episodes=max_episodes)
        return cls(ds.episodes if split == "all" else ds.split(split), context, action_dim, start)

    def sample(self, rng: np.random.Generator):
        """One padded window (frames, actions, proprio) drawn with ``rng``."""
        ep = self.episodes[int(rng.integers(len(self.episodes)))]
        end = 0 if self.start == "first" else int(rng.integers(len(ep.actions) + 1))
        return pad_window(ep.frames.numpy(), ep.actions.numpy(), ep.proprio.numpy(), end, self.context,
                          self.action_dim)


class LiveEnvContexts:
    """Context from a live env's reset: its first observation padded to the context (a robot at rest)."""

    def __init__(self, env, context: int, action_dim: int):
        self.env, self.context, self.action_dim = env, int(context), int(action_dim)

    def sample(self, rng: np.random.Generator):
        """Reset the env with a seed drawn from ``rng``; its first observation as a padded window."""
        obs, _ = self.env.reset(seed=int(rng.integers(2**31 - 1)))
        pixels, proprio = split_obs(obs)
        return pad_window(pixels[None], np.zeros((0, self.action_dim)), None if proprio is None else proprio[None],
                          0, self.context, self.action_dim)


def context_from_options(ctx: dict, context: int, action_dim: int):
    """The padded window ending at the last of the frames given as ``reset(options={"context": ctx})``."""
    frames = np.asarray(ctx["frames"])
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"options['context']['frames'] must be uint8 (T,H,W,3), got {frames.dtype} {frames.shape}")
    n = frames.shape[0]
    actions = np.asarray(ctx.get("actions", np.zeros((n - 1, action_dim))), dtype=np.float32)
    proprio = ctx.get("proprio")
    return pad_window(frames, actions, None if proprio is None else np.asarray(proprio), n - 1, context, action_dim)


def blank_context(context: int, image_size: int, action_dim: int, proprio_dim: int):
    """An all-zero window: probes the size of a model's observations."""
    f = np.zeros((context, image_size, image_size, 3), np.uint8)
    p = np.zeros((context, proprio_dim), np.float32) if proprio_dim else None
    return f, np.zeros((context - 1, action_dim), np.float32), p
