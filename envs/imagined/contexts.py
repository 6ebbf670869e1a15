"""Where the real frames that start an imagined episode come from.

A reset encodes ``context`` real frames (with their proprio and the actions
between them), padded at the start by :func:`embodied.envs.context.pad_window`
(a robot at rest). They come from the dataset the model was trained on
(:class:`DatasetContexts`; its path is in the run folder's ``config.json``),
from a live env's reset (:class:`LiveEnvContexts`), or from frames handed to
``reset(options={"context": ...})`` (:func:`context_from_options`). Each
source is checked against what the model takes (image size, channels, action
and proprio width) with a one-line error.
"""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from embodied.checkpoint import read_config
from embodied.dataset import Dataset
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
    def from_folder(cls, path, task: str, split: str, start: str, model, max_episodes: int | None = None
                    ) -> DatasetContexts:
        """The ``split`` episodes ("heldout", "train" or "all") of the dataset folder ``path``, checked against
        the frames, actions and proprio ``model`` takes."""
        ds = Dataset(Path(path), task=task, max_episodes=max_episodes)
        size = ds.manifest.get("image_size", 64)
        size = int(size[0] if isinstance(size, (list, tuple)) else size)
        have = (size, int(ds.manifest.get("action_dim", 0)), int(ds.manifest.get("proprio_dim", 0) or 0))
        want = (model.image_size, model.action_dim, model.proprio_dim)
        if have != want:
            raise UserError(f"dataset {path} holds {have[0]}x{have[0]} frames, {have[1]}-wide actions and "
                            f"{have[2]}-wide proprio, but the model takes {want[0]}x{want[0]}, {want[1]} and "
                            f"{want[2]}; pass dataset= the dataset the model was trained on")
        return cls(ds.episodes if split == "all" else ds.split(split), model.max_context, model.action_dim, start)

    def sample(self, rng: np.random.Generator):
        """One padded window (frames, actions, proprio) drawn with ``rng``."""
        ep = self.episodes[int(rng.integers(len(self.episodes)))]
        end = 0 if self.start == "first" else int(rng.integers(len(ep.actions) + 1))
        return pad_window(ep.frames.numpy(), ep.actions.numpy(), ep.proprio.numpy(), end, self.context,
                          self.action_dim)


class LiveEnvContexts:
    """Context from a live env's reset: its first observation padded to the context (a robot at rest)."""

    def __init__(self, env, model):
        check_env_observations(env, model)
        self.env, self.context, self.action_dim = env, int(model.max_context), int(model.action_dim)

    def sample(self, rng: np.random.Generator):
        """Reset the env with a seed drawn from ``rng``; its first observation as a padded window."""
        obs, _ = self.env.reset(seed=int(rng.integers(2**31 - 1)))
        pixels, proprio = split_obs(obs)
        return pad_window(pixels[None], np.zeros((0, self.action_dim)), None if proprio is None else proprio[None],
                          0, self.context, self.action_dim)


def check_env_observations(env, model, name: str = "env") -> None:
    """A one-line ValueError unless ``env`` observes frames of the size ``model`` takes (and proprio of its width)."""
    space = env.observation_space
    parts = space.spaces if isinstance(space, gym.spaces.Dict) else {"pixels": space}
    pixels, proprio = parts.get("pixels"), parts.get("proprio")
    size = model.image_size
    if pixels is None or getattr(pixels, "shape", None) is None or len(pixels.shape) != 3:
        raise ValueError(f"{name} has no pixel observations; make it with obs_type='pixels' or 'pixels_proprio'")
    if tuple(pixels.shape) != (size, size, 3):
        raise ValueError(f"{name} renders {tuple(pixels.shape)} frames but the model takes ({size}, {size}, 3); "
                         f"make the env with width={size}, height={size}")
    if proprio is not None and model.proprio_dim and tuple(proprio.shape) != (model.proprio_dim,):
        raise ValueError(f"{name} observes {tuple(proprio.shape)} proprio but the model takes ({model.proprio_dim},); "
                         "use the task the model was trained on")


def context_from_options(ctx: dict, model):
    """The padded window ending at the last of the frames given as ``reset(options={"context": ctx})``.

    ``ctx``: ``frames`` (T, H, W, 3) uint8 at the model's image size, optional
    ``actions`` (T-1, A) (default zeros) and ``proprio`` (T, P); a wrong shape,
    dtype or a non-finite value is a one-line ValueError naming the key.
    """
    where = "reset(options={'context': ...})"
    if not isinstance(ctx, dict) or "frames" not in ctx:
        raise ValueError(f"{where} needs a dict with 'frames' (T, H, W, 3) uint8, and optionally 'actions' (T-1, A) "
                         "and 'proprio' (T, P)")
    size, action_dim, proprio_dim = model.image_size, model.action_dim, model.proprio_dim
    frames = np.asarray(ctx["frames"])
    if frames.dtype != np.uint8 or frames.ndim != 4 or len(frames) == 0 or frames.shape[1:] != (size, size, 3):
        raise ValueError(f"{where}: 'frames' must be uint8 (T, {size}, {size}, 3), the model's image size and RGB, "
                         f"got {frames.dtype} {frames.shape}")
    n = frames.shape[0]
    actions = np.asarray(ctx.get("actions", np.zeros((n - 1, action_dim))), dtype=np.float32)
    if actions.shape != (n - 1, action_dim):
        raise ValueError(f"{where}: 'actions' must be ({n - 1}, {action_dim}), one action between each pair of "
                         f"frames, got {actions.shape}")
    proprio = ctx.get("proprio")
    if proprio is not None:
        proprio = np.asarray(proprio, dtype=np.float32)
        if proprio.shape != (n, proprio_dim):
            raise ValueError(f"{where}: 'proprio' must be ({n}, {proprio_dim}), one row per frame, got "
                             f"{proprio.shape}; leave it out if you have none")
    for key, values in (("actions", actions), ("proprio", proprio)):
        if values is not None and not np.isfinite(values).all():
            raise ValueError(f"{where}: '{key}' holds NaN or infinite values; pass finite numbers")
    return pad_window(frames, actions, proprio, n - 1, model.max_context, action_dim)


def blank_context(context: int, image_size: int, action_dim: int, proprio_dim: int):
    """An all-zero window: probes the size of a model's observations."""
    f = np.zeros((context, image_size, image_size, 3), np.uint8)
    p = np.zeros((context, proprio_dim), np.float32) if proprio_dim else None
    return f, np.zeros((context - 1, action_dim), np.float32), p
