"""Evaluate a policy in an env: success rate, return, and a video of the first episodes.

``evaluate(env, act, episodes, seed)`` runs ``act(obs) -> action`` for
``episodes`` episodes (episode ``i`` reset with ``seed + i``) and scores them
the way the MPC loop does (:mod:`embodied.planners.mpc`): ``success_rate`` is the share of
episodes whose *last* step reports ``info["is_success"]`` (the task is solved
when the episode ends), ``success_any_rate`` the share that were solved at
some step. Works for the real task (usually through
:class:`embodied.envs.imagined.LatentObservation`, whose ``info["real_obs"]`` carries
the camera frame for the video) and for the imagined env alike.

Ground truth (``info["is_success"]``, rewards) is read only to score, never
handed to the policy.
"""
from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from embodied.io import write_video


def frame_of(env: gym.Env, obs, info: dict) -> np.ndarray | None:
    """The camera frame of a step: the real observation's pixels, else ``env.render()`` in rgb_array mode."""
    real = info.get("real_obs", obs)
    if isinstance(real, dict) and "pixels" in real:
        return np.asarray(real["pixels"])
    arr = np.asarray(real) if not isinstance(real, dict) else None
    if arr is not None and arr.dtype == np.uint8 and arr.ndim == 3:
        return arr
    if env.render_mode != "rgb_array":
        return None
    frame = env.render()
    return None if frame is None else np.asarray(frame)


def evaluate(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], episodes: int = 20, seed: int = 0,
             video: str | os.PathLike | None = None, video_episodes: int = 2, max_steps: int | None = None,
             progress: bool = False, desc: str = "evaluate") -> dict:
    """Run ``act`` for ``episodes`` episodes in ``env``; returns the metrics dict (see the module docstring)."""
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    bar = None
    if progress:
        bar = tqdm(total=episodes, unit="ep", desc=desc, file=sys.stderr)
    records, frames = [], []
    t0 = time.perf_counter()
    steps_total = 0
    try:
        for ep in range(episodes):
            obs, info = env.reset(seed=seed + ep)
            record = video is not None and ep < video_episodes
            if record:
                f = frame_of(env, obs, info)
                if f is not None:
                    frames.append(f)
            ret, steps, success, success_any = 0.0, 0, bool(info.get("is_success", False)), False
            while True:
                action = act(obs)
                obs, reward, terminated, truncated, info = env.step(action)
                ret += float(reward)
                steps += 1
                success = bool(info.get("is_success", False))
                success_any |= success
                if record:
                    f = frame_of(env, obs, info)
                    if f is not None:
                        frames.append(f)
                if terminated or truncated or (max_steps is not None and steps >= max_steps):
                    break
            steps_total += steps
            records.append({"episode": ep, "seed": seed + ep, "return": ret, "steps": steps,
                            "success": success, "success_any": success_any})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([r['success'] for r in records]):.0%}", ret=f"{ret:.2f}")
    finally:
        if bar is not None:
            bar.close()
    returns = np.array([r["return"] for r in records])
    out = {
        "episodes": len(records),
        "success_rate": float(np.mean([r["success"] for r in records])),
        "success_any_rate": float(np.mean([r["success_any"] for r in records])),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "steps": steps_total,
        "wall_s": time.perf_counter() - t0,
        "per_episode": records,
    }
    if video is not None:
        fps = int(env.metadata.get("render_fps", 20))
        path = write_video(Path(video), frames, fps=fps, scale=4)
        out["video"] = None if path is None else str(path)
    return out


def sb3_actor(policy, deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """``act(obs)`` of a stable-baselines3 model (deterministic by default)."""
    return lambda obs: policy.predict(obs, deterministic=deterministic)[0]


def random_actor(action_space, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """``act(obs)`` drawing uniform actions from a seeded copy of ``action_space``."""
    space = copy.deepcopy(action_space)
    space.seed(seed)
    return lambda obs: space.sample()
