"""Receding-horizon MPC in a real env: observe, encode, plan, act, replan.

``run_mpc`` drives any ``gymnasium.Env`` whose action space is the planner's
action box and whose observations are pixels or a ``{"pixels", "proprio"}``
dict. Each control step it

1. builds the model state from the episode's history alone:
   ``model.encode`` of the last ``model.max_context`` real frames, proprio and
   actions (:class:`embodied.envs.context.ObsHistory`, padded at the start of
   an episode). The loop records the simulator state into the history only for
   a model that declares ``abilities.simulator_state`` (the MuJoCo oracle, the
   yardstick); a learned model never receives it. A model that declares
   ``abilities.update`` (a filter) encodes once per episode and then takes one
   ``model.update`` per executed action and its new observation, as a robot's
   state estimator does, instead of re-encoding the whole window;
2. plans with the planner (warm-started from its previous plan);
3. executes the first ``replan_every`` actions in the real env.

Steps 1 and 2 are timed with ``time.perf_counter`` (per executed action); with
a control rate the share of planning calls that missed the control period is
reported. Ground truth (``info["objects"]``, ``is_success``) is read only to
score episodes, never handed to the model or the planner. With ``objective
goal`` the goal is an *image*: the task's frame of the scene solved
(``goal_observation()``, like a user photographing the goal), encoded by the
model once per episode.

Videos of the first episodes show the real episode beside what the model
imagined: ``[real next frame | imagined next frame | imagined frame at the plan's end]``.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from embodied.envs.context import ObsHistory, split_obs
from embodied.errors import UserError
from embodied.io import write_video
from embodied.models.base import State, WorldModel
from embodied.planners.base import Planner
from embodied.planners.record import EpisodeRecorder


def goal_state(env, model: WorldModel) -> State:
    """The model state of this episode's goal image, encoded as a still context window."""
    try:
        obs, sim = env.unwrapped.goal_observation()
    except ValueError:
        raise UserError(f"task {model.task or type(env.unwrapped).__name__!r} has no goal image: "
                        "use --objective reward") from None
    history = ObsHistory(model.context, model.action_dim)
    history.reset(obs, sim_state=sim if model.abilities.simulator_state else None)
    return model.encode(**history.encode_inputs())


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


def update_inputs(action: np.ndarray, obs) -> tuple:
    """``model.update`` arguments (batch 1) of an executed action and the observation it led to."""
    pixels, proprio = split_obs(obs)
    return (torch.as_tensor(np.asarray(action, np.float32))[None], torch.from_numpy(np.ascontiguousarray(pixels))[None],
            None if proprio is None else torch.as_tensor(np.asarray(proprio, np.float32))[None])


def _episode_limit(env, max_steps: int | None) -> int | None:
    """The tightest of ``max_steps``, the env spec's and the task's episode length."""
    limits = [max_steps, env.spec.max_episode_steps if env.spec else None,
              getattr(env.unwrapped, "max_episode_steps", None)]
    limits = [int(x) for x in limits if x]
    return min(limits) if limits else None


def _check(env, model: WorldModel, planner: Planner, episodes: int, replan_every: int,
           control_hz: float | None) -> None:
    s, space = planner.settings, env.action_space
    action_dim = int(np.prod(space.shape))
    if model.action_dim != action_dim:
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


def run_mpc(env, model: WorldModel, planner: Planner, episodes: int = 10, seed: int = 0,
            control_hz: float | None = None, video_dir: str | os.PathLike | None = None, *,
            max_steps: int | None = None, replan_every: int = 1, videos: int = 2, progress: bool = False,
            recorder: EpisodeRecorder | None = None) -> dict:
    """Run ``episodes`` of receding-horizon MPC in ``env``; returns the metrics (see :func:`summarise`).

    Episode ``i`` resets the env with ``seed + i`` and the planner with
    ``planner.settings.seed + i``. Videos are written for the first ``videos``
    episodes when ``video_dir`` is set; a ``recorder`` is given every real
    episode (its ``close`` is the caller's).
    """
    _check(env, model, planner, episodes, replan_every, control_hz)
    s, dtype = planner.settings, env.action_space.dtype
    oracle = model.abilities.simulator_state
    period = 1.0 / control_hz if control_hz else None
    limit = _episode_limit(env, max_steps)
    history = ObsHistory(model.max_context, model.action_dim)
    streaming = model.abilities.update
    video_dir = Path(video_dir) if video_dir else None

    def sim_state():  # recorded for the oracle only: a learned model sees observations alone
        return env.unwrapped.get_state() if oracle else None

    bar = tqdm(total=episodes * limit if limit else None, unit="step", desc=f"{planner.name} MPC",
               file=sys.stderr) if progress else None
    per_action_ms: list[float] = []
    plan_ms: list[float] = []
    missed = 0
    records = []
    try:
        for ep in range(episodes):
            obs, info = env.reset(seed=seed + ep)
            planner.reset(seed=s.seed + ep)
            history.reset(obs, sim_state=sim_state())
            goal = goal_state(env, model) if s.objective == "goal" else None
            if recorder is not None:
                recorder.start(obs, info)
            record = ep < videos and video_dir is not None
            frames = []
            ret, steps, success_any, success = 0.0, 0, False, bool(info.get("is_success", False))
            queue: list[np.ndarray] = []
            state, unseen = None, []
            while True:
                if not queue:
                    t0 = time.perf_counter()
                    if state is None or not streaming:
                        state = model.encode(**history.encode_inputs())
                    for done_action, done_obs in unseen:
                        state = model.update(state, *update_inputs(done_action, done_obs))
                    unseen.clear()
                    plan = planner.plan(model, state, goal)
                    dt = time.perf_counter() - t0
                    k = replan_every
                    planner.advance(k)
                    queue = [a for a in plan[:k].numpy().astype(dtype)]
                    plan_ms.append(dt * 1000)
                    per_action_ms.extend([dt * 1000 / k] * k)
                    missed += int(period is not None and dt > period)
                    if record:
                        imagined_next, imagined_end = _imagined_frames(model, state, plan, k)
                action = queue.pop(0)
                obs, reward, terminated, truncated, info = env.step(action)
                history.push(action, obs, sim_state=sim_state())
                if streaming:
                    unseen.append((action, obs))
                if recorder is not None:
                    recorder.add(action, obs, float(reward), bool(terminated), info)
                ret += float(reward)
                steps += 1
                success = bool(info.get("is_success", False))
                success_any |= success
                if record:
                    frames.append(np.concatenate([split_obs(obs)[0], imagined_next.pop(0), imagined_end], axis=1))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(episode=ep, ret=f"{ret:.2f}", ms=f"{per_action_ms[-1]:.0f}")
                if terminated or truncated or (limit is not None and steps >= limit):
                    break
            records.append({"episode": ep, "seed": seed + ep, "return": ret, "steps": steps,
                            "success": success, "success_any": success_any})
            if record and frames:
                fps = env.metadata.get("render_fps", 20)
                write_video(video_dir / f"episode_{ep:03d}.mp4", frames, fps=fps, scale=4)
            if recorder is not None:
                recorder.save(seed + ep)
    finally:
        if bar is not None:
            bar.close()
    return summarise(records, per_action_ms, plan_ms, missed, control_hz, planner)


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
