"""The shared machinery of the probes: start states, the truth, the four predictors and small helpers.

Starting "from the same state": the env is reset, ``context - 1`` real actions
are stepped and the frames, proprioception and actions are recorded; a model
encodes the last ``model.context`` of them (:mod:`embodied.envs.context`),
the MuJoCo oracle is also handed the exact simulator state (it declares
``abilities.simulator_state``), and the truth continues from that state
(``get_state``/``set_state`` for each counterfactual branch).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from embodied.collect import make_policy
from embodied.envs.context import batch_windows, pad_window
from embodied.envs.registry import canonical_task, make_task, task_class
from embodied.models.baselines import ActionBlind, CopyLastFrame
from embodied.models.oracle import MujocoOracle

# every probe, in the order they run; a probe's index also sets its start-state seeds
PROBES = ("fidelity", "controllability", "persistence", "causality", "planning_fidelity")
WHO = ("model", "copy_last", "action_blind", "mujoco")


@dataclass
class Settings:
    """How many start states and steps the probes use: ``quick`` for tests and the demo."""

    quick: bool = False
    seed: int = 0
    factors: dict = field(default_factory=dict)  # factors of variation of the MuJoCo scene (truth and oracle alike)

    def pick(self, quick, full):
        return quick if self.quick else full


@dataclass
class Start:
    """A start state reached by real steps, with the real context that leads to it."""

    seed: int
    frames: np.ndarray        # (C, h, w, 3) uint8, the last one is the start frame
    proprio: np.ndarray       # (C, P) float32
    actions: np.ndarray       # (C-1, A) float32, actions[t] between frames[t] and frames[t+1]
    sim: np.ndarray           # exact simulator state at the start frame
    objects: dict = field(default_factory=dict)  # name -> (3,) world xyz at the start


@dataclass
class Truth:
    """What MuJoCo renders and reports for H steps after a start state."""

    frames: np.ndarray        # (H, h, w, 3) uint8
    objects: dict             # name -> (H, 3) world xyz
    pixels: dict              # name -> (H, 2) (col, row) of the world position
    rewards: np.ndarray       # (H,)


def smooth_actions(rng: np.random.Generator, horizon: int, dim: int, corr: float = 0.7,
                   scale: float = 1.0) -> np.ndarray:
    """Temporally correlated random actions in [-1, 1], (H, A)."""
    out = np.empty((horizon, dim), np.float32)
    a = rng.uniform(-1, 1, dim)
    for t in range(horizon):
        a = corr * a + (1 - corr) * rng.uniform(-1, 1, dim) * 2.0
        out[t] = np.clip(scale * a, -1, 1)
    return out


class Harness:
    """The env, the four predictors, the task's probe settings and the helpers every probe uses."""

    def __init__(self, task: str, model, settings: Settings, size: int | None = None):
        self.task = canonical_task(task)
        self.settings = settings
        self.probes = task_class(self.task).probes  # probe name -> its settings for this task
        self.size = size or int(model.image_size)
        fov = {"factors": settings.factors} if settings.factors else {}
        self.env = make_task(self.task, obs_type="pixels_proprio", width=self.size, height=self.size, **fov)
        self.action_dim = int(self.env.action_space.shape[0])
        if model.action_dim != self.action_dim:
            raise ValueError(f"the model takes {model.action_dim}-d actions but task {self.task!r} has "
                             f"{self.action_dim}: validate it on the task it was trained on (--task)")
        self.context = max(4, model.context)
        self.models = {"model": model, "copy_last": CopyLastFrame(self.task, self.action_dim),
                       "action_blind": ActionBlind(model),
                       "mujoco": MujocoOracle(self.task, image_size=self.size, **fov)}
        self.objects = {o.name: o for o in self.env.objects}  # the env's: the colours it renders under the factors
        self.actuated = [o.name for o in self.env.objects if o.actuated]
        self._main = None

    # ---- start states -----------------------------------------------------------------------
    def seeds(self, probe: str, n: int) -> list[int]:
        """Reset seeds of a probe: the same for every model at the same seed, different per probe."""
        offset = 1000 * (1 + PROBES.index(probe))
        return [100_000 * self.settings.seed + offset + i for i in range(n)]

    def start(self, seed: int, warmup=None, accept=None) -> Start | None:
        """Reset, step ``context - 1`` warm-up actions and record the context.

        ``warmup(env, rng) -> action`` chooses warm-up actions (default: smooth
        random). ``accept(env) -> bool`` may reject the reset before warm-up.
        """
        env = self.env
        obs, info = env.reset(seed=seed)
        if accept is not None and not accept(env):
            return None
        rng = np.random.default_rng(seed + 17)
        rand = smooth_actions(rng, self.context, self.action_dim, scale=0.5)
        frames, proprio, actions = [obs["pixels"]], [obs["proprio"]], []
        for t in range(self.context - 1):
            a = np.asarray(warmup(env, rng) if warmup else rand[t], np.float32)
            obs, _, _, _, info = env.step(a)
            frames.append(obs["pixels"])
            proprio.append(obs["proprio"])
            actions.append(a)
        return Start(seed=seed, frames=np.stack(frames), proprio=np.stack(proprio).astype(np.float32),
                     actions=np.stack(actions).reshape(-1, self.action_dim).astype(np.float32),
                     sim=env.get_state(), objects={k: np.asarray(v) for k, v in info["objects"].items()})

    def starts(self, probe: str, n: int, warmup=None, accept=None, max_tries: int = 50, offset: int = 0) -> list[Start]:
        """``n`` accepted start states (seeds are tried in order, from ``offset``)."""
        out, seed_list = [], [s + offset for s in self.seeds(probe, n * max_tries)]
        for seed in seed_list:
            s = self.start(seed, warmup, accept)
            if s is not None:
                out.append(s)
            if len(out) == n:
                return out
        raise RuntimeError(f"probe {probe}: only {len(out)} of {n} start states accepted in {len(seed_list)} resets")

    # ---- truth --------------------------------------------------------------------------------
    def truth(self, start: Start, actions: np.ndarray) -> Truth:
        """Replay ``actions`` (H, A) in the real env from the start state."""
        env = self.env
        env.set_state(start.sim)
        frames, rewards, objects = [], [], {k: [] for k in self.objects}
        for a in np.asarray(actions, np.float32):
            obs, r, _, _, info = env.step(a)
            frames.append(obs["pixels"])
            rewards.append(r)
            for k in objects:
                objects[k].append(info["objects"][k])
        objects = {k: np.asarray(v) for k, v in objects.items()}
        return Truth(frames=np.stack(frames), objects=objects,
                     pixels={k: env.world_to_pixel(v) for k, v in objects.items()}, rewards=np.asarray(rewards))

    def pixel(self, xyz) -> np.ndarray:
        return self.env.world_to_pixel(xyz)

    # ---- predictions --------------------------------------------------------------------------
    def initial_state(self, who: str, starts: list[Start]):
        """The predictor's state at the start frames (batch = len(starts))."""
        model = self.models[who]
        n = min(self.context, model.context)
        frames, actions, proprio = batch_windows(
            [pad_window(s.frames, s.actions, s.proprio, len(s.frames) - 1, n, self.action_dim) for s in starts])
        sim = torch.from_numpy(np.stack([s.sim for s in starts])) if model.abilities.simulator_state else None
        return model.encode(frames, actions, proprio, sim_state=sim)

    @torch.no_grad()
    def predict(self, who: str, starts: list[Start], actions: np.ndarray, chunk: int = 32) -> np.ndarray:
        """Decoded frames (B, H, h, w, 3) uint8 of predictor ``who`` for actions (B, H, A) from starts."""
        actions = np.asarray(actions, np.float32)
        if actions.shape[0] != len(starts):
            raise ValueError(f"{len(starts)} start states but {actions.shape[0]} action sequences")
        model, out = self.models[who], []
        for i in range(0, len(starts), chunk):
            state = self.initial_state(who, starts[i:i + chunk])
            acts = torch.from_numpy(actions[i:i + chunk])
            frames = []
            for t in range(acts.shape[1]):
                state = model.step(state, acts[:, t])
                frames.append(model.decode(state).cpu().numpy())
            out.append(np.stack(frames, axis=1))
        return np.concatenate(out)

    @torch.no_grad()
    def predicted_rewards(self, who: str, start: Start, actions: np.ndarray) -> np.ndarray:
        """Predicted rewards (N, H) of each candidate (N, H, A) from one start, via ``model.rollout``
        (the batched call planners make)."""
        model = self.models[who]
        state = self.initial_state(who, [start])
        _, rewards = model.rollout(state, torch.from_numpy(np.asarray(actions, np.float32)))
        return rewards.detach().double().cpu().numpy().reshape(len(actions), -1)

    def predict_all(self, starts: list[Start], actions: np.ndarray) -> dict[str, np.ndarray]:
        """Predicted frames of every predictor."""
        return {who: self.predict(who, starts, actions) for who in WHO}

    def policy_actions(self, start: Start, horizon: int, kind: str, seed: int) -> np.ndarray:
        """An open-loop action sequence (H, A): ``random`` (smooth) or ``scripted`` (the task's expert
        with noise, run closed-loop in the real env and recorded, then replayed open-loop everywhere)."""
        rng = np.random.default_rng(seed)
        if kind == "random":
            return smooth_actions(rng, horizon, self.action_dim)
        self.env.set_state(start.sim)
        act, _ = make_policy("scripted", self.env, rng)
        out = []
        for _ in range(horizon):
            a = np.asarray(act(), np.float32)
            self.env.step(a)
            out.append(a)
        return np.stack(out)

    def main_rollouts(self) -> dict:
        """The rollout set fidelity and controllability share (computed once).

        Start states after random warm-up; half the action sequences smooth
        random, half the task's noisy expert, so the actuated body both
        wanders and heads for objects.
        """
        if self._main is None:
            n, horizon = self.settings.pick(6, 16), self.settings.pick(10, 15)
            starts = self.starts("fidelity", n)
            actions = np.stack([self.policy_actions(s, horizon, "random" if i % 2 else "scripted", s.seed + 7)
                                for i, s in enumerate(starts)])
            truths = [self.truth(s, a) for s, a in zip(starts, actions)]
            self._main = {"starts": starts, "actions": actions, "truths": truths,
                          "real": np.stack([t.frames for t in truths]),
                          "pred": self.predict_all(starts, actions), "horizon": horizon}
        return self._main

    def close(self) -> None:
        self.env.close()


def nanmean(x, default=float("nan")) -> float:
    """Mean over the finite entries; ``default`` when there are none."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else default


def nanmean_along(x, axis: int = 0) -> np.ndarray:
    """``np.nanmean`` along ``axis`` without the all-NaN warning (NaN where nothing is finite)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(x, np.float64), axis=axis)


def curve(values: np.ndarray) -> list:
    """Mean over rollouts of a (B, H) array, per horizon step, as a JSON-able list (NaN -> None)."""
    return [None if not np.isfinite(v) else float(v) for v in np.atleast_1d(nanmean_along(values, axis=0))]
