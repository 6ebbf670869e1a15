"""The real env seen through a world model: a policy trained in imagination acts in the real task."""
from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
import torch

from embodied.envs.actions import check_actions
from embodied.envs.context import batch_windows, pad_window, split_obs
from embodied.envs.imagined.contexts import blank_context, check_env_observations
from embodied.envs.imagined.core import VECTOR_OBS, check_obs_mode, resolve_model, vector_observation

HISTORIES = ("episode", "context")


class LatentObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A real env (pixel or ``{"pixels", "proprio"}`` observations) whose observations are model latents.

    After each real step the model state is ``model.encode`` of what the robot
    saw since ``reset``, padded at the start like the imagined env's contexts
    (the first frame repeated with zero actions). ``history="episode"``
    (default) encodes the whole episode so far (for a recurrent model this *is*
    the filter, the same path the imagined env takes from its padded context),
    capped at ``max_history`` frames; ``history="context"`` encodes only the
    last ``model.max_context`` frames (constant cost). Actions are validated and
    clipped before they are recorded, as the real env applies them. The state
    is ``wrapper.state``; ``info["real_obs"]`` is the real observation.
    ``obs_mode="readout"`` gives ``model.readout(state)`` instead of
    ``model.features(state)``, matching an imagined env built with that mode.
    """

    def __init__(self, env: gym.Env, model, history: str = "episode", max_history: int = 64,
                 obs_mode: str = "latent"):
        gym.utils.RecordConstructorArgs.__init__(self, model=model, history=history, max_history=max_history,
                                                 obs_mode=obs_mode)
        gym.Wrapper.__init__(self, env)
        if history not in HISTORIES:
            raise ValueError(f"history={history!r} is not one of {HISTORIES}")
        if obs_mode not in VECTOR_OBS:
            raise ValueError(f"obs_mode={obs_mode!r} is not one of {VECTOR_OBS}")
        self.model = m = resolve_model(model)
        check_obs_mode(m, obs_mode)
        self.obs_mode, self.history = obs_mode, history
        self.context, self.action_dim = m.max_context, m.action_dim
        if env.action_space.shape != (self.action_dim,):
            raise ValueError(f"env actions have shape {env.action_space.shape}, the model takes ({self.action_dim},)")
        check_env_observations(env, m, "the wrapped env")
        self.max_frames = self.context if history == "context" else max(int(max_history), self.context)
        self._frames: deque = deque(maxlen=self.max_frames)
        self._proprio: deque = deque(maxlen=self.max_frames)
        self._actions: deque = deque(maxlen=self.max_frames - 1)
        self._steps = 0
        self.state: dict[str, torch.Tensor] | None = None
        with torch.no_grad():
            probe = m.encode(*batch_windows([blank_context(self.context, m.image_size, m.action_dim,
                                                           m.proprio_dim)]))
            dim = int(vector_observation(m, probe, obs_mode).shape[1])
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    @torch.no_grad()
    def _encode_history(self):
        """The state from the recorded frames: the padded start, then every real frame (up to the cap)."""
        frames = np.stack(self._frames)
        actions = np.stack(self._actions) if self._actions else np.zeros((0, self.action_dim), np.float32)
        proprio = None if self._proprio[-1] is None else np.stack(self._proprio)
        length = min(self.context + self._steps, self.max_frames)
        window = pad_window(frames, actions, proprio, len(frames) - 1, length, self.action_dim)
        return self.model.encode(*batch_windows([window]))

    @torch.no_grad()
    def _latent(self) -> np.ndarray:
        return vector_observation(self.model, self.state, self.obs_mode)[0].cpu().numpy().astype(np.float32)

    def _record(self, obs) -> None:
        pixels, proprio = split_obs(obs)
        self._frames.append(pixels)
        self._proprio.append(proprio)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        for q in (self._frames, self._proprio, self._actions):
            q.clear()
        self._steps = 0
        self._record(obs)
        self.state = self._encode_history()
        return self._latent(), {**info, "real_obs": obs}

    def step(self, action):
        a = check_actions(action, self.env.action_space).astype(np.float32)
        obs, reward, terminated, truncated, info = self.env.step(a)
        self._record(obs)
        self._actions.append(a)
        self._steps += 1
        self.state = self._encode_history()
        return self._latent(), reward, terminated, truncated, {**info, "real_obs": obs}
