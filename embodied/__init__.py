"""embodied: video world models as simulators, checked against MuJoCo.

Headless MuJoCo rendering needs EGL on machines without a display; set before
anything imports mujoco.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
