"""The one place that maps task names to environments.

``make_task("push")`` builds our own MuJoCo task; ``make_task("Reacher-v5")``
wraps any registered Gymnasium MuJoCo env with pixel observations and the
same state/object abilities (see :mod:`envs.gym_mujoco`).
"""
from __future__ import annotations

import gymnasium as gym

TASKS = {
    "reach": "envs.tasks.reach:ReachEnv",
    "push": "envs.tasks.push:PushEnv",
    "occlusion": "envs.tasks.occlusion:OcclusionEnv",
}


def task_id(name: str) -> str:
    """Gymnasium id of one of our tasks: 'push' -> 'embodied/Push-v0'."""
    return f"embodied/{name.capitalize()}-v0"


def canonical_task(name: str) -> str:
    """'Push', 'embodied/Push-v0' and 'push' all name the task 'push'; other ids pass through."""
    low = name.lower()
    for key in TASKS:
        if low in (key, task_id(key).lower()):
            return key
    return name


def make_task(name: str, obs_type: str = "pixels", width: int = 64, height: int = 64, **kwargs):
    """A ground-truth env by our task name or any registered Gymnasium MuJoCo id.

    Returns the unwrapped env object, which has get_state/set_state,
    reward_from_sensors and object positions in info["objects"].
    """
    import envs  # noqa: F401  (registers our ids)

    key = canonical_task(name)
    if key in TASKS:
        return gym.make(task_id(key), obs_type=obs_type, width=width, height=height, **kwargs).unwrapped
    if name not in gym.registry:
        known = ", ".join(list(TASKS) + ["any registered Gymnasium MuJoCo id such as Reacher-v5"])
        raise ValueError(f"unknown task {name!r}: use one of {known}")
    from envs.gym_mujoco import GymMujocoPixels

    return GymMujocoPixels(name, obs_type=obs_type, width=width, height=height, **kwargs)
