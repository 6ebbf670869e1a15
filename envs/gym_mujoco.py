"""Any registered Gymnasium MuJoCo env with fast pixel observations and the task abilities.

``GymMujocoPixels("Reacher-v5")`` wraps the env built by ``gymnasium.make`` and
gives it the same surface as our own tasks (:class:`embodied.envs.mujoco_base.MujocoTaskEnv`):

* pixel observations (uint8 HWC, 64x64 by default) rendered by our own
  :class:`~embodied.envs.mujoco_base.MujocoRenderer` (shadows, reflections and
  multisampling off) from a fixed camera: the env's own default camera
  config applied to a free camera that looks at the model's centre, as
  Gymnasium's viewer does, or a camera passed in ``camera=``;
* ``obs_type="state"`` returns the wrapped env's own observation vector and
  ``"pixels_proprio"`` a dict of pixels and the qpos/qvel of the actuated joints;
* ``get_state`` / ``set_state``: the exact MuJoCo state round trip
  (:func:`embodied.envs.mujoco_base.get_sim_state`), replays are bit for bit;
* ``info["objects"]``: world xyz of every named body except the world body;
  ``info["is_success"]`` is whatever the env reports, else False;
* truncation at the registered ``max_episode_steps``.

Actions are normalised here, once, for every command: the action space is
``Box(-1, 1)`` (float32); an action is validated and clipped by
``check_actions``, then mapped linearly onto the wrapped env's own bounds by
:meth:`GymMujocoPixels.action_to_ctrl` (``Pusher-v5``'s [-2, 2]: +1 drives
an actuator at 2). So collected, planned and policy actions are in [-1, 1]
for every task. Actuators without a finite range are refused.

Terminating envs (``InvertedDoublePendulum-v5``...) report ``terminated`` as
Gymnasium does; the physics runs on if the caller steps on. Random actions
end their episodes within a few steps, too short to train on, so the task
spec carries ``min_episode_steps`` (50, or the episode limit if shorter):
``collect`` steps on past a termination until the episode holds that many
steps, storing each step's flag as reported. The data stay honest (real
physics after the failure, marked, with the env's own reward) and need no
task-specific stabilising policy; planning and evaluation still end an
episode at its termination.

Differences from our tasks, on purpose:

* ``reward_from_sensors`` raises a ``ValueError``: Gymnasium rewards
  depend on the action and on quantities that are not sensors, so the
  reward comes only from ``step`` (the batched MuJoCo oracle cannot score
  wrapped envs by sensors);
* ``world_to_pixel`` projects through the (generally perspective) camera;
  ``ObjectSpec.rgb`` is the body's nominal geom colour (lit and shaded in the
  frame, so not a flat colour to search for) or (0, 0, 0) when unknown;
* after each inner step the derived quantities (body positions, sensors)
  are recomputed with ``mj_forward`` and the observation with the env's
  ``_get_obs``, so observation, frame and objects are all functions of
  ``get_state()``. Plain Gymnasium reports the body positions of the start of
  the last physics substep instead; physics (qpos, qvel, warm start) and the
  reward are untouched, so trajectories are the same.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np

from embodied.envs.actions import check_actions
from embodied.envs.mujoco_base import (CameraRendering, MujocoRenderer, ObjectSpec, check_frame_size,
                                       check_obs_options, get_sim_state, set_sim_state)

_QPOS_SIZE = {int(mujoco.mjtJoint.mjJNT_FREE): 7, int(mujoco.mjtJoint.mjJNT_BALL): 4,
              int(mujoco.mjtJoint.mjJNT_SLIDE): 1, int(mujoco.mjtJoint.mjJNT_HINGE): 1}
_DOF_SIZE = {int(mujoco.mjtJoint.mjJNT_FREE): 6, int(mujoco.mjtJoint.mjJNT_BALL): 3,
             int(mujoco.mjtJoint.mjJNT_SLIDE): 1, int(mujoco.mjtJoint.mjJNT_HINGE): 1}


def actuated_joints(model: mujoco.MjModel) -> list[int]:
    """Ids of the joints driven by an actuator, directly or through a tendon, in id order."""
    joints: set[int] = set()
    for i in range(model.nu):
        trntype, target = int(model.actuator_trntype[i]), int(model.actuator_trnid[i, 0])
        if trntype in (mujoco.mjtTrn.mjTRN_JOINT, mujoco.mjtTrn.mjTRN_JOINTINPARENT):
            joints.add(target)
        elif trntype == mujoco.mjtTrn.mjTRN_TENDON:
            adr, num = model.tendon_adr[target], model.tendon_num[target]
            for w in range(adr, adr + num):
                if model.wrap_type[w] == mujoco.mjtWrap.mjWRAP_JOINT:
                    joints.add(int(model.wrap_objid[w]))
    return sorted(joints)


DEFAULT_MIN_EPISODE_STEPS = 50


def _count(key: str, value, minimum: int) -> int:
    """``value`` as an int; a one-line ``ValueError`` naming ``key`` unless it is a whole number >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{key}={value!r} must be a whole number >= {minimum}")
    return int(value)


def _ctrl_bounds(inner, env_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float64 of the wrapped env's action box; a ``ValueError`` unless every range is finite."""
    space = inner.action_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise ValueError(f"{env_id!r} has action space {space}, not a vector Box: GymMujocoPixels wraps envs "
                         "driven by one value per actuator")
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    bad = ~(np.isfinite(low) & np.isfinite(high) & (high > low))
    if bad.any():
        i = int(np.argmax(bad))
        name = inner.model.actuator(i).name if space.shape[0] == inner.model.nu else ""
        raise ValueError(f"{env_id!r}: actuator {i}{f' ({name})' if name else ''} has no finite control range "
                         f"([{low[i]:g}, {high[i]:g}]) to map actions in [-1, 1] onto: set ctrllimited and a "
                         "ctrlrange in its model")
    return low, high


def _check_camera(model: mujoco.MjModel, camera, env_id: str) -> None:
    """A ``ValueError`` unless ``camera`` is None, an MjvCamera, or a camera name or id of ``model``."""
    names = [model.camera(i).name for i in range(model.ncam)]
    if (camera is None or isinstance(camera, mujoco.MjvCamera) or (isinstance(camera, str) and camera in names)
            or (isinstance(camera, (int, np.integer)) and not isinstance(camera, bool) and -1 <= camera < model.ncam)):
        return
    choices = f"one of {names} (ids 0 to {model.ncam - 1}), " if names else ""
    raise ValueError(f"camera={camera!r} is not a camera of {env_id}: use {choices}a mujoco.MjvCamera, "
                     "or None for the default view")


def default_camera(model: mujoco.MjModel, cam_config: dict | None = None) -> mujoco.MjvCamera:
    """The camera Gymnasium's offscreen viewer would use, fixed at the model's initial pose.

    A free camera looking at the median geom position of the initial state from
    ``model.stat.extent`` away, then the env's ``default_camera_config`` applied
    (keys are MjvCamera attributes; a ``trackbodyid`` has no effect on a free
    camera, exactly as in Gymnasium).
    """
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.fixedcamid = -1
    cam.lookat[:] = np.median(data.geom_xpos, axis=0) if model.ngeom else model.stat.center
    cam.distance = model.stat.extent
    for key, value in (cam_config or {}).items():
        if isinstance(value, np.ndarray) or isinstance(value, (list, tuple)):
            getattr(cam, key)[:] = value
        else:
            setattr(cam, key, value)
    return cam


class GymMujocoPixels(CameraRendering, gym.Env):
    """A registered Gymnasium MuJoCo env with pixel observations, state round trip and objects.

    Args:
        env_id: a registered Gymnasium id whose env is a MuJoCo env (``Reacher-v5``...).
        obs_type: ``"pixels"``, ``"state"`` (the wrapped env's observation) or
            ``"pixels_proprio"`` (dict: pixels, qpos/qvel of the actuated joints).
        width, height: frame size.
        render_mode: ``"rgb_array"`` or None.
        camera: optional camera name, id or ``mujoco.MjvCamera``; default: see :func:`default_camera`.
        max_episode_steps: override the spec's limit (None: the spec's, which may itself be None).
        min_episode_steps: the fewest steps ``collect`` records per episode, stepping on past a
            termination (None: 50, or the episode limit if shorter; 0: stop at the termination).
        **env_kwargs: passed to ``gymnasium.make`` (e.g. reward weights).
    """

    # the task spec of a wrapped env: no expert, no goal image, generic probes only (its reward is computed
    # in step(), so the oracle has no batched reward for planning fidelity, and it has no occluder or
    # designated free object)
    reward_success_margin = None
    occluder_half_width = 0.0
    planner_defaults: dict = {}
    probes: dict = {"fidelity": {}, "controllability": {}}

    def expert(self) -> None:
        """No scripted expert: collection falls back to random actions."""
        return None

    def explorer(self, rng) -> None:
        """No task-specific collecting policy."""
        return None

    def goal_qpos(self) -> None:
        """No goal image."""
        return None

    def goal_observation(self):
        """No goal image: planning uses the reward objective."""
        raise ValueError(f"task {self.task_name!r} defines no goal image: use the reward objective")

    def __init__(self, env_id: str, obs_type: str = "pixels", width: int = 64, height: int = 64,
                 render_mode: str | None = "rgb_array", camera=None, max_episode_steps: int | None = None,
                 min_episode_steps: int | None = None, **env_kwargs):
        check_obs_options(obs_type, render_mode)
        self.width, self.height = check_frame_size(width, height)
        if env_id not in gym.registry:
            raise ValueError(f"{env_id!r} is not a registered Gymnasium id (e.g. 'Reacher-v5')")
        spec = gym.spec(env_id)
        if max_episode_steps is not None:
            max_episode_steps = _count("max_episode_steps", max_episode_steps, 1)
        self.max_episode_steps = spec.max_episode_steps if max_episode_steps is None else max_episode_steps
        default_min = min(DEFAULT_MIN_EPISODE_STEPS, self.max_episode_steps or DEFAULT_MIN_EPISODE_STEPS)
        self.min_episode_steps = (default_min if min_episode_steps is None
                                  else _count("min_episode_steps", min_episode_steps, 0))
        inner = gym.make(env_id, **env_kwargs).unwrapped
        try:
            if not (isinstance(getattr(inner, "model", None), mujoco.MjModel)
                    and isinstance(getattr(inner, "data", None), mujoco.MjData)):
                raise ValueError(f"{env_id!r} is not a MuJoCo env (it has no mujoco model/data): "
                                 "GymMujocoPixels wraps Gymnasium MuJoCo envs such as Reacher-v5")
            self._ctrl_low, self._ctrl_high = _ctrl_bounds(inner, env_id)
            _check_camera(inner.model, camera, env_id)
        except ValueError:
            inner.close()
            raise
        self._ctrl_mid = (self._ctrl_high + self._ctrl_low) / 2
        self._ctrl_half = (self._ctrl_high - self._ctrl_low) / 2
        self._env = inner
        self.task_name = env_id
        self.spec_id = env_id
        self.obs_type, self.render_mode = obs_type, render_mode
        self.model: mujoco.MjModel = inner.model
        self.data: mujoco.MjData = inner.data
        self.frame_skip = int(getattr(inner, "frame_skip", 1))
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": inner.metadata.get("render_fps", 20)}
        # multisampling costs a lot on a CPU and blurs colours; it only affects rendering
        self.model.vis.quality.offsamples = 0

        if camera is None:
            renderer = getattr(inner, "mujoco_renderer", None)
            cam_id = getattr(renderer, "camera_id", None)
            if cam_id is not None and cam_id >= 0:
                camera = int(cam_id)
            else:
                camera = default_camera(self.model, getattr(renderer, "default_cam_config", None))
        self.camera = camera
        self._renderer: MujocoRenderer | None = None
        self._steps = 0

        joints = actuated_joints(self.model)
        self._proprio_qpos = np.array([a for j in joints for a in range(
            self.model.jnt_qposadr[j], self.model.jnt_qposadr[j] + _QPOS_SIZE[int(self.model.jnt_type[j])])], dtype=int)
        self._proprio_qvel = np.array([a for j in joints for a in range(
            self.model.jnt_dofadr[j], self.model.jnt_dofadr[j] + _DOF_SIZE[int(self.model.jnt_type[j])])], dtype=int)
        ancestors_actuated = np.zeros(self.model.nbody, dtype=bool)
        for b in range(1, self.model.nbody):  # parents come before children
            own = any(self.model.jnt_bodyid[j] == b for j in joints)
            ancestors_actuated[b] = own or ancestors_actuated[self.model.body_parentid[b]]
        self._bodies = [b for b in range(1, self.model.nbody) if self.model.body(b).name]
        self.objects = tuple(ObjectSpec(self.model.body(b).name, self._body_rgb(b), bool(ancestors_actuated[b]))
                             for b in self._bodies)

        self.action_space = gym.spaces.Box(-1.0, 1.0, self._ctrl_low.shape, np.float32)
        pixels = gym.spaces.Box(0, 255, (self.height, self.width, 3), np.uint8)
        proprio = gym.spaces.Box(-np.inf, np.inf, (len(self._proprio_qpos) + len(self._proprio_qvel),), np.float32)
        self.proprio_space = proprio
        self.observation_space = {"pixels": pixels, "state": inner.observation_space,
                                  "pixels_proprio": gym.spaces.Dict({"pixels": pixels, "proprio": proprio})}[obs_type]
        self._last_inner_obs = None

    # ---- helpers ---------------------------------------------------------------
    def _body_rgb(self, body: int) -> tuple[int, int, int]:
        """Nominal colour of a body's first plain (untextured) geom, else (0, 0, 0)."""
        geoms = [g for g in range(self.model.ngeom) if self.model.geom_bodyid[g] == body]
        for g in geoms:
            if self.model.geom_matid[g] < 0 and self.model.geom_rgba[g, 3] > 0:
                return tuple(int(round(255 * c)) for c in self.model.geom_rgba[g, :3])
        return (0, 0, 0)

    def proprio(self) -> np.ndarray:
        """qpos and qvel of the actuated joints (the robot's own sensing), float64."""
        return np.concatenate([self.data.qpos[self._proprio_qpos], self.data.qvel[self._proprio_qvel]])

    def reward_from_sensors(self, sensordata):
        """Not available: a ``ValueError`` that says what to use instead."""
        raise ValueError(f"{self.task_name}: a Gymnasium env computes its reward in step() from the action and "
                         "non-sensor quantities, so nothing can score it from sensor data (the MuJoCo oracle "
                         "cannot plan it): use a trained model (--model RUN_DIR)")

    def object_positions(self) -> dict[str, np.ndarray]:
        """World xyz of each named body (the world body excluded)."""
        return {self.model.body(b).name: self.data.xpos[b].copy() for b in self._bodies}

    def _refresh(self) -> None:
        """Recompute derived quantities (positions, sensors, contact forces) for the current state."""
        mujoco.mj_forward(self.model, self.data)
        mujoco.mj_rnePostConstraint(self.model, self.data)

    def _inner_obs(self, fallback=None):
        get_obs = getattr(self._env, "_get_obs", None)
        self._last_inner_obs = get_obs() if callable(get_obs) else fallback
        return self._last_inner_obs

    def _obs(self):
        if self.obs_type == "state":
            return self._last_inner_obs
        pixels = self.render_frame()
        if self.obs_type == "pixels":
            return pixels
        return {"pixels": pixels, "proprio": self.proprio().astype(np.float32)}

    def _info(self, inner_info: dict | None = None) -> dict:
        info = dict(inner_info or {})
        info["is_success"] = bool(info.get("is_success", info.get("success", False)))
        info["objects"] = self.object_positions()
        info["proprio"] = self.proprio().astype(np.float32)
        return info

    # ---- gymnasium API ---------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self._env.reset(seed=seed, options=options)
        self._refresh()
        self._inner_obs(obs)
        self._steps = 0
        return self._obs(), self._info(info)

    def action_to_ctrl(self, actions) -> np.ndarray:
        """The wrapped env's actuator controls for actions (..., A): clipped to [-1, 1], mapped onto its bounds."""
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        return np.clip(self._ctrl_mid + self._ctrl_half * a, self._ctrl_low, self._ctrl_high)

    def step(self, action):
        ctrl = self.action_to_ctrl(check_actions(action, self.action_space))
        obs, reward, terminated, _, info = self._env.step(ctrl)
        self._refresh()
        self._inner_obs(obs)
        self._steps += 1
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        return self._obs(), float(reward), bool(terminated), bool(truncated), self._info(info)

    def world_to_pixel(self, xyz) -> np.ndarray:
        """(col, row) pixel coordinates of world points (..., 3) as seen by the render camera."""
        if self._renderer is None:
            self.render_frame()
        scene = self._renderer._renderer.scene
        cam = mujoco.mjv_averageCamera(scene.camera[0], scene.camera[1])  # mono: between the two eyes
        pos, fwd, up = (np.array(v, dtype=np.float64) for v in (cam.pos, cam.forward, cam.up))
        right = np.cross(fwd, up)
        v = np.asarray(xyz, dtype=np.float64) - pos
        x, y, z = v @ right, v @ up, v @ fwd
        if not cam.orthographic:
            x, y = x * cam.frustum_near / z, y * cam.frustum_near / z
        top, bottom = cam.frustum_top, cam.frustum_bottom
        half_w = cam.frustum_width or (top - bottom) / 2 * self.width / self.height
        left = cam.frustum_center - half_w
        col = (x - left) / (2 * half_w) * self.width - 0.5
        row = (top - y) / (top - bottom) * self.height - 0.5
        return np.stack([col, row], axis=-1)

    def get_state(self) -> np.ndarray:
        """Physics state, solver warm start and episode step counter, as one float64 vector."""
        return get_sim_state(self.model, self.data, self._steps)

    def set_state(self, state) -> None:
        """Restore a state from :meth:`get_state` exactly (replays are bit for bit)."""
        self._steps = set_sim_state(self.model, self.data, state, self.task_name)
        warm = self.data.qacc_warmstart.copy()
        mujoco.mj_rnePostConstraint(self.model, self.data)
        self.data.qacc_warmstart[:] = warm
        self._inner_obs(self._last_inner_obs)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()

    def __repr__(self) -> str:
        return f"GymMujocoPixels({self.task_name!r}, obs_type={self.obs_type!r}, {self.width}x{self.height})"
