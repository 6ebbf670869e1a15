"""Occlusion: a ball rolls under an opaque occluder and out the other side.

The persistence test bed: the ball is hidden for several steps while it keeps
moving; a yellow box stands still unless something pushes it; the agent drives
a pusher whose reward is to stay close to the ball.
"""
import numpy as np

from embodied.envs.mujoco_base import MujocoTaskEnv, ObjectSpec
from embodied.envs.factors import floor_and_light_factors
from embodied.envs.tasks.explore import contact_explorer, path_blocker

SUCCESS_RADIUS = 0.08
OCCLUDER_HALF_WIDTH = 0.09
BALL_RADIUS = 0.035


class _IsHidden:
    """``is_hidden(xy)`` on the class (the occluder as built) and on an env (its own, which a factor may widen)."""

    def __get__(self, env, cls):
        half = (env if env is not None else cls).occluder_half_width

        def is_hidden(xy) -> np.ndarray:
            """Whether a ball at world xy is wholly under the occluder."""
            return np.abs(np.asarray(xy)[..., 0]) < half - BALL_RADIUS

        return is_hidden


class OcclusionEnv(MujocoTaskEnv):
    task_name = "occlusion"
    xml_file = "occlusion.xml"
    max_episode_steps = 60
    objects = (ObjectSpec("pusher", (25, 76, 255), actuated=True), ObjectSpec("ball", (229, 0, 0)),
               ObjectSpec("still", (242, 216, 0)))
    occluder_half_width = OCCLUDER_HALF_WIDTH
    # ball and pusher pass under the occluder; the still box moves only if pushed
    probes = {"fidelity": {}, "controllability": {}, "planning_fidelity": {},
              "persistence": {"movers": ("ball", "pusher"), "still": "still"},
              "causality": {"object": "still", "pusher": "pusher", "keep_clear": ("ball",)}}
    # interventions (--fov name=value): "train" near the data's defaults, "test" out of range
    factors = {
        "ball_damping": {"what": "viscous damping of the ball's rolling (N s/m; 0.3 stops it within an episode)",
                         "default": 0.02, "train": [0.0, 0.05], "test": [0.3, 0.6],
                         "apply": ("damping", "ball_x", "ball_y")},
        "occluder_width": {"what": "full width of the occluder (m)", "default": 2 * OCCLUDER_HALF_WIDTH,
                           "train": [0.16, 0.2], "test": [0.1, 0.24], "apply": ("occluder", "occluder")},
        "ball_colour": {"what": "hue of the ball turned by this many degrees (0: red; 120: green, 300: magenta)",
                        "default": 0.0, "train": [-10.0, 10.0], "test": [120.0, 300.0], "apply": ("hue", "ball")},
        **floor_and_light_factors(),
    }

    def _reset_task(self, rng):
        side = rng.choice([-1.0, 1.0])
        ball = np.array([side * rng.uniform(0.17, 0.24), rng.uniform(-0.2, 0.2)])
        ball_vel = np.array([-side * rng.uniform(0.3, 0.5), rng.uniform(-0.1, 0.1)])
        while True:
            still = rng.uniform(-0.22, 0.22, size=2)
            if abs(still[1] - ball[1]) > 0.1:
                break
        while True:
            pusher = rng.uniform(-0.25, 0.25, size=2)
            if np.linalg.norm(pusher - ball) > 0.12 and np.linalg.norm(pusher - still) > 0.1:
                break
        self.data.qpos[:] = np.concatenate([ball, still, pusher])
        self.data.qvel[0:2] = ball_vel

    def reward_from_sensors(self, sensordata):
        pusher = self.sensor(sensordata, "pusher_pos")[..., :2]
        ball = self.sensor(sensordata, "ball_pos")[..., :2]
        dist = np.linalg.norm(pusher - ball, axis=-1)
        return -dist, dist < SUCCESS_RADIUS

    def proprio(self):
        return np.concatenate([self.data.qpos[4:6], self.data.qvel[4:6]])

    def expert(self, objects=None, proprio=None) -> np.ndarray:
        """Chase the ball, wherever it is (the expert sees it even under the occluder)."""
        objs = self.object_positions() if objects is None else objects
        return np.clip(10.0 * (objs["ball"][:2] - objs["pusher"][:2]), -1.0, 1.0)

    def explorer(self, rng: np.random.Generator):
        """Half the episodes push, graze or miss the still box from any angle (:func:`contact_explorer`): the
        rolling ball and the chasing expert seldom touch it, and a model learns that it moves only when pushed.
        The other half stand in the ball's path and stay still (:func:`path_blocker`): the ball bounces off a
        pusher at rest and rolls on, which neither the chasing expert nor the box pushes show."""
        if rng.random() < 0.5:
            return contact_explorer(self, rng, "still")
        return path_blocker(self, rng, "ball")

    is_hidden = _IsHidden()  # is_hidden(xy): whether a ball at world xy is wholly under the occluder
