"""`embodied validate`: score a world model against MuJoCo with the validation probes.

Each probe (one module per probe in this package) starts MuJoCo and the model in
the same state, feeds both the same actions, and scores the model against the
truth. Every probe runs four predictors on the same start states and actions:

* ``model``: the world model under test;
* ``copy_last``: :class:`~embodied.models.baselines.CopyLastFrame` (the world never changes);
* ``action_blind``: :class:`~embodied.models.baselines.ActionBlind` around the model under
  test (every action it sees, in the context and in imagination, replaced by zeros);
* ``mujoco``: the MuJoCo oracle, run through exactly the same reading pipeline.

The truth is what the real env renders and reports (``info["objects"]``) after
``env.set_state(start)`` and the same actions; predictors are read only through
their decoded frames (object positions by colour, :mod:`embodied.vision`) and,
for planning fidelity, their predicted rewards. No predictor reads the truth.

Starting "from the same state": the env is reset, ``context - 1`` real actions
are stepped and the frames, proprioception and actions are recorded; a learned
model encodes the last ``model.context`` of them, copy-last keeps the last
frame, the oracle takes the exact simulator state, and the truth continues
from that state (``get_state``/``set_state`` for each counterfactual branch).

Scores (:mod:`embodied.validate.scoring`) are 0-100 between the best baseline and
MuJoCo. Which probes apply to which task: :data:`APPLICABLE`.

Output: ``OUT/validation.json`` (``probes.<probe>.score.<who>`` beside
``probes.<probe>.metrics.<who>``) and ``OUT/report.html`` with its plots and media.
"""
from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

PROBES = ("fidelity", "controllability", "persistence", "causality", "planning_fidelity")
APPLICABLE = {
    # reach: no free object, nothing to hide: frames, the arm, and rankings
    "reach": ("fidelity", "controllability", "planning_fidelity"),
    # push: the block moves only through contact
    "push": ("fidelity", "controllability", "causality", "planning_fidelity"),
    # occlusion: ball and pusher pass under the occluder; the still box moves only if pushed
    "occlusion": ("fidelity", "controllability", "persistence", "causality", "planning_fidelity"),
}
# any other Gymnasium MuJoCo task: its reward is computed in step(), so the oracle has no batched
# reward for planning fidelity, and it has no occluder or designated free object
GENERIC_PROBES = ("fidelity", "controllability")
WHO = ("model", "copy_last", "action_blind", "mujoco")
BASELINES = ("copy_last", "action_blind")
TRUTH = "mujoco"
PSEUDO_MODELS = ("oracle", "mujoco", "copy_last", "blind_oracle")
FORMAT = "embodied-validation/1"


def applicable_probes(task: str) -> tuple[str, ...]:
    """The probes that apply to a task (canonical name or any Gymnasium id)."""
    from embodied.envs.registry import canonical_task

    return APPLICABLE.get(canonical_task(task), GENERIC_PROBES)


# ---------------------------------------------------------------------------------------------
# shared machinery of the probes
# ---------------------------------------------------------------------------------------------

@dataclass
class Settings:
    """How many start states and steps the probes use: ``quick`` for tests and the demo."""

    quick: bool = False
    seed: int = 0

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


def _as_model_input(x: np.ndarray, dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)


class Harness:
    """The env, the four predictors and the helpers every probe uses."""

    def __init__(self, task: str, model, settings: Settings, size: int | None = None):
        from embodied.models.baselines import ActionBlind, CopyLastFrame
        from embodied.models.oracle import MujocoOracle
        from embodied.envs.registry import canonical_task, make_task

        self.task = canonical_task(task)
        self.settings = settings
        size = size or _model_image_size(model) or 64
        self.env = make_task(self.task, obs_type="pixels_proprio", width=size, height=size)
        self.oracle_env = make_task(self.task, obs_type="pixels_proprio", width=size, height=size)
        self.size = size
        self.action_dim = int(self.env.action_space.shape[0])
        model_dim = getattr(model, "action_dim", self.action_dim)
        if model_dim and int(model_dim) != self.action_dim:
            raise ValueError(f"the model takes {model_dim}-d actions but task {self.task!r} has {self.action_dim}: "
                             "validate it on the task it was trained on (--task)")
        oracle = MujocoOracle(self.oracle_env)
        self.context = max(4, int(getattr(model, "context", 1) or 1))
        self.models = {"model": model, "copy_last": CopyLastFrame(self.task, self.action_dim),
                       "action_blind": ActionBlind(model), "mujoco": oracle}
        self.objects = {o.name: o for o in self.env.objects}
        self.actuated = [o.name for o in self.env.objects if o.actuated]

    # ---- start states -----------------------------------------------------------------------
    def seeds(self, probe: str, n: int) -> list[int]:
        """Reset seeds of a probe: the same for every model at the same --seed, different per probe."""
        offset = 1000 * (1 + PROBES.index(probe)) if probe in PROBES else 9000
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
        if getattr(model, "is_oracle", False):
            return {"sim": torch.from_numpy(np.stack([s.sim for s in starts]))}
        n = min(self.context, max(1, int(getattr(model, "context", 1) or 1)))
        frames = _as_model_input(np.stack([s.frames[-n:] for s in starts]), torch.uint8)
        proprio = _as_model_input(np.stack([s.proprio[-n:] for s in starts]), torch.float32)
        acts = np.stack([s.actions[len(s.actions) - (n - 1):] if n > 1 else s.actions[:0] for s in starts])
        return model.encode(frames, _as_model_input(acts, torch.float32), proprio)

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
                frames.append(_to_uint8(model.decode(state)))
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
        from embodied.policies.scripted import make_policy

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
        if getattr(self, "_main", None) is None:
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
        self.oracle_env.close()


def _to_uint8(frames) -> np.ndarray:
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        scale = 255.0 if frames.max(initial=0) <= 1.0 + 1e-6 else 1.0
        frames = np.clip(np.rint(frames * scale), 0, 255).astype(np.uint8)
    return frames


def _model_image_size(model) -> int | None:
    size = getattr(model, "image_size", None)
    if size is None:
        spec = getattr(model, "spec", None) or {}
        size = spec.get("image_size") if isinstance(spec, dict) else None
    if size is None:
        return None
    if isinstance(size, (list, tuple)):
        return int(size[0])
    return int(size)


def nanmean(x, default=float("nan")) -> float:
    """Mean over the finite entries; ``default`` when there are none."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else default


def curve(values: np.ndarray) -> list:
    """Mean over rollouts of a (B, H) array, per horizon step, as a JSON-able list (NaN -> None)."""
    with np.errstate(invalid="ignore"), _quiet():
        m = np.nanmean(np.asarray(values, np.float64), axis=0)
    return [None if not np.isfinite(v) else float(v) for v in np.atleast_1d(m)]


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


# ---------------------------------------------------------------------------------------------
# loading the model under test
# ---------------------------------------------------------------------------------------------

def load_model(spec, task: str):
    """A model object, a run directory (``embodied.models.load``) or a pseudo model name.

    Pseudo models (for tests, demos and sanity checks): ``oracle`` (MuJoCo
    itself, must score 100), ``copy_last`` and ``blind_oracle`` (MuJoCo with
    zeroed actions); both of the latter must score about 0.
    """
    from embodied.errors import UserError

    if not isinstance(spec, (str, Path)):
        return spec
    name = "oracle" if str(spec) == "mujoco" else str(spec)
    if name in PSEUDO_MODELS:
        from embodied.models.baselines import ActionBlind, CopyLastFrame
        from embodied.models.oracle import MujocoOracle
        from embodied.envs.registry import make_task

        if name == "copy_last":
            env = make_task(task)
            return CopyLastFrame(env.task_name if hasattr(env, "task_name") else task, env.action_space.shape[0])
        oracle = MujocoOracle(make_task(task, obs_type="pixels_proprio"))
        return oracle if name == "oracle" else ActionBlind(oracle)
    run_dir = Path(name)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory; pass a folder written by `embodied train` "
                        f"or one of {', '.join(PSEUDO_MODELS)}")
    try:
        from embodied.models import load
    except ImportError:
        try:
            from embodied.checkpoint import load
        except ImportError as err:
            raise UserError(f"cannot load {run_dir}: no checkpoint loader available ({err})") from None
    model = load(run_dir)
    model.eval()
    return model


def _model_task(model, default: str) -> str:
    return getattr(model, "task", "") or default


# ---------------------------------------------------------------------------------------------
# running the probes
# ---------------------------------------------------------------------------------------------

def run_probes(task: str, model, settings: Settings, probes=None, progress=print) -> tuple[dict, dict]:
    """Run the probes; returns (JSON-able results per probe, media cases per probe)."""
    from embodied.validate import scoring

    harness = Harness(task, model, settings)
    todo = list(probes or applicable_probes(harness.task))
    unknown = [p for p in todo if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}: choose from {', '.join(PROBES)}")
    results, media = {}, {}
    try:
        for name in todo:
            t0 = time.perf_counter()
            torch.manual_seed(settings.seed)  # stochastic models imagine the same samples on a re-run
            module = importlib.import_module(f"embodied.validate.{name}")
            raw = module.run(harness)
            scored = scoring.probe_score(raw["errors"], raw.get("floors", {}))
            results[name] = {
                "question": module.QUESTION,
                "description": " ".join((module.__doc__ or "").split()),
                "score": scored["score"],
                "metrics": raw["metrics"],
                "errors": raw["errors"],
                "combined_error": scored["combined_error"],
                "reference": scored["reference"],
                "separation": scored["separation"],
                "separates": scored["separates"],
                "curves": raw.get("curves", {}),
                "settings": raw.get("settings", {}),
                "wall_s": round(time.perf_counter() - t0, 2),
            }
            for extra in ("scatter", "notes"):
                if extra in raw:
                    results[name][extra] = raw[extra]
            media[name] = raw.get("cases", [])
            if progress:
                s = scored["score"]
                progress(f"  {name:18s} model {_fmt(s['model'])}  copy_last {_fmt(s['copy_last'])}  "
                         f"action_blind {_fmt(s['action_blind'])}  mujoco {_fmt(s['mujoco'])}  "
                         f"(separation {scored['separation']:.2f}, {results[name]['wall_s']:.1f}s)")
    finally:
        harness.close()
    return results, media


def json_safe(obj):
    """Plain JSON: numpy scalars to Python, NaN and infinities to null (strict parsers reject NaN)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def _fmt(x) -> str:
    return "  n/a" if x is None else f"{x:5.1f}"


def _checkpoint_info(spec) -> dict | None:
    """Run directory and training step of a checkpoint, so every number names what made it."""
    if not isinstance(spec, (str, Path)) or str(spec) in PSEUDO_MODELS:
        return None
    info = {"run_dir": str(Path(spec).resolve())}
    try:
        cfg = json.loads((Path(spec) / "config.json").read_text())
        info |= {k: cfg[k] for k in ("step", "arch", "task") if k in cfg}
    except (OSError, ValueError):
        pass
    return info


def validate(task: str, model, out: Path, quick: bool = False, seed: int = 0, probes=None,
             media: bool = True, model_name: str | None = None, progress=print, command: str | None = None) -> dict:
    """Run every applicable probe; write ``validation.json`` (atomically) and ``report.html`` under ``out``."""
    from embodied.io import atomic_write_json
    from embodied.report import write_report
    from embodied.envs.registry import canonical_task

    out = Path(out)
    spec = model
    model = load_model(model, task)
    task = canonical_task(task)
    model_task = _model_task(model, task)
    if canonical_task(model_task) != task:
        raise ValueError(f"the model was trained on task {model_task!r}, not {task!r}: pass --task {model_task}")
    settings = Settings(quick=quick, seed=seed)
    t0 = time.perf_counter()
    if progress:
        progress(f"validate {model_name or spec} on {task} ({'quick' if quick else 'full'} settings, seed {seed})")
    results, cases = run_probes(task, model, settings, probes, progress)
    validation = {
        "format": FORMAT,
        "task": task,
        "model": model_name or (str(spec) if isinstance(spec, (str, Path)) else type(model).__name__),
        "model_class": type(model).__name__,
        "who": {"model": "the world model under test", "copy_last": "copy-last-frame baseline",
                "action_blind": "the model under test with every action replaced by zeros",
                "mujoco": "the MuJoCo simulator through the same reading pipeline (the truth)"},
        "settings": {"quick": quick, "seed": seed},
        "command": command,
        "checkpoint": _checkpoint_info(spec),
        "scores": {p: r["score"] for p, r in results.items()},
        "probes": results,
        "wall_s": round(time.perf_counter() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
    }
    validation = json_safe(validation)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "validation.json", validation)
    write_report(out, validation, cases if media else {})
    return validation


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--task", default="push", help="reach | push | occlusion (the model's task)")
    parser.add_argument("--model", required=True,
                        help="run directory of a trained model, or oracle | copy_last | blind_oracle")
    parser.add_argument("--out", type=Path, required=True, help="folder for validation.json and report.html")
    parser.add_argument("--preset", choices=["quick", "full"], default="full",
                        help="quick: few start states (tests, demo, ~10-30 s); full: more start states")
    parser.add_argument("--quick", action="store_true", help="same as --preset quick")
    parser.add_argument("--seed", type=int, default=0, help="start states are the same for the same seed")
    parser.add_argument("--probes", default="", help=f"comma-separated subset of {','.join(PROBES)}")
    parser.add_argument("--no-media", action="store_true", help="skip the GIFs of best and worst cases")


def run(args) -> int:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    probes = [p.strip() for p in args.probes.split(",") if p.strip()] or None
    quick = args.quick or args.preset == "quick"
    command = (f"embodied validate --task {args.task} --model {args.model} --out {args.out} "
               f"--preset {'quick' if quick else 'full'} --seed {args.seed}"
               + (f" --probes {args.probes}" if args.probes else "") + (" --no-media" if args.no_media else ""))
    validation = validate(args.task, args.model, args.out, quick=quick, seed=args.seed, probes=probes,
                          media=not args.no_media, command=command)
    bad = [p for p, r in validation["probes"].items() if not r["separates"]]
    print(f"wrote {args.out / 'validation.json'}")
    print(f"report: {(args.out / 'report.html').resolve()}")
    if bad:
        print(f"warning: probe(s) {', '.join(bad)} could not separate the baselines from MuJoCo on these start "
              "states: their scores are not meaningful", file=sys.stderr)
    return 0


def load_validation(path: Path) -> dict:
    """Read a validation.json (for compare and tests)."""
    return json.loads(Path(path).read_text())
