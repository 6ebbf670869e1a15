"""Gymnasium environments: MuJoCo ground-truth tasks, any Gymnasium MuJoCo env, imagined envs.

Importing this package registers ``embodied/Reach-v0``, ``embodied/Push-v0`` and
``embodied/Occlusion-v0``, and ``embodied/Imagined-v0`` (a world model as an env).
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym

from embodied.envs.registry import TASKS, make_task, register_task, task_id

if "embodied/Imagined-v0" not in gym.registry:  # a world model as an env (embodied/envs/imagined/)
    gym.register("embodied/Imagined-v0", entry_point="embodied.envs.imagined:ImaginedEnv",
                 vector_entry_point="embodied.envs.imagined:ImaginedVectorEnv", max_episode_steps=None)

__all__ = ["TASKS", "make_task", "register_task", "task_id"]
