"""The core of every imagined env: N imagined episodes advanced in one batched ``model.step``.

:class:`ImaginationCore` owns the batched model state, the context each
episode starts from, the step counters and what is read out of the state:
observations (``obs_mode``), ``model.reward`` and, where known, success.
Our tasks never terminate, so imagined episodes only end by truncation.
"""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from embodied.checkpoint import read_config
from embodied.envs.context import batch_windows
from embodied.envs.imagined.contexts import (SPLITS, STARTS, DatasetContexts, LiveEnvContexts, blank_context,
                                             context_from_options, dataset_path_of)
from embodied.envs.registry import TASKS, canonical_task, task_class
from embodied.errors import UserError
from embodied.load import load_model, resolve_run_dir
from embodied.models.base import WorldModel

OBS_MODES = ("latent", "readout", "pixels", "pixels_proprio")
VECTOR_OBS = ("latent", "readout")
DEFAULT_HORIZON = 50


def resolve_model(model, task: str | None = None) -> WorldModel:
    """A world-model object as it is, or the model a run folder (or reference name) names, for ``task``."""
    if model is None:
        raise ValueError("pass model=RUN_DIR (a run folder written by `embodied train`) or a world-model object")
    if isinstance(model, (str, Path)):
        return load_model(model, task or read_config(resolve_run_dir(model))["task"])
    if task and canonical_task(task) != canonical_task(model.task):
        raise UserError(f"model was trained for task {model.task!r}, not {task!r}")
    return model


def check_count(name: str, value, optional: bool = False) -> None:
    """A one-line ValueError unless ``value`` is an integer >= 1 (or, when ``optional``, None or 0: the default)."""
    integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if optional and (value is None or (integer and value == 0)):
        return
    if not integer or value < 1:
        default = " (or None for the default)" if optional else ""
        raise ValueError(f"{name}={value!r} must be a positive integer{default}")


def task_horizon(task: str) -> int:
    """The real task's episode length: the task class's, a Gymnasium id's registered limit, else 50."""
    key = canonical_task(task)
    if key in TASKS:
        return int(TASKS[key].max_episode_steps)
    spec = gym.registry.get(task)
    return int(spec.max_episode_steps) if spec is not None and spec.max_episode_steps else DEFAULT_HORIZON


def check_obs_mode(model: WorldModel, obs_mode: str) -> None:
    """A one-line ValueError when ``model`` cannot give observations of ``obs_mode``."""
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode={obs_mode!r} is not one of {OBS_MODES}")
    if obs_mode == "readout" and not model.abilities.readout:
        raise ValueError(f"{type(model).__name__} declares no readout ability (no proprio or object head); "
                         "use obs_mode='latent'")
    if obs_mode == "pixels_proprio" and not model.abilities.proprio:
        raise ValueError(f"{type(model).__name__} has no proprio head, so obs_mode='pixels_proprio' is not "
                         "available; use 'pixels' or 'latent'")


def vector_observation(model: WorldModel, state: dict, mode: str = "latent") -> torch.Tensor:
    """(B, D) float32 vector observation: ``model.features(state)`` ("latent") or ``model.readout(state)``."""
    out = model.features(state) if mode == "latent" else model.readout(state)
    return out.float().flatten(1)


class ImaginationCore:
    """Batched model state of N imagined episodes, their step counters and read-outs.

    Contexts come from ``env`` (a live env, reset for each episode) when given,
    else from the ``split`` episodes of ``dataset`` (default: the dataset the
    model's run folder records), starting at an episode's first frame
    (``start="first"``) or any of its steps (``"any"``).
    """

    def __init__(self, model, num_envs: int = 1, obs_mode: str = "latent", task: str | None = None,
                 horizon: int | None = None, dataset=None, split: str = "heldout", start: str = "first",
                 env=None, max_episodes: int | None = None):
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {SPLITS}")
        if start not in STARTS:
            raise ValueError(f"start={start!r} is not one of {STARTS}")
        check_count("num_envs", num_envs)
        check_count("horizon", horizon, optional=True)
        check_count("max_episodes", max_episodes, optional=True)
        self.model = m = resolve_model(model, task)
        check_obs_mode(m, obs_mode)
        self.task = m.task
        self.num_envs, self.obs_mode = int(num_envs), obs_mode
        # every reset fills the model's whole window, so envs of a batch can be reset independently
        self.context = m.max_context
        self.action_dim, self.image_size, self.proprio_dim = m.action_dim, m.image_size, m.proprio_dim
        self.horizon = int(horizon) if horizon else task_horizon(self.task)
        # a task with no simulator here (an imported robot dataset) has no success rule: success is not reported
        simulated = canonical_task(self.task) in TASKS or self.task in gym.registry
        self._margin = None if m.abilities.success or not simulated else task_class(self.task).reward_success_margin
        self.has_success = m.abilities.success or self._margin is not None

        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        pixels = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        if obs_mode in VECTOR_OBS:
            probe = self._encode([blank_context(self.context, self.image_size, self.action_dim, self.proprio_dim)])
            dim = int(vector_observation(m, probe, obs_mode).shape[1])
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        elif obs_mode == "pixels":
            self.observation_space = pixels
        else:
            proprio = gym.spaces.Box(-np.inf, np.inf, (max(self.proprio_dim, 1),), np.float32)
            self.observation_space = gym.spaces.Dict({"pixels": pixels, "proprio": proprio})

        self._contexts = None if env is None else LiveEnvContexts(env, m)
        self._dataset_args = (dataset, split, start, max_episodes)
        self.state: dict[str, torch.Tensor] | None = None
        self.steps = np.zeros(self.num_envs, dtype=np.int64)

    def contexts(self):
        """The context source, loading the dataset on first use."""
        if self._contexts is None:
            dataset, split, start, max_episodes = self._dataset_args
            if dataset is None and self.model.run_dir is not None:
                dataset = dataset_path_of(self.model.run_dir)
            if dataset is None:
                raise UserError("no dataset to seed imagined episodes from: pass dataset=DIR, a live env=..., or "
                                "reset(options={'context': {...}}) (the run folder's config.json records none)")
            self._contexts = DatasetContexts.from_folder(dataset, canonical_task(self.task), split, start,
                                                         self.model, max_episodes)
        return self._contexts

    @torch.no_grad()
    def _encode(self, windows) -> dict[str, torch.Tensor]:
        frames, actions, proprio = batch_windows(windows)
        return self.model.encode(frames, actions, proprio if self.proprio_dim else None)

    def reset(self, idx, rngs, options: dict | None = None) -> None:
        """Re-seed the envs ``idx`` (each with its own generator in ``rngs``) in one batched encode."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if options and options.get("context") is not None:
            windows = [context_from_options(options["context"], self.model)] * len(idx)
        else:
            source = self.contexts()
            windows = [source.sample(rngs[j]) for j in range(len(idx))]
        new = self._encode(windows)
        if self.state is None or len(idx) == self.num_envs and np.array_equal(idx, np.arange(self.num_envs)):
            if self.state is None and len(idx) != self.num_envs:
                raise RuntimeError("reset every env before resetting some of them")
            self.state = {k: v.detach().clone() for k, v in new.items()}
        else:
            t = torch.from_numpy(idx)
            for k, v in new.items():
                self.state[k][t] = v
        self.steps[idx] = 0

    @torch.no_grad()
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Advance all N rollouts with clipped actions (N, A): rewards, terminated, truncated, success."""
        if self.state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        self.state = self.model.step(self.state, torch.from_numpy(actions))
        self.steps += 1
        reward = self.model.reward(self.state).float().cpu().numpy().astype(np.float64).reshape(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = self.steps >= self.horizon
        return reward, terminated, truncated, self.success(reward)

    @torch.no_grad()
    def success(self, reward: np.ndarray | None = None) -> np.ndarray | None:
        """Predicted success (N,): the model's, or the task's rule on the predicted reward; None when unknown."""
        if self.model.abilities.success:
            return self.model.success(self.state).cpu().numpy().astype(bool).reshape(self.num_envs)
        if self._margin is None:
            return None
        if reward is None:
            reward = self.model.reward(self.state).float().cpu().numpy()
        return np.asarray(reward) > -float(self._margin)

    @torch.no_grad()
    def observe(self):
        """Batched observations of the current state (N, ...)."""
        if self.obs_mode in VECTOR_OBS:
            return vector_observation(self.model, self.state, self.obs_mode).cpu().numpy().astype(np.float32)
        pixels = self.frames()
        if self.obs_mode == "pixels":
            return pixels
        proprio = self.model.proprio(self.state).float().cpu().numpy().astype(np.float32)
        return {"pixels": pixels, "proprio": proprio.reshape(self.num_envs, -1)}

    @torch.no_grad()
    def frames(self) -> np.ndarray:
        """Decoded frames of the current state (N, H, W, 3) uint8."""
        return self.model.decode(self.state).cpu().numpy().astype(np.uint8)
