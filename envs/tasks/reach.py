"""Reach: a planar two-link arm brings its fingertip to a target."""
import numpy as np

from envs.mujoco_base import MujocoTaskEnv, ObjectSpec

SUCCESS_RADIUS = 0.04


class ReachEnv(MujocoTaskEnv):
    task_name = "reach"
    xml_file = "reach.xml"
    max_episode_steps = 50
    objects = (ObjectSpec("fingertip", (229, 0, 0), actuated=True), ObjectSpec("target", (0, 204, 0)))

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
