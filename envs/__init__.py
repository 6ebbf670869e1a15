"""Gymnasium environments: MuJoCo ground-truth tasks, any Gymnasium MuJoCo env, imagined envs.

Importing this package registers ``embodied/Reach-v0``, ``embodied/Push-v0`` and
``embodied/Occlusion-v0``, and ``embodied/Imagined-v0`` (a world model as an env).
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym

from envs.registry import TASKS, make_task, task_id

for _name, _entry in TASKS.items():
    if task_id(_name) not in gym.registry:
        gym.register(task_id(_name), entry_point=_entry, max_episode_steps=None)
if "embodied/Imagined-v0" not in gym.registry:  # a world model as an env (envs/imagined.py)
    gym.register("embodied/Imagined-v0", entry_point="envs.imagined:ImaginedEnv",
                 vector_entry_point="envs.imagined:ImaginedVectorEnv", max_episode_steps=None)

__all__ = ["TASKS", "make_task", "task_id"]
