"""Push: a pusher moves a block onto a goal. The block moves only through contact."""
import numpy as np

from embodied.envs.mujoco_base import MujocoTaskEnv, ObjectSpec
from embodied.envs.factors import floor_and_light_factors
from embodied.envs.tasks.explore import contact_explorer, toward

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
    # A longer look-ahead than the default, measured with the MuJoCo oracle: the pusher covers 2.5 cm per
    # step and must often go round the block, and a block pushed past the goal into the wall cannot be
    # pulled back; at horizon 12 the oracle solved 7/10 episodes (seeds 0-9), at 20-24 the failures
    # recover. Fewer samples keep the cost per action about the same (5,760 imagined steps).
    planner_defaults = {"horizon": 20, "samples": 96, "elites": 10}
    # the block moves only through contact
    probes = {"fidelity": {}, "controllability": {}, "planning_fidelity": {},
              "causality": {"object": "block", "pusher": "pusher"}}
    # interventions (embodied collect / validate / plan --fov name=value); "train": values near the data's
    # defaults, "test": out of range. The pusher is a stiff velocity servo, so the block's mass and dry friction
    # show in how fast it starts and stops more than in where a long push takes it.
    factors = {
        "block_mass": {"what": "mass of the block (kg)", "default": 0.3, "train": [0.2, 0.45], "test": [0.1, 3.0],
                       "apply": ("mass", "block")},
        "block_friction": {"what": "dry friction of the block on the table (N, its slide joints' frictionloss)",
                           "default": 0.3, "train": [0.2, 0.45], "test": [0.05, 1.5],
                           "apply": ("frictionloss", "block_x", "block_y")},
        "pusher_gain": {"what": "gain of the pusher's velocity servos (x; 1: 0.5 m/s at full action)",
                        "default": 1.0, "train": [0.85, 1.15], "test": [0.5, 1.6], "apply": ("gain",)},
        "block_size": {"what": "half width of the block (m)", "default": 0.05, "train": [0.045, 0.055],
                       "test": [0.035, 0.07], "apply": ("half_width", "block")},
        "block_colour": {"what": "hue of the block turned by this many degrees (0: red; 50: yellow, 300: magenta)",
                         "default": 0.0, "train": [-10.0, 10.0], "test": [50.0, 300.0], "apply": ("hue", "block")},
        **floor_and_light_factors(),
    }

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

    def expert(self, objects=None, proprio=None) -> np.ndarray:
        """Go behind the block (as seen from the goal), then push it toward the goal."""
        objs = self.object_positions() if objects is None else objects
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
                return toward(normal * 0.1 - direction * 0.05, 12.0)
            return toward(to_behind, 12.0)
        return toward(direction * 0.1 + 0.5 * to_behind, 10.0)

    def explorer(self, rng: np.random.Generator):
        """Pushes, grazes and misses of the block from any angle (:func:`contact_explorer`)."""
        return contact_explorer(self, rng, "block")

    def goal_qpos(self) -> np.ndarray:
        """Block on the goal, pusher behind it as after a straight push."""
        qpos = self.data.qpos.copy()
        goal, block = qpos[0:2].copy(), qpos[2:4].copy()
        direction = goal - block
        direction /= max(np.linalg.norm(direction), 1e-9)
        qpos[2:4] = goal
        qpos[4:6] = np.clip(goal - 0.095 * direction, -0.27, 0.27)
        return qpos
