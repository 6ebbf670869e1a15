"""Scripted experts for data collection, and the random / mixed collecting policies.

Experts read the true simulator state (they exist to make data, never to be
evaluated against a world model). Each adds temporally correlated noise so
datasets hold successes and failures, contacts and misses.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Policy = Callable[[dict], np.ndarray]  # info dict -> action

COLLECT_POLICIES = ("random", "scripted", "mixed")


def _toward(delta: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(gain * delta, -1.0, 1.0)


def reach_expert(env) -> np.ndarray:
    """Joint velocities that move the fingertip straight at the target (Jacobian transpose-inverse)."""
    q1, q2 = env.data.qpos[2:4]
    l1, l2 = 0.14, 0.12
    jac = np.array([[-l1 * np.sin(q1) - l2 * np.sin(q1 + q2), -l2 * np.sin(q1 + q2)],
                    [l1 * np.cos(q1) + l2 * np.cos(q1 + q2), l2 * np.cos(q1 + q2)]])
    objs = env.object_positions()
    delta = objs["target"][:2] - objs["fingertip"][:2]
    dq = np.linalg.solve(jac.T @ jac + 1e-3 * np.eye(2), jac.T @ (8.0 * delta))
    return np.clip(dq / 2.5, -1.0, 1.0)


def push_expert(env) -> np.ndarray:
    """Go behind the block (as seen from the goal), then push it toward the goal."""
    objs = env.object_positions()
    pusher, block, goal = objs["pusher"][:2], objs["block"][:2], objs["goal"][:2]
    direction = goal - block
    direction /= np.linalg.norm(direction) + 1e-9
    behind = block - direction * 0.1
    to_behind = behind - pusher
    side = np.dot(pusher - block, direction)
    if np.linalg.norm(to_behind) > 0.03:
        if side > -0.05 and np.linalg.norm(pusher - block) < 0.12:
            # on the wrong side and close: step sideways around the block first
            normal = np.array([-direction[1], direction[0]])
            normal *= np.sign(np.dot(pusher - block, normal)) or 1.0
            return _toward(normal * 0.1 - direction * 0.05, 12.0)
        return _toward(to_behind, 12.0)
    return _toward(direction * 0.1 + 0.5 * to_behind, 10.0)


def occlusion_expert(env) -> np.ndarray:
    """Chase the ball, wherever it is (the expert sees it even under the occluder)."""
    objs = env.object_positions()
    return _toward(objs["ball"][:2] - objs["pusher"][:2], 10.0)


EXPERTS = {"reach": reach_expert, "push": push_expert, "occlusion": occlusion_expert}


def make_policy(name: str, env, rng: np.random.Generator) -> tuple[Callable[[], np.ndarray], str]:
    """A collecting policy for one episode; returns (act(), label of what it actually is).

    ``random``: uniform actions. ``scripted``: the task's expert with correlated
    noise of a random scale. ``mixed``: 15% uniform random, 15% smooth random
    (slowly varying, often saturated actions: the kind of sequence a sampling
    planner such as iCEM proposes, which uniform noise averages away), the rest
    scripted. Tasks without an expert (any Gymnasium env) fall back to random.
    """
    if name not in COLLECT_POLICIES:
        raise ValueError(f"unknown policy {name!r}: use one of {', '.join(COLLECT_POLICIES)}")
    expert = EXPERTS.get(getattr(env, "task_name", ""))
    shape = env.action_space.shape
    if name == "mixed":
        u = rng.random()
        name = "random" if u < 0.15 else "smooth" if u < 0.3 else "scripted"
    if name == "random" or expert is None:
        return (lambda: rng.uniform(-1.0, 1.0, size=shape)), "random"
    if name == "smooth":
        drift = rng.uniform(-1.0, 1.0, size=shape)

        def act_smooth() -> np.ndarray:
            drift[:] = 0.9 * drift + 0.45 * rng.standard_normal(shape)
            return np.clip(1.5 * drift, -1.0, 1.0)

        return act_smooth, "random-smooth"
    scale = rng.uniform(0.1, 0.8)
    noise = np.zeros(shape)

    def act() -> np.ndarray:
        noise[:] = 0.8 * noise + 0.6 * scale * rng.standard_normal(shape)
        return np.clip(expert(env) + noise, -1.0, 1.0)

    return act, f"scripted(noise={scale:.2f})"
