"""The one action check every env and model applies: right shape, finite, clipped to the box."""
from __future__ import annotations

import gymnasium as gym
import numpy as np


def check_actions(actions, space: gym.spaces.Box, num_envs: int | None = None) -> np.ndarray:
    """One action (A,) or a batch (N, A) as float64, clipped to the box like the real task.

    A wrong shape or a NaN/inf is a ``ValueError`` that says what to pass;
    out-of-range values are clipped, as a robot's driver would.
    """
    try:
        a = np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"action of type {type(actions).__name__} is not numeric: pass "
                         f"{space.shape[0]} numbers per action") from None
    want = space.shape if num_envs is None else (num_envs, *space.shape)
    if a.shape != want:
        what = "one value per actuator" if num_envs is None else f"one row of {space.shape[0]} values per env"
        raise ValueError(f"action has shape {a.shape}, expected {want}: pass {what}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action {a.tolist()} contains NaN or inf: actions must be finite numbers in "
                         f"[{float(np.min(space.low)):g}, {float(np.max(space.high)):g}]")
    return np.clip(a, space.low, space.high)
