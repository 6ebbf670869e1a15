"""stable-baselines3 over the imagined vector env (SB3 does not accept a Gymnasium ``VectorEnv``)."""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from embodied.envs.imagined.env import ImaginedVectorEnv


class SB3VecEnv(VecEnv):
    """stable-baselines3 ``VecEnv`` over an :class:`ImaginedVectorEnv` (same-step auto-reset, as SB3 expects).

    ``infos[i]["terminal_observation"]`` holds the last observation of an
    episode that ended, and ``"TimeLimit.truncated"`` tells SB3's off-policy
    buffers to bootstrap through horizon truncations.
    """

    def __init__(self, venv: ImaginedVectorEnv):
        if venv.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError("SB3VecEnv needs an ImaginedVectorEnv made with autoreset_mode='SameStep'")
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self.render_mode = venv.render_mode
        self._actions = None

    def reset(self):
        seeds = self._seeds
        seed = None if all(s is None for s in seeds) else list(seeds)
        obs, info = self.venv.reset(seed=seed, options=self._options[0] or None)
        self.reset_infos = self._list_infos(info)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        infos = self._list_infos(info)
        done = terminated | truncated
        for i in np.flatnonzero(done):
            infos[i]["terminal_observation"] = info["final_obs"][i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, reward.astype(np.float32), done, infos

    def _list_infos(self, info: dict) -> list[dict]:
        out: list[dict] = [{} for _ in range(self.num_envs)]
        for k, v in info.items():
            if k.startswith("_") or k in ("final_obs", "final_info"):
                continue
            mask = info.get(f"_{k}", np.ones(self.num_envs, dtype=bool))
            for i in np.flatnonzero(mask):
                out[i][k] = v[i].item() if isinstance(v[i], np.generic) else v[i]
        return out

    def close(self) -> None:
        self.venv.close()

    def get_images(self):
        return list(self.venv.core.frames()) if self.venv.core.state is not None else [None] * self.num_envs

    def _targets(self, indices):
        return [self.venv for _ in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(t, attr_name) for t in self._targets(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return [getattr(t, method_name)(*method_args, **method_kwargs) for t in self._targets(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def make_sb3_vec_env(model, num_envs: int = 16, **kwargs) -> SB3VecEnv:
    """An SB3 ``VecEnv`` of ``num_envs`` imagined episodes (kwargs as for :class:`ImaginedVectorEnv`)."""
    return SB3VecEnv(ImaginedVectorEnv(model, num_envs=num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs))
