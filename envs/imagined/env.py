"""The Gymnasium faces of the :class:`~embodied.envs.imagined.core.ImaginationCore`.

:class:`ImaginedVectorEnv` is a real ``gymnasium.vector.VectorEnv`` (the
core at batch N, plus auto-reset); :class:`ImaginedEnv` is the core at batch 1.
``step`` validates the action (right shape, finite; a clear ``ValueError``
otherwise) and clips it to the action box as the real task does.
``info["is_success"]`` is the predicted success where the core knows it.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from embodied.envs.actions import check_actions
from embodied.envs.imagined.core import ImaginationCore


def _index_obs(obs, i: int):
    if isinstance(obs, dict):
        return {k: v[i].copy() for k, v in obs.items()}
    return obs[i].copy()


class ImaginedVectorEnv(VectorEnv):
    """N imagined episodes advanced in one batched ``model.step``; a real ``gymnasium.vector.VectorEnv``.

    ``autoreset_mode``: ``"NextStep"`` (Gymnasium's default: the step after an
    episode ends resets that env and ignores its action), ``"SameStep"`` (the
    reset happens in the same step; the last observation and info are in
    ``info["final_obs"]`` / ``info["final_info"]``, what SB3 needs) or
    ``"Disabled"``. ``reset(seed=s)`` seeds env i with ``s + i`` as
    ``SyncVectorEnv`` does, so env i matches ``ImaginedEnv`` reset with ``s + i``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, model=None, num_envs: int = 8, obs_mode: str = "latent", task: str | None = None,
                 horizon: int | None = None, dataset=None, split: str = "heldout", start: str = "first", env=None,
                 max_episodes: int | None = None, autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not supported: use 'rgb_array'")
        self.core = ImaginationCore(model, num_envs, obs_mode, task, horizon, dataset, split, start, env,
                                    max_episodes)
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.num_envs = self.core.num_envs
        self.render_mode = render_mode
        self.single_action_space = self.core.action_space
        self.single_observation_space = self.core.observation_space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._rngs = [seeding.np_random()[0] for _ in range(self.num_envs)]
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    @property
    def model(self):
        return self.core.model

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        super().reset(seed=seed if isinstance(seed, int) else None)
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
            self._rngs = [seeding.np_random(s)[0] if s is not None else r for s, r in zip(seeds, self._rngs)]
        self.core.reset(np.arange(self.num_envs), self._rngs, options)
        self._autoreset[:] = False
        return self._obs(), self._info()

    def step(self, actions):
        a = check_actions(actions, self.single_action_space, self.num_envs).astype(np.float32)
        reward, terminated, truncated, success = self.core.step(a)
        info: dict[str, Any] = {}
        if success is not None:
            info["is_success"], info["_is_success"] = success, np.ones(self.num_envs, dtype=bool)
        done = terminated | truncated
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            was = np.flatnonzero(self._autoreset)
            if was.size:
                self.core.reset(was, [self._rngs[i] for i in was])
                reward[was], terminated[was], truncated[was] = 0.0, False, False
                if success is not None:
                    info["is_success"][was] = self.core.success()[was]
            self._autoreset = terminated | truncated
            obs = self._obs()
        elif self.autoreset_mode == AutoresetMode.SAME_STEP:
            obs = self._obs()
            ended = np.flatnonzero(done)
            if ended.size:
                final_obs = np.empty(self.num_envs, dtype=object)
                for i in ended:
                    final_obs[i] = _index_obs(obs, i)
                final_info = {k: v.copy() for k, v in info.items()}
                info["final_obs"], info["_final_obs"] = final_obs, done.copy()
                info["final_info"], info["_final_info"] = final_info, done.copy()
                self.core.reset(ended, [self._rngs[i] for i in ended])
                obs = self._obs()
        else:
            obs = self._obs()
        return obs, reward, terminated, truncated, info

    def _obs(self):
        obs = self.core.observe()
        if isinstance(obs, dict):
            return {k: np.ascontiguousarray(v) for k, v in obs.items()}
        return np.ascontiguousarray(obs)

    def _info(self) -> dict:
        success = self.core.success()
        if success is None:
            return {}
        return {"is_success": success, "_is_success": np.ones(self.num_envs, dtype=bool)}

    def render(self):
        if self.render_mode != "rgb_array" or self.core.state is None:
            return None
        return tuple(self.core.frames())

    def close_extras(self, **kwargs):
        self.core.state = None


class ImaginedEnv(gym.Env):
    """One imagined episode: the :class:`ImaginationCore` at batch 1 (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, model=None, obs_mode: str = "latent", task: str | None = None, horizon: int | None = None,
                 dataset=None, split: str = "heldout", start: str = "first", env=None,
                 max_episodes: int | None = None, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not supported: use 'rgb_array'")
        self.core = ImaginationCore(model, 1, obs_mode, task, horizon, dataset, split, start, env, max_episodes)
        self.render_mode = render_mode
        self.action_space = self.core.action_space
        self.observation_space = self.core.observation_space

    @property
    def model(self):
        return self.core.model

    @property
    def horizon(self) -> int:
        return self.core.horizon

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.core.reset([0], [self.np_random], options)
        return self._obs(), self._info(self.core.success())

    def step(self, action):
        a = check_actions(action, self.action_space).astype(np.float32)[None]
        reward, terminated, truncated, success = self.core.step(a)
        return self._obs(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), self._info(success)

    def _obs(self):
        return _index_obs(self.core.observe(), 0)

    def _info(self, success) -> dict:
        info = {"step": int(self.core.steps[0])}
        if success is not None:
            info["is_success"] = bool(success[0])
        return info

    def render(self):
        if self.render_mode != "rgb_array" or self.core.state is None:
            return None
        return self.core.frames()[0]

    def close(self):
        self.core.state = None
