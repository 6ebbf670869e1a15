"""Gymnasium environments: MuJoCo ground-truth tasks, any Gymnasium MuJoCo env, imagined envs.

Importing this package registers ``embodied/Reach-v0``, ``embodied/Push-v0`` and
``embodied/Occlusion-v0``.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym

from envs.registry import TASKS, make_task, task_id

for _name, _entry in TASKS.items():
    if task_id(_name) not in gym.registry:
        gym.register(task_id(_name), entry_point=_entry, max_episode_steps=None)

__all__ = ["TASKS", "make_task", "task_id"]
