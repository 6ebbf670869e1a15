"""Receding-horizon MPC in a real env: observe, build the model state, plan, act, replan.

``run_mpc`` drives any ``gymnasium.Env`` whose action space is the planner's
action box and whose observations are pixels, a ``{"pixels", "proprio"}`` dict,
or (oracle only) anything. Each control step it

1. builds the model state from what the robot observed: a learned model gets
   ``model.encode`` of the last ``model.context`` real frames, proprio and
   actions (padded at the start of an episode by repeating the first frame with
   zero actions: a robot at rest); the MuJoCo oracle reads the true simulator
   state with ``model.state_from_env(env)`` -- it is the yardstick;
2. plans with the planner (warm-started from its previous plan);
3. executes the first ``replan_every`` actions in the real env.

Steps 1 and 2 are timed with ``time.perf_counter`` (per executed action); with
a control rate the share of planning calls that missed the control period is
reported. Ground truth (``info["objects"]``, ``is_success``) is read only to
score episodes, never handed to the model or the planner. With ``objective
goal`` the goal is an *image*: a frame of the scene with the task solved, built
once per episode by the loop (like a user photographing the goal) and encoded
by the model.

``embodied plan`` (``add_arguments`` / ``run``) writes ``plan.json`` and, for
the first episodes, videos of the real episode beside what the model imagined:
``[real next frame | imagined next frame | imagined frame at the plan's end]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from embodied.collect import EpisodeBuffer, dataset_spec
from embodied.io import atomic_write_json, write_video
from embodied.data import build_manifest, check_dataset_task, episode_path, write_episode
from embodied.errors import UserError
from embodied.models.base import State, WorldModel
from embodied.planners import PLANNERS, Planner, make_planner

# ---------------------------------------------------------------------------
# observations and the rolling history a learned model is encoded from
# ---------------------------------------------------------------------------


def split_obs(obs) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(pixels uint8 HxWx3 or None, proprio float vector or None) of one observation."""
    if isinstance(obs, dict):
        pixels = obs.get("pixels", obs.get("observation.image"))
        proprio = obs.get("proprio", obs.get("observation.state"))
        return (None if pixels is None else np.asarray(pixels),
                None if proprio is None else np.asarray(proprio, dtype=np.float32))
    arr = np.asarray(obs)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3:
        return arr, None
    return None, None


class ObsHistory:
    """The last ``context`` real frames, proprio vectors and the actions between them."""

    def __init__(self, context: int = 4):
        if context < 1:
            raise ValueError(f"model context={context} must be >= 1")
        self.context = int(context)
        self.frames: deque = deque(maxlen=self.context)
        self.proprio: deque = deque(maxlen=self.context)
        self.actions: deque = deque(maxlen=self.context - 1 if self.context > 1 else 0)
        self.action_dim = 0

    def reset(self, obs, action_dim: int) -> None:
        self.frames.clear(), self.proprio.clear(), self.actions.clear()
        self.action_dim = int(action_dim)
        self._append_obs(obs)

    def push(self, action, obs) -> None:
        """Record the action taken and the observation it led to."""
        if self.context > 1:
            self.actions.append(np.asarray(action, dtype=np.float32).reshape(self.action_dim))
        self._append_obs(obs)

    def _append_obs(self, obs) -> None:
        pixels, proprio = split_obs(obs)
        if pixels is None:
            raise ValueError("a learned model needs pixel observations: make the env with obs_type "
                             "'pixels' or 'pixels_proprio' (a dict with 'pixels' and 'proprio')")
        self.frames.append(pixels)
        self.proprio.append(proprio)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """frames (1,T,H,W,3) uint8, actions (1,T-1,A) float32, proprio (1,T,P) float32 or None."""
        missing = self.context - len(self.frames)
        frames = [self.frames[0]] * missing + list(self.frames)
        zero = np.zeros(self.action_dim, dtype=np.float32)
        actions = [zero] * (self.context - 1 - len(self.actions)) + list(self.actions)
        f = torch.from_numpy(np.stack(frames))[None]
        a = torch.from_numpy(np.stack(actions))[None] if actions else torch.zeros(1, 0, self.action_dim)
        p = None
        if self.proprio[-1] is not None:
            p = torch.from_numpy(np.stack([self.proprio[0]] * missing + list(self.proprio)))[None]
        return f, a, p


StateFn = Callable[[object, ObsHistory], State]


def default_state_fn(model: WorldModel) -> StateFn:
    """The oracle reads the simulator state; a learned model encodes the real observation history."""
    if getattr(model, "is_oracle", False):
        return lambda env, history: model.state_from_env(env.unwrapped)

    def encode(env, history: ObsHistory) -> State:
        frames, actions, proprio = history.tensors()
        return model.encode(frames, actions, proprio)

    return encode


# ---------------------------------------------------------------------------
# goal images: a frame of the scene with the task solved
# ---------------------------------------------------------------------------


def _reach_goal_qpos(env) -> np.ndarray:
    """Arm joints that put the fingertip on the target (two-link inverse kinematics)."""
    qpos = env.data.qpos.copy()
    l1, l2 = 0.14, 0.12
    x, y = qpos[0:2]
    d2 = x * x + y * y
    c2 = np.clip((d2 - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0, 1.0)
    q2 = math.copysign(math.acos(c2), qpos[3] if qpos[3] != 0 else 1.0)
    q1 = math.atan2(y, x) - math.atan2(l2 * math.sin(q2), l1 + l2 * math.cos(q2))
    qpos[2], qpos[3] = q1, q2
    return qpos


def _push_goal_qpos(env) -> np.ndarray:
    """Block on the goal, pusher behind it as after a straight push."""
    qpos = env.data.qpos.copy()
    goal, block = qpos[0:2].copy(), qpos[2:4].copy()
    direction = goal - block
    direction /= max(np.linalg.norm(direction), 1e-9)
    qpos[2:4] = goal
    qpos[4:6] = np.clip(goal - 0.095 * direction, -0.27, 0.27)
    return qpos


GOAL_POSES: dict[str, Callable] = {"reach": _reach_goal_qpos, "push": _push_goal_qpos}


def goal_observation(env) -> tuple[dict, np.ndarray]:
    """({"pixels", "proprio"}, simulator state) of the current episode with the task solved.

    The env is restored afterwards. Only for tasks in ``GOAL_POSES``.
    """
    import mujoco

    base = env.unwrapped
    task = getattr(base, "task_name", "")
    if task not in GOAL_POSES:
        raise UserError(f"no goal image is defined for task {task or type(base).__name__!r}: "
                        f"use --objective reward, or one of the tasks {', '.join(GOAL_POSES)}")
    saved = base.get_state()
    try:
        base.data.qpos[:] = GOAL_POSES[task](base)
        base.data.qvel[:] = 0
        mujoco.mj_forward(base.model, base.data)
        obs = {"pixels": base.render_frame(), "proprio": base.proprio().astype(np.float32)}
        sim = base.get_state()
    finally:
        base.set_state(saved)
    return obs, sim


def goal_state(env, model: WorldModel) -> State:
    """The model state of this episode's goal image (the oracle takes the goal's simulator state)."""
    obs, sim = goal_observation(env)
    if getattr(model, "is_oracle", False):
        return {"sim": torch.from_numpy(sim)[None]}
    history = ObsHistory(getattr(model, "context", 4))
    history.reset(obs, model.action_dim)
    return model.encode(*history.tensors())


# ---------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------


def _imagined_frames(model: WorldModel, state: State, plan: torch.Tensor,
                     k: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Decoded model frames after each of the first ``k`` planned actions, and at the plan's end."""
    with torch.no_grad():
        s, nexts = state, []
        for t in range(plan.shape[0]):
            s = model.step(s, plan[t:t + 1])
            if t < k:
                nexts.append(np.asarray(model.decode(s)[0], dtype=np.uint8))
        last = np.asarray(model.decode(s)[0], dtype=np.uint8)
    return nexts, last


def _real_frame(env, obs) -> np.ndarray:
    pixels, _ = split_obs(obs)
    return pixels if pixels is not None else np.asarray(env.render(), dtype=np.uint8)


def _episode_limit(env, max_steps: int | None) -> int | None:
    limits = [max_steps, getattr(env.spec, "max_episode_steps", None) if env.spec else None,
              getattr(env.unwrapped, "max_episode_steps", None)]
    limits = [int(x) for x in limits if x]
    return min(limits) if limits else None


def run_mpc(env, model: WorldModel, planner: Planner, episodes: int = 10, seed: int = 0,
            control_hz: float | None = None, video_dir: str | os.PathLike | None = None,
            state_fn: StateFn | None = None, *, max_steps: int | None = None, replan_every: int = 1,
            goal_fn: Callable[[object, WorldModel], State] | None = None, videos: int = 2,
            progress: bool = False, record_dir: str | os.PathLike | None = None) -> dict:
    """Run ``episodes`` of receding-horizon MPC in ``env``; returns the metrics (see :func:`summarise`).

    ``state_fn(env, history)`` builds the model state each step (default:
    :func:`default_state_fn`); ``goal_fn(env, model)`` gives the goal state once
    per episode (needed by ``objective="goal"``; default :func:`goal_state`).
    Episode ``i`` resets the env with ``seed + i`` and the planner with
    ``planner.settings.seed + i``. Videos are written for the first ``videos``
    episodes when ``video_dir`` is set. With ``record_dir`` every real episode
    is also added to the dataset there (see :func:`check_record_dir`).
    """
    s = planner.settings
    space = env.action_space
    action_dim = int(np.prod(space.shape))
    if getattr(model, "action_dim", action_dim) != action_dim:
        raise ValueError(f"the model acts with {model.action_dim} values but the env takes {action_dim}")
    if not (np.allclose(space.low, s.action_low) and np.allclose(space.high, s.action_high)):
        raise ValueError(f"the env's action bounds [{space.low}, {space.high}] differ from the planner's "
                         f"[{s.action_low}, {s.action_high}]: wrap the env in gymnasium.wrappers.RescaleAction")
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    if replan_every < 1 or replan_every > s.horizon:
        raise ValueError(f"replan_every={replan_every} must be between 1 and the horizon ({s.horizon})")
    if control_hz is not None and not control_hz > 0:
        raise ValueError(f"control_hz={control_hz} must be > 0")
    state_fn = state_fn or default_state_fn(model)
    if s.objective == "goal" and goal_fn is None:
        goal_fn = goal_state
    period = 1.0 / control_hz if control_hz else None
    limit = _episode_limit(env, max_steps)
    history = ObsHistory(getattr(model, "context", 4))
    video_dir = Path(video_dir) if video_dir else None
    record_dir = Path(record_dir) if record_dir else None
    if record_dir is not None:
        check_record_dir(env, record_dir, range(seed, seed + episodes))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes * limit if limit else None, unit="step", desc=f"{planner.name} MPC", file=sys.stderr)

    per_action_ms: list[float] = []
    plan_ms: list[float] = []
    missed = 0
    records = []
    try:
        for ep in range(episodes):
            obs, info = env.reset(seed=seed + ep)
            planner.reset(seed=s.seed + ep)
            needs_history = not getattr(model, "is_oracle", False)
            if needs_history:
                history.reset(obs, action_dim)
            goal = goal_fn(env, model) if goal_fn is not None else None
            buffer = EpisodeBuffer(env.unwrapped, obs, info) if record_dir is not None else None
            record = ep < videos and video_dir is not None
            frames = []
            ret, steps, success_any, success = 0.0, 0, False, bool(info.get("is_success", False))
            queue: list[np.ndarray] = []
            while True:
                if not queue:
                    t0 = time.perf_counter()
                    state = state_fn(env, history)
                    plan = planner.plan(model, state, goal)
                    dt = time.perf_counter() - t0
                    k = replan_every
                    planner.advance(k)
                    queue = [a for a in plan[:k].numpy().astype(space.dtype)]
                    plan_ms.append(dt * 1000)
                    per_action_ms.extend([dt * 1000 / k] * k)
                    missed += int(period is not None and dt > period)
                    if record:
                        imagined_next, imagined_end = _imagined_frames(model, state, plan, k)
                action = queue.pop(0)
                obs, reward, terminated, truncated, info = env.step(action)
                if needs_history:
                    history.push(action, obs)
                if buffer is not None:
                    buffer.add(action, obs, float(reward), bool(terminated), info)
                ret += float(reward)
                steps += 1
                success = bool(info.get("is_success", False))
                success_any |= success
                if record:
                    frames.append(np.concatenate([_real_frame(env, obs), imagined_next.pop(0), imagined_end], axis=1))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(episode=ep, ret=f"{ret:.2f}", ms=f"{per_action_ms[-1]:.0f}")
                if terminated or truncated or (limit is not None and steps >= limit):
                    break
            records.append({"episode": ep, "seed": seed + ep, "return": ret, "steps": steps,
                            "success": success, "success_any": success_any})
            if record and frames:
                write_video(video_dir / f"episode_{ep:03d}.mp4", frames, fps=env.metadata.get("render_fps", 20), scale=4)
            if buffer is not None:
                write_episode(episode_path(record_dir, seed + ep), *buffer.episode(seed + ep, f"mpc-{planner.name}"))
    finally:
        if bar is not None:
            bar.close()
        if record_dir is not None:
            size = int(env.unwrapped.height)
            atomic_write_json(record_dir / "manifest.json", build_manifest(record_dir, dataset_spec(env.unwrapped.task_name, size)))
    return summarise(records, per_action_ms, plan_ms, missed, control_hz, planner)


def check_record_dir(env, record_dir: Path, seeds) -> None:
    """Refuse ``--record`` into a dataset of another task, or over episodes it already holds."""
    task = getattr(env.unwrapped, "task_name", None)
    if task is None or not hasattr(env.unwrapped, "get_state"):
        raise UserError("--record needs one of the project's tasks (reach, push, occlusion): "
                        "it stores simulator states and object tracks")
    check_dataset_task(record_dir, task, "--record")
    taken = sorted(s for s in seeds if episode_path(record_dir, s).exists())
    if taken:
        raise UserError(f"{record_dir} already holds episodes with seeds {taken[0]}..{taken[-1]}: "
                        "pick an unused --seed (e.g. 100000)")


def summarise(records: list[dict], per_action_ms: list[float], plan_ms: list[float], missed: int,
              control_hz: float | None, planner: Planner) -> dict:
    """The metrics ``plan.json`` holds."""
    returns = np.array([r["return"] for r in records])
    ms = np.array(per_action_ms)
    return {
        "episodes": len(records),
        "success_rate": float(np.mean([r["success"] for r in records])),
        "success_any_rate": float(np.mean([r["success_any"] for r in records])),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "ms_per_action_median": float(np.median(ms)),
        "ms_per_action_p95": float(np.percentile(ms, 95)),
        "ms_per_action_mean": float(ms.mean()),
        "plans": len(plan_ms),
        "control_hz": control_hz,
        "deadline_miss_rate": (missed / len(plan_ms)) if control_hz else None,
        "planner": planner.name,
        "planner_settings": planner.settings.to_dict(),
        "per_episode": records,
    }


# ---------------------------------------------------------------------------
# the `embodied plan` subcommand
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="reach", help="task name (reach, push, occlusion) or a Gymnasium MuJoCo id")
    parser.add_argument("--model", default="mujoco",
                        help='a trained run directory, or "mujoco" for the simulator itself (the oracle yardstick)')
    parser.add_argument("--planner", default="cem", choices=sorted(PLANNERS))
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seeds the episodes (seed + i) and the planner")
    parser.add_argument("--out", default=None, help="output folder (default runs/plan/<task>_<model>_<planner>)")
    parser.add_argument("--control-hz", type=float, default=None,
                        help="control rate: report the share of steps whose planning missed 1/F seconds")
    parser.add_argument("--horizon", type=int, default=None, help="planning horizon (default 12; 20 on push)")
    parser.add_argument("--samples", type=int, default=None, help="sequences per iteration (default 128; 96 on push)")
    parser.add_argument("--iterations", type=int, default=None, help="refinement rounds per action (default 3)")
    parser.add_argument("--elites", type=int, default=None,
                        help="CEM elites (default 12, or samples/10 with --samples)")
    parser.add_argument("--objective", choices=["reward", "goal"], default="reward",
                        help="maximise the model's reward, or approach the encoded goal image in latent space")
    parser.add_argument("--replan-every", type=int, default=1, help="actions executed per plan")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on steps per episode (default: the task's)")
    parser.add_argument("--videos", type=int, default=2, help="episodes to record as video (0: none)")
    parser.add_argument("--record", default=None, metavar="DATASET",
                        help="also add every real episode to this dataset (on-policy data to retrain the model on)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads while planning (default 1: on a busy 2-core machine two threads "
                             "made a learned-model plan ~10x slower); 0 keeps torch's default")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_model(spec: str, task: str):
    """(env, model) for ``--model``: the MuJoCo oracle, or a trained run directory."""
    from embodied.envs import make_task

    if spec == "mujoco":
        from embodied.models.oracle import MujocoOracle

        env = make_task(task, obs_type="pixels_proprio")
        return env, MujocoOracle(env)
    if not Path(spec).exists():
        raise UserError(f"--model {spec!r} is neither 'mujoco' nor an existing run directory")
    try:
        from embodied.models import load
    except ImportError as err:
        raise UserError(f"cannot load learned models in this install ({err}): use --model mujoco") from err
    model = load(spec, task=task)
    size = int(getattr(model, "image_size", 64))
    obs_type = getattr(model, "obs_type", "pixels_proprio")
    if obs_type not in ("pixels", "pixels_proprio"):
        obs_type = "pixels_proprio"
    env = make_task(task, obs_type=obs_type, width=size, height=size)
    return env, model


def _command_line(args) -> str:
    """The ``embodied plan`` command that reproduces this run."""
    parts = ["embodied", "plan"]
    for key, value in vars(args).items():
        if key.startswith("_") or key == "command" or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return " ".join(parts)


def run(args) -> int:
    from embodied.envs.registry import canonical_task

    task = canonical_task(args.task)
    threads = torch.get_num_threads()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        return _run(args, task)
    finally:
        torch.set_num_threads(threads)


def _run(args, task: str) -> int:
    model_name = "mujoco" if args.model == "mujoco" else Path(args.model).name
    out = Path(args.out or Path("runs") / "plan" / f"{task}_{model_name}_{args.planner}")
    elites = args.elites
    if elites is None and args.samples is not None:  # keep the default 10% elite fraction
        elites = max(2, min(args.samples, args.samples // 10))
    planner = make_planner(args.planner, task=task, horizon=args.horizon, samples=args.samples,
                           iterations=args.iterations, elites=elites, objective=args.objective, seed=args.seed)
    env, model = load_model(args.model, task)
    try:
        result = run_mpc(env, model, planner, episodes=args.episodes, seed=args.seed, control_hz=args.control_hz,
                         video_dir=out / "videos" if args.videos > 0 else None, max_steps=args.max_steps,
                         replan_every=args.replan_every, videos=args.videos, progress=not args.no_progress,
                         record_dir=args.record)
    finally:
        env.close()
    model_ref = args.model if args.model == "mujoco" else str(Path(args.model).resolve())
    result = {"task": task, "model": model_ref, "oracle": bool(getattr(model, "is_oracle", False)),
              "objective": args.objective, "seed": args.seed, **result,
              "command": _command_line(args),
              "torch_threads": torch.get_num_threads()}
    atomic_write_json(out / "plan.json", result)
    miss = "" if args.control_hz is None else f", {result['deadline_miss_rate']:.0%} missed {args.control_hz:g} Hz"
    print(f"{task} {args.planner} on {model_name}: success {result['success_rate']:.0%}, "
          f"return {result['return_mean']:.2f}, {result['ms_per_action_median']:.1f} ms/action median "
          f"(p95 {result['ms_per_action_p95']:.1f}){miss} -> {out / 'plan.json'}")
    return 0
