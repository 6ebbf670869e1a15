"""Reach: a planar two-link arm brings its fingertip to a target."""
import math

import numpy as np

from embodied.envs.mujoco_base import MujocoTaskEnv, ObjectSpec
from embodied.envs.factors import floor_and_light_factors

SUCCESS_RADIUS = 0.04
LINKS = (0.14, 0.12)  # upper arm and forearm lengths in reach.xml


class ReachEnv(MujocoTaskEnv):
    task_name = "reach"
    xml_file = "reach.xml"
    max_episode_steps = 50
    objects = (ObjectSpec("fingertip", (229, 0, 0), actuated=True), ObjectSpec("target", (0, 204, 0)))
    reward_success_margin = SUCCESS_RADIUS  # reward = -distance(fingertip, target)
    # reach: no free object, nothing to hide: frames, the arm, and rankings
    probes = {"fidelity": {}, "controllability": {}, "planning_fidelity": {}}
    # interventions (--fov name=value): "train" near the data's defaults, "test" out of range
    factors = {
        "arm_gain": {"what": "gain of both joint velocity servos (x; 1: 2.5 rad/s at full action)", "default": 1.0,
                     "train": [0.85, 1.15], "test": [0.5, 1.6], "apply": ("gain",)},
        "link_colour": {"what": "hue of the forearm turned by this many degrees (0: blue; 60: purple, 315: cyan)",
                        "default": 0.0, "train": [-10.0, 10.0], "test": [60.0, 315.0], "apply": ("hue", "link2")},
        **floor_and_light_factors(),
    }

    def _reset_task(self, rng):
        qpos = self.data.qpos
        radius, angle = rng.uniform(0.08, 0.24), rng.uniform(-np.pi, np.pi)
        qpos[0:2] = radius * np.cos(angle), radius * np.sin(angle)
        qpos[2] = rng.uniform(-np.pi, np.pi)
        qpos[3] = rng.uniform(-2.4, 2.4)

    def reward_from_sensors(self, sensordata):
        tip = self.sensor(sensordata, "fingertip_pos")[..., :2]
        target = self.sensor(sensordata, "target_pos")[..., :2]
        dist = np.linalg.norm(tip - target, axis=-1)
        return -dist, dist < SUCCESS_RADIUS

    def proprio(self):
        """[sin, cos] of the shoulder (it turns without limit), the elbow angle, both joint velocities."""
        shoulder, elbow = self.data.qpos[2:4]
        return np.concatenate([[np.sin(shoulder), np.cos(shoulder), elbow], self.data.qvel[2:4]])

    def expert(self, objects=None, proprio=None) -> np.ndarray:
        """Joint velocities that move the fingertip straight at the target (Jacobian transpose-inverse).

        With a state estimate, the joint angles come from ``proprio`` ([sin, cos] shoulder, elbow, ...).
        """
        if objects is not None and proprio is None:
            raise ValueError("the reach expert needs the arm's proprio with object positions (a model with a "
                             "proprio head)")
        q1, q2 = self.data.qpos[2:4] if proprio is None else (np.arctan2(proprio[0], proprio[1]), proprio[2])
        l1, l2 = LINKS
        jac = np.array([[-l1 * np.sin(q1) - l2 * np.sin(q1 + q2), -l2 * np.sin(q1 + q2)],
                        [l1 * np.cos(q1) + l2 * np.cos(q1 + q2), l2 * np.cos(q1 + q2)]])
        objs = self.object_positions() if objects is None else objects
        delta = objs["target"][:2] - objs["fingertip"][:2]
        dq = np.linalg.solve(jac.T @ jac + 1e-3 * np.eye(2), jac.T @ (8.0 * delta))
        return np.clip(dq / 2.5, -1.0, 1.0)

    def goal_qpos(self) -> np.ndarray:
        """Arm joints that put the fingertip on the target (two-link inverse kinematics)."""
        qpos = self.data.qpos.copy()
        l1, l2 = LINKS
        x, y = qpos[0:2]
        d2 = x * x + y * y
        c2 = np.clip((d2 - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0, 1.0)
        q2 = math.copysign(math.acos(c2), qpos[3] if qpos[3] != 0 else 1.0)
        q1 = math.atan2(y, x) - math.atan2(l2 * math.sin(q2), l1 + l2 * math.cos(q2))
        qpos[2], qpos[3] = q1, q2
        return qpos
