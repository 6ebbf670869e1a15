"""The one place that maps task names to environments.

``make_task("push")`` builds our own MuJoCo task; ``make_task("Reacher-v5")``
wraps any registered Gymnasium MuJoCo env with pixel observations and the
same state/object abilities (see :mod:`embodied.envs.gym_mujoco`). A new task
is one file under ``embodied/envs/tasks/`` and one line in :data:`TASKS` (or a
:func:`register_task` call from the user's own code).
"""
from __future__ import annotations

import gymnasium as gym

from embodied.envs.mujoco_base import MujocoTaskEnv
from embodied.envs.tasks.occlusion import OcclusionEnv
from embodied.envs.tasks.push import PushEnv
from embodied.envs.tasks.reach import ReachEnv

TASKS: dict[str, type[MujocoTaskEnv]] = {}


def task_id(name: str) -> str:
    """Gymnasium id of one of our tasks: 'push' -> 'embodied/Push-v0'."""
    return f"embodied/{name.capitalize()}-v0"


def register_task(cls: type[MujocoTaskEnv]) -> type[MujocoTaskEnv]:
    """Make a task class known by its ``task_name`` here and to Gymnasium (as ``embodied/<Name>-v0``)."""
    if not cls.task_name:
        raise ValueError(f"{cls.__name__} has no task_name: set it to the name users will type")
    TASKS[cls.task_name] = cls
    if task_id(cls.task_name) not in gym.registry:
        gym.register(task_id(cls.task_name), entry_point=cls, max_episode_steps=None)
    return cls


for _cls in (ReachEnv, PushEnv, OcclusionEnv):
    register_task(_cls)


def canonical_task(name: str) -> str:
    """'Push', 'embodied/Push-v0' and 'push' all name the task 'push'; other ids pass through."""
    low = str(name).lower()
    for key in TASKS:
        if low in (key, task_id(key).lower()):
            return key
    return name


def task_class(name: str):
    """The class of a task (ours, or the Gymnasium MuJoCo adapter for any other registered id)."""
    key = canonical_task(name)
    if key in TASKS:
        return TASKS[key]
    if name not in gym.registry:
        known = ", ".join(list(TASKS) + ["any registered Gymnasium MuJoCo id such as Reacher-v5"])
        raise ValueError(f"unknown task {name!r}: use one of {known}")
    from embodied.envs.gym_mujoco import GymMujocoPixels

    return GymMujocoPixels


def make_task(name: str, obs_type: str = "pixels", width: int = 64, height: int = 64, **kwargs):
    """A ground-truth env by our task name or any registered Gymnasium MuJoCo id.

    Returns the unwrapped env object, which has get_state/set_state,
    reward_from_sensors and object positions in info["objects"]. ``kwargs`` go
    to the constructor: for a Gymnasium id e.g. ``min_episode_steps``,
    ``camera`` or the env's own keywords (see :class:`embodied.envs.gym_mujoco.GymMujocoPixels`).
    """
    key = canonical_task(name)
    cls = task_class(name)
    if key in TASKS:
        return cls(obs_type=obs_type, width=width, height=height, **kwargs)
    return cls(name, obs_type=obs_type, width=width, height=height, **kwargs)
