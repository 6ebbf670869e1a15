"""A world model as a Gymnasium environment: imagined rollouts behind ``reset`` / ``step``.

``gymnasium.make("embodied/Imagined-v0", model=RUN_DIR)`` is a normal
``gymnasium.Env``; ``gymnasium.make_vec("embodied/Imagined-v0", num_envs=N,
vectorization_mode="vector_entry_point", model=RUN_DIR)`` (or
:class:`ImaginedVectorEnv` directly) is a real ``gymnasium.vector.VectorEnv``
that advances N imagined rollouts in one batched ``model.step``.

One core, thin adapters: :class:`ImaginationCore` owns the batched model
state, the context sampling, the step counters and the observation/reward
read-out. :class:`ImaginedVectorEnv` adds auto-reset on top;
:class:`ImaginedEnv` is the same core at batch 1; :class:`SB3VecEnv` gives the
vector env to stable-baselines3 (which does not accept a Gymnasium
``VectorEnv``); :class:`LatentObservation` turns a *real* env's pixel
observations into the same latent observations, so a policy trained in
imagination acts in the real task.

Episodes
    ``reset()`` builds the model state with ``model.encode`` from ``model.context``
    real frames (with their proprio and the actions between them). By default
    they come from the dataset the model was trained on (its path is in the run
    folder's ``config.json``): a held-out episode (``split="heldout"``), drawn
    with ``self.np_random``, so the checkers' determinism tests hold.
    ``start="first"`` (default) seeds from the episode's first frame padded to
    the context by repetition with zero actions: exactly what the real-env
    wrapper sees after ``reset`` (a robot at rest); ``start="any"`` seeds from
    a uniformly drawn step of the episode. A live env passed as ``env=`` is
    reset instead (its seed drawn from ``self.np_random``), and
    ``reset(options={"context": {"frames", "actions", "proprio"}})`` seeds from
    frames you hand in.
    ``step(action)`` validates the action (right shape, finite; a clear
    ``ValueError`` otherwise), clips it to the action box as the real task does,
    advances the model one step and returns the observation and
    ``model.reward`` of the new state. ``terminated`` comes from a
    ``model.terminated(state)`` head when the model has one (our tasks never
    terminate, so it is False otherwise); ``truncated`` at ``horizon`` steps
    (default: the real task's episode length). ``info["is_success"]`` is
    ``model.success(state)`` when the model has that head, or, for Reach,
    whose reward is minus the fingertip-target distance, the task's own rule
    (reward > -SUCCESS_RADIUS) applied to the predicted reward.

Observations (``obs_mode``)
    ``"latent"``: the model state as a flat float32 vector, ``model.features(state)``
    (or ``model.latent(state)``) when the model has it, else all floating
    tensors of the state except caches, flattened and concatenated in key
    order (``[h, z]`` for the recurrent model; the context window of frame
    latents for a transformer). ``"readout"``: ``model.readout(state)``, the
    normalised proprio and object-position heads (a few numbers that mean the
    same in imagination and in the real env: the easiest observation to
    transfer). ``"pixels"``: decoded uint8 frames (H, W, 3).
    ``"pixels_proprio"``: ``{"pixels", "proprio"}`` like the real tasks, with
    the model's proprio head (models without one cannot use this mode).
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import json
import re
from collections import deque
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from embodied.errors import UserError

OBS_MODES = ("latent", "readout", "pixels", "pixels_proprio")
VECTOR_OBS = ("latent", "readout")
STARTS = ("first", "any")
SPLITS = ("heldout", "train", "all")
_CACHE_WORDS = ("cache", "past", "kv")
DEFAULT_HORIZON = 50


# ---------------------------------------------------------------------------------------------
# the model and what it provides
# ---------------------------------------------------------------------------------------------


def load_world_model(model, task: str | None = None, device: str = "cpu"):
    """A world model object, or the one saved in a run folder (``embodied.models.load`` or the checkpoint loader)."""
    if isinstance(model, torch.nn.Module):
        return model
    if model is None:
        raise ValueError("pass model=RUN_DIR (a run folder written by `embodied train`) or a world-model object")
    try:
        from embodied.models import load  # type: ignore[attr-defined]
    except ImportError:
        from embodied.checkpoint import load
    loaded = load(Path(model), task=task).to(device).eval()
    loaded.run_dir = str(model)  # so envs built from the object later still find the run's dataset
    return loaded


def run_config(run_dir) -> dict:
    """config.json of a run folder ({} when unreadable)."""
    try:
        return json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def dataset_path_of(run_dir) -> str | None:
    """The dataset a run was trained on, as recorded in its config.json."""
    cfg = run_config(run_dir)
    for where in (cfg.get("run_config") or {}, cfg.get("train") or {}, cfg):
        data = where.get("data") if isinstance(where, dict) else None
        if isinstance(data, dict) and data.get("path"):
            return str(data["path"])
        if isinstance(data, str):
            return data
    return None


def has_head(model, name: str) -> bool:
    return callable(getattr(model, name, None))


def _is_cache_key(key: str) -> bool:
    """Attention caches: names with cache/past/kv, or per-layer keys and values named k0, v0, k1, ..."""
    low = key.lower()
    return any(w in low for w in _CACHE_WORDS) or re.fullmatch(r"[kv]\d+", low) is not None


def context_length(model) -> int:
    """Frames each reset context holds: ``model.context``, or the model's whole attention window if longer.

    Padding every reset to the window (the first frame repeated with zero
    actions, a robot at rest) keeps a transformer's cache the same size in every
    env of a batch, so envs can be reset independently of each other.
    """
    window = getattr(getattr(model, "cfg", None), "window", None)
    if window is None and isinstance(getattr(model, "config", None), dict):
        window = model.config.get("window")
    return max(int(getattr(model, "context", 4)), int(window or 0))


def latent_features(model, state: dict) -> torch.Tensor:
    """(B, D) float32 latent observation of a batched model state (see the module docstring)."""
    for name in ("features", "latent"):
        if has_head(model, name):
            return getattr(model, name)(state).float().flatten(1)
    parts = []
    for k, v in sorted(state.items()):
        if not torch.is_floating_point(v) or _is_cache_key(k):
            continue
        if v.dim() >= 3:  # a window of per-frame tensors (B, n, ...): its newest entry is the current one
            v = v[:, -1]
        parts.append(v.float().flatten(1))
    if not parts:
        raise TypeError(f"{type(model).__name__}: its state has no floating tensors to use as a latent "
                        "observation; give the model a features(state) -> (B, D) method")
    return torch.cat(parts, dim=1)


def vector_observation(model, state: dict, mode: str = "latent") -> torch.Tensor:
    """(B, D) float32 vector observation of a batched state: ``"latent"`` or ``"readout"`` (module docstring)."""
    if mode == "latent":
        return latent_features(model, state)
    if mode == "readout":
        if not has_head(model, "readout"):
            raise ValueError(f"{type(model).__name__} has no readout(state) heads; use obs_mode='latent'")
        return model.readout(state).float().flatten(1)
    raise ValueError(f"vector observation mode {mode!r} is not one of {VECTOR_OBS}")


def task_horizon(task: str) -> int:
    """The real task's episode length (``max_episode_steps``), or 50 when unknown."""
    try:
        import importlib

        from embodied.envs.registry import TASKS, canonical_task

        entry = TASKS.get(canonical_task(task or ""))
        if entry:
            module, cls = entry.split(":")
            return int(getattr(importlib.import_module(module), cls).max_episode_steps)
        if task in gym.registry and gym.registry[task].max_episode_steps:
            return int(gym.registry[task].max_episode_steps)
    except Exception:  # noqa: BLE001  (an unknown task just gets the default)
        pass
    return DEFAULT_HORIZON


def reward_success_threshold(task: str) -> float | None:
    """For tasks whose success is a threshold on the reward itself (Reach: reward = -distance)."""
    try:
        from embodied.envs.registry import canonical_task

        if canonical_task(task or "") == "reach":
            from embodied.envs.tasks.reach import SUCCESS_RADIUS

            return -float(SUCCESS_RADIUS)
    except ImportError:
        pass
    return None


def check_actions(actions, space: gym.spaces.Box, num_envs: int | None = None) -> np.ndarray:
    """Validate a (N, A) batch (or one (A,) action): shape and finiteness; clip to the box like the real task."""
    a = np.asarray(actions, dtype=np.float64)
    want = space.shape if num_envs is None else (num_envs, *space.shape)
    if a.shape != want:
        what = "one value per actuator" if num_envs is None else f"one row of {space.shape[0]} values per env"
        raise ValueError(f"action has shape {a.shape}, expected {want}: pass {what}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action {a.tolist()} contains NaN or inf: actions must be finite numbers in "
                         f"[{float(np.min(space.low))}, {float(np.max(space.high))}]")
    return np.clip(a, space.low, space.high).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# where context frames come from
# ---------------------------------------------------------------------------------------------


def pad_window(frames, actions, proprio, end: int, context: int, action_dim: int):
    """The ``context`` frames ending at index ``end`` of an episode (repeating frame 0, zero actions, before it).

    frames (T+1,H,W,3), actions (T,A), proprio (T+1,P) or None -> (context,H,W,3), (context-1,A), (context,P).
    """
    idx = [max(0, i) for i in range(end - context + 1, end + 1)]
    f = np.asarray(frames[idx])
    p = None if proprio is None else np.asarray(proprio[idx], dtype=np.float32)
    a = np.zeros((context - 1, action_dim), dtype=np.float32)
    for j, i in enumerate(range(end - context + 1, end)):  # action between frame i and i+1
        if i >= 0:
            a[j] = np.asarray(actions[i], dtype=np.float32)
    return f, a, p


class DatasetContexts:
    """Context windows drawn from recorded episodes."""

    def __init__(self, episodes, context: int, action_dim: int, start: str = "first"):
        if start not in STARTS:
            raise ValueError(f"start={start!r} is not one of {STARTS}")
        if not episodes:
            raise UserError("no dataset episodes to seed imagined episodes from")
        self.episodes, self.context, self.action_dim, self.start = list(episodes), int(context), int(action_dim), start

    def sample(self, rng: np.random.Generator):
        ep = self.episodes[int(rng.integers(len(self.episodes)))]
        end = 0 if self.start == "first" else int(rng.integers(len(ep.actions) + 1))
        frames = ep.frames.numpy() if torch.is_tensor(ep.frames) else ep.frames
        proprio = ep.proprio.numpy() if torch.is_tensor(ep.proprio) else ep.proprio
        actions = ep.actions.numpy() if torch.is_tensor(ep.actions) else ep.actions
        return pad_window(frames, actions, proprio, end, self.context, self.action_dim)


class LiveEnvContexts:
    """Context from a live env's reset: its first observation padded to the context (a robot at rest)."""

    def __init__(self, env, context: int, action_dim: int):
        self.env, self.context, self.action_dim = env, int(context), int(action_dim)

    def sample(self, rng: np.random.Generator):
        obs, _ = self.env.reset(seed=int(rng.integers(2**31 - 1)))
        pixels, proprio = split_obs(obs)
        return pad_window(pixels[None], np.zeros((0, self.action_dim)), None if proprio is None else proprio[None],
                          0, self.context, self.action_dim)


def split_obs(obs) -> tuple[np.ndarray, np.ndarray | None]:
    """(pixels uint8 (H,W,3), proprio float32 or None) of a real observation (pixels or a dict)."""
    if isinstance(obs, dict):
        pixels = obs.get("pixels", obs.get("observation.image"))
        proprio = obs.get("proprio", obs.get("observation.state"))
    else:
        pixels, proprio = obs, None
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError("a world model needs pixel observations: make the env with obs_type 'pixels' or "
                         "'pixels_proprio' (a dict with 'pixels' and 'proprio')")
    return pixels, None if proprio is None else np.asarray(proprio, dtype=np.float32)


def _context_from_options(ctx: dict, context: int, action_dim: int):
    frames = np.asarray(ctx["frames"])
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"options['context']['frames'] must be uint8 (T,H,W,3), got {frames.dtype} {frames.shape}")
    n = frames.shape[0]
    actions = np.asarray(ctx.get("actions", np.zeros((n - 1, action_dim))), dtype=np.float32)
    proprio = ctx.get("proprio")
    return pad_window(frames, actions, None if proprio is None else np.asarray(proprio), n - 1, context, action_dim)


# ---------------------------------------------------------------------------------------------
# the core: N imagined rollouts, one batched model step
# ---------------------------------------------------------------------------------------------


class ImaginationCore:
    """Batched model state of N imagined episodes, their step counters and read-outs."""

    def __init__(self, model, num_envs: int = 1, obs_mode: str = "latent", task: str | None = None,
                 horizon: int | None = None, dataset=None, split: str = "heldout", start: str = "first",
                 env=None, max_episodes: int | None = None, device: str = "cpu"):
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode={obs_mode!r} is not one of {OBS_MODES}")
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {SPLITS}")
        if int(num_envs) < 1:
            raise ValueError(f"num_envs={num_envs} must be >= 1")
        self.model = load_world_model(model, task, device)
        self.run_dir = getattr(self.model, "run_dir", None)
        m = self.model
        self.task = str(getattr(m, "task", "") or task or "")
        if task and self.task and _canon(task) != _canon(self.task):
            raise UserError(f"model was trained for task {self.task!r}, not {task!r}")
        self.num_envs, self.obs_mode = int(num_envs), obs_mode
        self.context = context_length(m)  # frames per reset context (model.context, or the attention window)
        self.action_dim = int(m.action_dim)
        self.image_size = int(getattr(m, "image_size", 64))
        self.proprio_dim = int(getattr(m, "proprio_dim", 0) or 0)
        self.horizon = int(horizon) if horizon else task_horizon(self.task)
        if obs_mode == "pixels_proprio" and not has_head(m, "proprio"):
            raise ValueError(f"{type(m).__name__} has no proprio head, so obs_mode='pixels_proprio' is not "
                             "available; use 'pixels' or 'latent'")
        self._success_threshold = None if has_head(m, "success") else reward_success_threshold(self.task)
        self.has_success = has_head(m, "success") or self._success_threshold is not None

        # spaces
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        pixels = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        if obs_mode in VECTOR_OBS:
            probe = self._encode([self._blank_context()])
            self.latent_dim = int(vector_observation(m, probe, obs_mode).shape[1])
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.latent_dim,), np.float32)
        elif obs_mode == "pixels":
            self.observation_space = pixels
        else:
            proprio = gym.spaces.Box(-np.inf, np.inf, (max(self.proprio_dim, 1),), np.float32)
            self.observation_space = gym.spaces.Dict({"pixels": pixels, "proprio": proprio})

        # context source
        self._contexts = None
        self._dataset_args = (dataset, split, start, max_episodes)
        if env is not None:
            self._contexts = LiveEnvContexts(env, self.context, self.action_dim)
        self.state: dict[str, torch.Tensor] | None = None
        self.steps = np.zeros(self.num_envs, dtype=np.int64)

    # -- contexts ------------------------------------------------------------------------------
    def _blank_context(self):
        f = np.zeros((self.context, self.image_size, self.image_size, 3), np.uint8)
        p = np.zeros((self.context, self.proprio_dim), np.float32) if self.proprio_dim else None
        return f, np.zeros((self.context - 1, self.action_dim), np.float32), p

    def contexts(self):
        """The context source, loading the dataset on first use."""
        if self._contexts is None:
            dataset, split, start, max_episodes = self._dataset_args
            if dataset is None and self.run_dir is not None:
                dataset = dataset_path_of(self.run_dir)
            if dataset is None:
                raise UserError("no dataset to seed imagined episodes from: pass dataset=DIR, a live env=..., or "
                                "reset(options={'context': {...}}) (the run folder's config.json records none)")
            from embodied.data import Dataset

            ds = Dataset(Path(dataset), task=_canon(self.task) or None, max_episodes=max_episodes)
            episodes = ds.episodes if split == "all" else ds.split(split)
            self._contexts = DatasetContexts(episodes, self.context, self.action_dim, start)
        return self._contexts

    @torch.no_grad()
    def _encode(self, windows) -> dict[str, torch.Tensor]:
        frames = torch.from_numpy(np.stack([w[0] for w in windows]))
        actions = torch.from_numpy(np.stack([w[1] for w in windows]).astype(np.float32))
        proprio = None
        if all(w[2] is not None for w in windows) and self.proprio_dim:
            proprio = torch.from_numpy(np.stack([w[2] for w in windows]).astype(np.float32))
        return self.model.encode(frames, actions, proprio)

    # -- reset / step --------------------------------------------------------------------------
    def reset(self, idx, rngs, options: dict | None = None) -> None:
        """Re-seed the envs ``idx`` (each with its own generator in ``rngs``) in one batched encode."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if options and options.get("context") is not None:
            ctx = options["context"]
            windows = [_context_from_options(ctx, self.context, self.action_dim)] * len(idx)
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
        if has_head(self.model, "terminated"):
            terminated = self.model.terminated(self.state).cpu().numpy().astype(bool).reshape(self.num_envs)
        truncated = self.steps >= self.horizon
        return reward, terminated, truncated, self.success(reward)

    @torch.no_grad()
    def success(self, reward: np.ndarray | None = None) -> np.ndarray | None:
        if has_head(self.model, "success"):
            return self.model.success(self.state).cpu().numpy().astype(bool).reshape(self.num_envs)
        if self._success_threshold is not None:
            if reward is None:
                reward = self.model.reward(self.state).float().cpu().numpy()
            return np.asarray(reward) > self._success_threshold
        return None

    @torch.no_grad()
    def observe(self):
        """Batched observations of the current state (N, ...)."""
        if self.obs_mode in VECTOR_OBS:
            return vector_observation(self.model, self.state, self.obs_mode).cpu().numpy().astype(np.float32)
        pixels = self.model.decode(self.state).cpu().numpy().astype(np.uint8)
        if self.obs_mode == "pixels":
            return pixels
        proprio = self.model.proprio(self.state).float().cpu().numpy().astype(np.float32)
        return {"pixels": pixels, "proprio": proprio.reshape(self.num_envs, -1)}

    @torch.no_grad()
    def frames(self) -> np.ndarray:
        """Decoded frames of the current state (N, H, W, 3) uint8."""
        return self.model.decode(self.state).cpu().numpy().astype(np.uint8)


def _canon(task: str) -> str:
    try:
        from embodied.envs.registry import canonical_task

        return canonical_task(task)
    except ImportError:
        return task


def _index_obs(obs, i: int):
    if isinstance(obs, dict):
        return {k: v[i].copy() for k, v in obs.items()}
    return obs[i].copy()


# ---------------------------------------------------------------------------------------------
# the vector env (batched core + auto-reset) and the single env (batch 1)
# ---------------------------------------------------------------------------------------------


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
                 render_mode: str | None = None, device: str = "cpu"):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not supported: use 'rgb_array'")
        self.core = ImaginationCore(model, num_envs, obs_mode, task, horizon, dataset, split, start, env,
                                    max_episodes, device)
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
        return self._obs(), self._info(np.arange(self.num_envs))

    def step(self, actions):
        a = check_actions(actions, self.single_action_space, self.num_envs)
        if self.core.state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
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

    def _info(self, idx) -> dict:
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
                 max_episodes: int | None = None, render_mode: str | None = None, device: str = "cpu"):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not supported: use 'rgb_array'")
        self.core = ImaginationCore(model, 1, obs_mode, task, horizon, dataset, split, start, env, max_episodes, device)
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
        a = check_actions(action, self.action_space)[None]
        if self.core.state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
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


# ---------------------------------------------------------------------------------------------
# stable-baselines3: a VecEnv over the batched core
# ---------------------------------------------------------------------------------------------


def _sb3_vecenv_base():
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv

    return VecEnv


class SB3VecEnv(_sb3_vecenv_base()):
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
        seed = None if all(s is None for s in seeds) else [s for s in seeds]
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


# ---------------------------------------------------------------------------------------------
# the real env seen through the model: latent observations for a policy trained in imagination
# ---------------------------------------------------------------------------------------------


class LatentObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A real env (pixel or ``{"pixels", "proprio"}`` observations) whose observations are model latents.

    After each real step the model state is rebuilt from what the robot saw:
    ``model.observe(state, action, frames, proprio)`` (a one-step filter) when
    the model has it; otherwise ``model.encode`` of the real history since
    ``reset``. ``history="episode"`` (default) encodes the whole episode so far
    (the padded start, then every real frame and action: for a recurrent model
    this *is* the filter, the same path the imagined env takes from its padded
    context) capped at ``max_history`` frames; ``history="context"`` encodes
    only the last ``model.context`` frames (constant cost). Actions are
    validated and clipped before they are recorded, as the real env applies
    them. ``info["model_state"]`` is not added (states are batched tensors);
    read ``wrapper.state``. ``obs_mode="readout"`` gives ``model.readout(state)``
    instead of the latent, matching an imagined env built with the same mode.
    """

    def __init__(self, env: gym.Env, model, history: str = "episode", max_history: int = 64, device: str = "cpu",
                 obs_mode: str = "latent"):
        gym.utils.RecordConstructorArgs.__init__(self, model=model, history=history, max_history=max_history,
                                                 device=device, obs_mode=obs_mode)
        gym.Wrapper.__init__(self, env)
        if history not in ("episode", "context"):
            raise ValueError(f"history={history!r} is not 'episode' or 'context'")
        self.obs_mode = obs_mode  # validated by vector_observation on the probe below
        self.model = load_world_model(model, None, device)
        self.context = context_length(self.model)
        self.action_dim = int(self.model.action_dim)
        if env.action_space.shape != (self.action_dim,):
            raise ValueError(f"env actions have shape {env.action_space.shape} but the model takes ({self.action_dim},)")
        self.history = history
        maxlen = self.context if history == "context" else max(int(max_history), self.context)
        self._frames: deque = deque(maxlen=maxlen)
        self._proprio: deque = deque(maxlen=maxlen)
        self._actions: deque = deque(maxlen=maxlen - 1)
        self._use_observe = has_head(self.model, "observe")
        self.state: dict[str, torch.Tensor] | None = None
        size = int(getattr(self.model, "image_size", 64))
        pdim = int(getattr(self.model, "proprio_dim", 0) or 0)
        probe = self.model.encode(torch.zeros(1, self.context, size, size, 3, dtype=torch.uint8),
                                  torch.zeros(1, self.context - 1, self.action_dim),
                                  torch.zeros(1, self.context, pdim) if pdim else None)
        dim = int(vector_observation(self.model, probe, obs_mode).shape[1])
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    @torch.no_grad()
    def _encode_history(self):
        frames = np.stack(self._frames)
        actions = np.stack(self._actions) if self._actions else np.zeros((0, self.action_dim), np.float32)
        proprio = None if self._proprio[-1] is None else np.stack(self._proprio)
        p = None if proprio is None else torch.from_numpy(proprio.astype(np.float32))[None]
        return self.model.encode(torch.from_numpy(frames)[None], torch.from_numpy(actions.astype(np.float32))[None], p)

    @torch.no_grad()
    def _latent(self) -> np.ndarray:
        return vector_observation(self.model, self.state, self.obs_mode)[0].cpu().numpy().astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        pixels, proprio = split_obs(obs)
        for q in (self._frames, self._proprio, self._actions):
            q.clear()
        for _ in range(self.context):  # a robot at rest: the first frame repeated, zero actions
            self._frames.append(pixels)
            self._proprio.append(proprio)
        for _ in range(self.context - 1):
            self._actions.append(np.zeros(self.action_dim, np.float32))
        self.state = self._encode_history()
        info = dict(info)
        info["real_obs"] = obs
        return self._latent(), info

    def step(self, action):
        a = check_actions(action, self.env.action_space)
        obs, reward, terminated, truncated, info = self.env.step(a)
        pixels, proprio = split_obs(obs)
        self._frames.append(pixels)
        self._proprio.append(proprio)
        self._actions.append(a)
        with torch.no_grad():
            if self._use_observe:
                p = None if proprio is None else torch.from_numpy(proprio)[None]
                self.state = self.model.observe(self.state, torch.from_numpy(a)[None],
                                                torch.from_numpy(pixels)[None], p)
            else:
                self.state = self._encode_history()
        info = dict(info)
        info["real_obs"] = obs
        return self._latent(), reward, terminated, truncated, info
