"""Push: a pusher moves a block onto a goal. The block moves only through contact."""
import numpy as np

from envs.mujoco_base import MujocoTaskEnv, ObjectSpec

SUCCESS_RADIUS = 0.05


def _sample_apart(rng, low, high, others, min_dist):
    """A uniform 2-D point at least min_dist from each point in others."""
    while True:
        p = rng.uniform(low, high, size=2)
        if all(np.linalg.norm(p - o) >= min_dist for o in others):
            return p


class PushEnv(MujocoTaskEnv):
    task_name = "push"
    xml_file = "push.xml"
    max_episode_steps = 60
    objects = (ObjectSpec("pusher", (25, 76, 255), actuated=True), ObjectSpec("block", (229, 0, 0)),
               ObjectSpec("goal", (0, 204, 0)))

    def _reset_task(self, rng):
        block = rng.uniform(-0.12, 0.12, size=2)
        goal = _sample_apart(rng, -0.2, 0.2, [block], 0.1)
        pusher = _sample_apart(rng, -0.25, 0.25, [block], 0.12)
        self.data.qpos[:] = np.concatenate([goal, block, pusher])

    def reward_from_sensors(self, sensordata):
        pusher = self.sensor(sensordata, "pusher_pos")[..., :2]
        block = self.sensor(sensordata, "block_pos")[..., :2]
        goal = self.sensor(sensordata, "goal_pos")[..., :2]
        block_goal = np.linalg.norm(block - goal, axis=-1)
        pusher_block = np.linalg.norm(pusher - block, axis=-1)
        return -block_goal - 0.2 * pusher_block, block_goal < SUCCESS_RADIUS

    def proprio(self):
        return np.concatenate([self.data.qpos[4:6], self.data.qvel[4:6]])
