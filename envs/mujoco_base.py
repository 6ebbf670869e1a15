"""Shared machinery of the MuJoCo ground-truth tasks.

A task is one subclass of :class:`MujocoTaskEnv` in ``embodied/envs/tasks/`` that
owns everything about itself (the task spec): its MJCF, scored objects and
their colours, how to reset it, its reward and success rule, its scripted
expert, the pose of its goal image, its planner defaults, and the validation
probes that apply with their settings. Registering it (one line in
:mod:`embodied.envs.registry`) is all the rest of the project needs.
Everything a validation probe or an oracle planner needs lives here:

* fast offscreen rendering (no shadows, reflections or multisampling; flat
  colours so objects can be found in a frame by their colour),
* ``get_state`` / ``set_state``: the exact MuJoCo state round trip; a
  non-finite or out-of-range state is refused before the simulator is touched
  (MuJoCo itself would silently reset it),
* ``info["objects"]``: world positions of every scored object, read from
  ``framepos`` sensors named ``<object>_pos``,
* ``reward_from_sensors``: the reward as a vectorised function of sensor data,
  so the env and the batched MuJoCo oracle score states the same way,
* factors of variation (:mod:`embodied.envs.factors`): interventions a task declares (``factors``: mass,
  friction, gains, sizes, colours, light), applied with
  ``make_task(name, factors={"block_mass": 1.5})``; the env then reports the
  colours it renders in ``env.objects`` and the values applied in ``env.fov``;
  ``embodied collect`` also takes a range per factor (``check_factor_setting``),
  sampled per episode.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np

from embodied.envs.actions import check_actions
from embodied.envs.factors import COLOUR_KINDS, FACTOR_KINDS, check_factors

ASSETS = Path(__file__).parent / "tasks" / "assets"
STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS


@dataclass(frozen=True)
class ObjectSpec:
    """A scored object: its name, flat render colour and whether the agent drives it."""

    name: str
    rgb: tuple[int, int, int]
    actuated: bool = False


def sim_state_size(model: mujoco.MjModel) -> int:
    """Length of a :func:`get_sim_state` vector."""
    return mujoco.mj_stateSize(model, STATE_SPEC) + model.nv + 1


def get_sim_state(model: mujoco.MjModel, data: mujoco.MjData, steps: int = 0) -> np.ndarray:
    """[full physics state | qacc_warmstart | step counter]: all that determines what happens next."""
    state = np.empty(mujoco.mj_stateSize(model, STATE_SPEC))
    mujoco.mj_getState(model, data, state, STATE_SPEC)
    return np.concatenate([state, data.qacc_warmstart, [steps]])


def _state_entry(model: mujoco.MjModel, i: int) -> str:
    """What entry ``i`` of a :func:`get_sim_state` vector holds, e.g. ``qpos[3]``."""
    for k in range(int(mujoco.mjtState.mjNSTATE)):
        part = mujoco.mjtState(1 << k)
        if STATE_SPEC & part:
            size = mujoco.mj_stateSize(model, part)
            if i < size:
                return f"{part.name.removeprefix('mjSTATE_').lower()}[{i}]"
            i -= size
    return f"qacc_warmstart[{i}]" if i < model.nv else "the step counter"


def set_sim_state(model: mujoco.MjModel, data: mujoco.MjData, state, name: str = "") -> int:
    """Inverse of :func:`get_sim_state`; returns the step counter.

    A vector of the wrong length, a NaN/inf or a value beyond MuJoCo's limit
    (``mjMAXVAL``, past which MuJoCo silently resets the simulation), or a step
    counter that is negative or fractional is a one-line ``ValueError``, raised
    before ``data`` is touched.
    """
    try:
        state = np.asarray(state, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("state is not a vector of numbers: pass a vector from get_state()") from None
    n = mujoco.mj_stateSize(model, STATE_SPEC)
    if state.shape != (n + model.nv + 1,):
        raise ValueError(f"state has shape {state.shape}, expected ({n + model.nv + 1},) "
                         f"for task {name or 'this model'}: pass a vector from get_state() of the same task")
    bad = ~(np.abs(state) <= mujoco.mjMAXVAL)  # also catches NaN
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"state[{i}] ({_state_entry(model, i)}) is {state[i]:g}: every entry must be finite and "
                         f"within +-{mujoco.mjMAXVAL:g}; pass a vector from get_state()")
    if state[-1] < 0 or state[-1] != np.floor(state[-1]):
        raise ValueError(f"state[{n + model.nv}] (the step counter) is {state[-1]:g}: it must be a whole number >= 0; "
                         "pass a vector from get_state()")
    mujoco.mj_setState(model, data, state[:n], STATE_SPEC)
    data.qacc_warmstart[:] = state[n:n + model.nv]
    mujoco.mj_forward(model, data)
    data.qacc_warmstart[:] = state[n:n + model.nv]
    return int(state[-1])


MAX_FRAME_SIZE = 4096


def check_frame_size(width, height) -> tuple[int, int]:
    """(width, height) as ints; a ``ValueError`` unless each is a whole number of pixels in 1..4096."""
    out = []
    for key, value in (("width", width), ("height", height)):
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not (ok and float(value).is_integer() and 1 <= value <= MAX_FRAME_SIZE):
            raise ValueError(f"{key}={value!r} must be a whole number of pixels from 1 to {MAX_FRAME_SIZE} (e.g. 64)")
        out.append(int(value))
    return out[0], out[1]


def check_obs_options(obs_type: str, render_mode: str | None) -> None:
    """A ``ValueError`` naming the option unless both are ones the envs support."""
    if obs_type not in ("pixels", "state", "pixels_proprio"):
        raise ValueError(f"obs_type={obs_type!r} is not one of 'pixels', 'state', 'pixels_proprio'")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode={render_mode!r} is not supported: use 'rgb_array'")


def rendered_rgb(model: mujoco.MjModel, obj: ObjectSpec) -> tuple[int, int, int]:
    """The flat colour an object renders in (its body's first geom under the headlight), 0..255."""
    ambient = np.asarray(model.vis.headlight.ambient, dtype=np.float64)
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, obj.name)
    geom = int(model.body_geomadr[body]) if body >= 0 else -1
    rgb = model.geom_rgba[geom, :3] if geom >= 0 else np.asarray(obj.rgb) / 255.0
    return tuple(int(c) for c in np.floor(np.clip(rgb * ambient, 0.0, 1.0) * 255 + 0.5))


class MujocoRenderer:
    """Offscreen renderer of one named camera with shadows and reflections off."""

    def __init__(self, model: mujoco.MjModel, height: int, width: int, camera: str | int | mujoco.MjvCamera):
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self._renderer = mujoco.Renderer(model, height, width)
        self.camera = camera

    def render(self, data: mujoco.MjData) -> np.ndarray:
        self._renderer.update_scene(data, camera=self.camera)
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()


class CameraRendering:
    """render_frame / render_data / render for an env with model, data, width, height, camera and _renderer."""

    def render_frame(self) -> np.ndarray:
        """The current camera image, uint8 (H, W, 3)."""
        return self.render_data(self.data)

    def render_data(self, data: mujoco.MjData) -> np.ndarray:
        """The camera image of any MjData of this env's model (used by the oracle)."""
        if self._renderer is None:
            self._renderer = MujocoRenderer(self.model, self.height, self.width, self.camera)
        return self._renderer.render(data)

    def render(self):
        return self.render_frame() if self.render_mode == "rgb_array" else None


class MujocoTaskEnv(CameraRendering, gym.Env):
    """Base class of the planar tabletop tasks (Reach, Push, Occlusion): a task spec and its env.

    Subclasses set the class attributes and implement ``_reset_task``,
    ``reward_from_sensors`` and ``proprio``; ``expert`` and ``goal_qpos`` where
    the task has them.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    task_name: str = ""
    xml_file: str = ""                 # MJCF file in tasks/assets (or an absolute path) ...
    xml: str = ""                      # ... or the MJCF text itself
    frame_skip: int = 10
    max_episode_steps: int = 50
    objects: tuple[ObjectSpec, ...] = ()
    camera: str = "top"
    view_extent: float = 0.6           # metres seen across the orthographic top camera
    occluder_half_width: float = 0.0   # half width (m) of an occluder band centred on x = 0; 0: no occluder
    # success iff reward > -reward_success_margin, for tasks whose reward is minus the distance that
    # decides success (Reach): a model's predicted reward then gives its predicted success
    reward_success_margin: float | None = None
    planner_defaults: dict = {}        # planner setting overrides measured for this task (make_planner)
    # validation probes that apply to this task, each with its settings (see embodied.validate)
    probes: dict = {"fidelity": {}, "controllability": {}, "planning_fidelity": {}}
    # collection runs an episode on past a termination until it has this many steps (our tasks never terminate)
    min_episode_steps: int = 0
    # factors of variation: name -> {"what", "default", "train": [lo, hi], "test": [out-of-range values],
    # "apply": (kind, *geom/body/joint names)}, kinds in FACTOR_KINDS; see floor_and_light_factors
    factors: dict = {}

    def __init__(self, obs_type: str = "pixels", render_mode: str | None = "rgb_array",
                 width: int = 64, height: int = 64, factors: dict | None = None):
        check_obs_options(obs_type, render_mode)
        self.obs_type, self.render_mode = obs_type, render_mode
        self.width, self.height = check_frame_size(width, height)
        self.fov = check_factors(type(self), factors)  # the factors applied: {name: value}
        self.model = self._load_model()
        self.data = mujoco.MjData(self.model)
        self._renderer: MujocoRenderer | None = None
        self._steps = 0
        n_act = self.model.nu
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n_act,), np.float32)
        mujoco.mj_forward(self.model, self.data)
        pixels = gym.spaces.Box(0, 255, (self.height, self.width, 3), np.uint8)
        proprio = gym.spaces.Box(-np.inf, np.inf, self.proprio().shape, np.float32)
        state = gym.spaces.Box(-np.inf, np.inf, self._state_obs().shape, np.float32)
        self.observation_space = {"pixels": pixels, "state": state,
                                  "pixels_proprio": gym.spaces.Dict({"pixels": pixels, "proprio": proprio})}[obs_type]
        self.proprio_space = proprio
        self._sensor_slices = {
            self.model.sensor(i).name: slice(self.model.sensor_adr[i],
                                             self.model.sensor_adr[i] + self.model.sensor_dim[i])
            for i in range(self.model.nsensor)
        }

    def _load_model(self) -> mujoco.MjModel:
        """The task's MjModel, with ``self.fov`` applied to its MJCF before compiling (as built without factors)."""
        if not self.fov:
            return (mujoco.MjModel.from_xml_string(self.xml) if self.xml
                    else mujoco.MjModel.from_xml_path(str(ASSETS / self.xml_file)))
        spec = mujoco.MjSpec.from_string(self.xml) if self.xml else mujoco.MjSpec.from_file(str(ASSETS / self.xml_file))
        for name, value in self.fov.items():
            kind, *names = self.factors[name]["apply"]
            FACTOR_KINDS[kind][0](self, spec, names, value)
        model = spec.compile()
        if any(self.factors[name]["apply"][0] in COLOUR_KINDS for name in self.fov):
            self.objects = tuple(replace(o, rgb=rendered_rgb(model, o)) for o in self.objects)
        return model

    # ---- task-specific hooks -------------------------------------------------
    def _reset_task(self, rng: np.random.Generator) -> None:
        """Place the robot and objects for a new episode (writes self.data.qpos)."""
        raise NotImplementedError

    def reward_from_sensors(self, sensordata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reward and success for sensor data of shape (..., nsensordata), vectorised."""
        raise NotImplementedError

    def proprio(self) -> np.ndarray:
        """The robot's own joint positions and velocities (never object positions)."""
        raise NotImplementedError

    def expert(self, objects: dict | None = None, proprio: np.ndarray | None = None) -> np.ndarray | None:
        """The scripted expert's action in the current state (reads the true state: data collection only).

        ``objects`` ({name: xy}) and ``proprio`` replace the true state when given: a state estimate, e.g. a
        world model's predicted object positions and proprio, so the expert can act in imagination
        (``embodied policy rank``). None: the task has no expert (collection falls back to random actions).
        """
        return None

    def explorer(self, rng: np.random.Generator):
        """A task-specific collecting policy for one episode that covers what models must learn, or None.

        Returns ``(act, label)`` with ``act() -> action``; it may read the true state (data collection only).
        """
        return None

    def goal_qpos(self) -> np.ndarray | None:
        """qpos of the current episode's scene with the task solved (for goal images), or None."""
        return None

    # ---- helpers ---------------------------------------------------------------
    def goal_observation(self) -> tuple[dict, np.ndarray]:
        """({"pixels", "proprio"}, simulator state) of this episode with the task solved; the env is restored.

        A goal image, as a user would photograph the solved scene; ``ValueError``
        for tasks without :meth:`goal_qpos`.
        """
        qpos = self.goal_qpos()
        if qpos is None:
            raise ValueError(f"task {self.task_name!r} defines no goal image (goal_qpos): use the reward objective")
        saved = self.get_state()
        try:
            self.data.qpos[:] = qpos
            self.data.qvel[:] = 0
            mujoco.mj_forward(self.model, self.data)
            obs = {"pixels": self.render_frame(), "proprio": self.proprio().astype(np.float32)}
            sim = self.get_state()
        finally:
            self.set_state(saved)
        return obs, sim

    def action_to_ctrl(self, actions) -> np.ndarray:
        """Actuator controls for actions (..., A) clipped to [-1, 1]: the same numbers (ctrlrange is [-1, 1])."""
        return np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)

    def sensor(self, sensordata: np.ndarray, name: str) -> np.ndarray:
        """The named sensor's values from a (..., nsensordata) array."""
        return sensordata[..., self._sensor_slices[name]]

    def object_positions(self) -> dict[str, np.ndarray]:
        """World xyz of each scored object."""
        return {o.name: self.sensor(self.data.sensordata, f"{o.name}_pos").copy() for o in self.objects}

    def world_to_pixel(self, xyz) -> np.ndarray:
        """(col, row) pixel coordinates of world points seen by the top camera."""
        xyz = np.asarray(xyz, dtype=np.float64)
        scale = self.height / self.view_extent
        col = (self.width - 1) / 2 + xyz[..., 0] * scale
        row = (self.height - 1) / 2 - xyz[..., 1] * scale
        return np.stack([col, row], axis=-1)

    def _state_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float32)

    def _obs(self):
        if self.obs_type == "state":
            return self._state_obs()
        pixels = self.render_frame()
        if self.obs_type == "pixels":
            return pixels
        return {"pixels": pixels, "proprio": self.proprio().astype(np.float32)}

    def _info(self, success: bool | None = None) -> dict:
        if success is None:
            _, success = self.reward_from_sensors(self.data.sensordata)
        return {"objects": self.object_positions(), "is_success": bool(success),
                "proprio": self.proprio().astype(np.float32)}

    # ---- gymnasium API ---------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self._reset_task(self.np_random)
        mujoco.mj_forward(self.model, self.data)
        self._steps = 0
        return self._obs(), self._info()

    def step(self, action):
        self.data.ctrl[:] = self.action_to_ctrl(check_actions(action, self.action_space))
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        mujoco.mj_forward(self.model, self.data)  # sensors, objects and the frame describe the new state
        self._steps += 1
        reward, success = self.reward_from_sensors(self.data.sensordata)
        truncated = self._steps >= self.max_episode_steps
        return self._obs(), float(reward), False, bool(truncated), self._info(success)

    def get_state(self) -> np.ndarray:
        """Physics state, solver warm start and episode step counter, as one float64 vector."""
        return get_sim_state(self.model, self.data, self._steps)

    def set_state(self, state) -> None:
        """Restore a state from :meth:`get_state` exactly (replays are bit for bit)."""
        self._steps = set_sim_state(self.model, self.data, state, self.task_name)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
