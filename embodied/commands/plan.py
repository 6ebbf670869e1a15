"""`embodied plan`: receding-horizon MPC in the real task (see :mod:`embodied.planners.mpc`).

    embodied plan --task push --model runs/push --planner cem --episodes 10
    embodied plan --config configs/plan.yaml task=push planner.horizon=24 planner.temperature=0.2
    embodied plan --task push --model push --planner cem --prior runs/policy/push_push_sac planner.prior_share=0.5

Writes ``plan.json`` (metrics, settings and the command that reproduces the
run) and, for the first episodes, videos of the real episode beside what the
model imagined; ``--record DATASET`` adds every real episode to a dataset.
``--prior POLICY`` (a folder or zip from ``embodied policy train``) proposes a
share of the candidates and the starting plan (:mod:`embodied.planners.prior`);
``--planner policy`` acts from it alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from embodied.commands import torch_threads
from embodied.config import add_config_arguments, check_range, load_config
from embodied.envs.factors import check_factors, parse_fov
from embodied.envs.registry import canonical_task, make_task, task_class
from embodied.errors import UserError
from embodied.io import atomic_write_json, check_writable
from embodied.load import REFERENCE_MODELS, load_model, resolve_run_dir
from embodied.planners import PLANNERS, make_planner
from embodied.planners.base import OBJECTIVES
from embodied.planners.mpc import run_mpc
from embodied.planners.prior import check_prior_path, load_prior
from embodied.planners.record import EpisodeRecorder

# imagined steps of one planning iteration (samples x horizon) beyond which a plan cannot be held in memory
MAX_SEQUENCE_STEPS = 10_000_000


@dataclass
class PlannerSection:
    """The planner and its settings; None keeps the task's default (see ``PlannerSettings``)."""

    name: str = "cem"                  # cem | mppi | random | policy (the --prior alone)
    horizon: int | None = None
    samples: int | None = None
    iterations: int | None = None
    elites: int | None = None          # None with samples set: 10% of them (at least 2)
    temperature: float | None = None
    noise_std: float | None = None
    noise_beta: float | None = None
    min_std: float | None = None
    momentum: float | None = None
    discount: float | None = None
    goal_weight: float | None = None
    reward_weight: float | None = None
    warm_start: bool | None = None
    select: str | None = None
    prior_share: float | None = None   # with --prior: the share of candidates it proposes (0.25)
    prior_std: float | None = None     # with --prior: noise std on its proposals (0.3)
    terminal_value: float | None = None  # with --prior: weight of its critic's value where a plan ends (0: off)


@dataclass
class PlanConfig:
    task: str = "reach"                # reach | push | occlusion | a Gymnasium MuJoCo id
    model: str = "mujoco"              # a run folder, a shipped checkpoint's name,
                                       # or mujoco | oracle | copy_last | blind_oracle
    planner: PlannerSection = field(default_factory=PlannerSection)
    prior: str | None = None           # a policy folder or zip from `embodied policy train` proposing candidates
    objective: str = "reward"          # reward | goal (approach the encoded goal image)
    episodes: int = 10
    seed: int = 0                      # episode i resets with seed + i; also seeds the planner
    out: str | None = None             # default runs/plan/<task>_<model>_<planner>[_prior]
    control_hz: float | None = None    # report the share of plans that missed 1/control_hz seconds
    replan_every: int = 1              # actions executed per plan
    max_steps: int | None = None       # cap on steps per episode (default: the task's)
    videos: int = 2                    # episodes recorded as video
    record: str | None = None          # dataset folder every real episode is added to
    torch_threads: int = 1             # torch threads while planning; 0 keeps torch's default
    progress: bool = True
    fov: dict = field(default_factory=dict)  # factors of variation of the real scene, e.g. {block_mass: 1.5}

    def check(self, source: str) -> None:
        if self.fov:
            self.fov = check_factors(task_class(self.task), self.fov)
        if self.planner.name not in PLANNERS:
            raise UserError(f"planner.name = {self.planner.name!r} in {source} must be one of {', '.join(PLANNERS)}")
        if self.objective not in OBJECTIVES:
            raise UserError(f"objective = {self.objective!r} in {source} must be one of {', '.join(OBJECTIVES)}")
        p = self.planner
        if p.select not in (None, "mean", "best"):
            raise UserError(f"planner.select = {p.select!r} in {source} must be mean or best")
        if p.name == "policy" and not self.prior:
            raise UserError(f"planner.name = policy in {source} acts from a policy prior alone: pass --prior POLICY "
                            "(a folder written by `embodied policy train`)")
        if self.prior:
            check_prior_path(self.prior)
        elif p.terminal_value:
            raise UserError(f"planner.terminal_value = {p.terminal_value} in {source} scores where a plan ends with a "
                            "policy prior's critic: pass --prior POLICY")
        check_range(source, {"episodes": self.episodes, "replan_every": self.replan_every, "max_steps": self.max_steps,
                             "planner.horizon": p.horizon, "planner.samples": p.samples,
                             "planner.iterations": p.iterations, "planner.elites": p.elites}, low=1)
        check_range(source, {"seed": self.seed, "videos": self.videos, "torch_threads": self.torch_threads,
                             "planner.min_std": p.min_std, "planner.noise_beta": p.noise_beta,
                             "planner.prior_std": p.prior_std, "planner.terminal_value": p.terminal_value}, low=0)
        check_range(source, {"control_hz": self.control_hz, "planner.temperature": p.temperature,
                             "planner.noise_std": p.noise_std}, low=0, above=True)
        check_range(source, {"planner.discount": p.discount}, low=0, high=1, above=True)
        check_range(source, {"planner.prior_share": p.prior_share}, low=0, high=1)
        check_range(source, {"planner.momentum": p.momentum}, low=0, high=1, below=True)


# (config key, flag, argparse options): each flag sets one config value
FLAGS = [
    ("task", "--task", {"help": "task name (reach, push, occlusion) or a Gymnasium MuJoCo id"}),
    ("model", "--model", {"help": 'a trained run directory, a shipped checkpoint\'s name (`embodied checkpoints`), '
                                  'or "mujoco" for the simulator itself (the yardstick)'}),
    ("planner.name", "--planner", {"choices": sorted(PLANNERS)}),
    ("prior", "--prior", {"metavar": "POLICY", "help": "a policy folder or zip from `embodied policy train`: its "
                          "imagined rollouts are the starting plan and a share of the candidates "
                          "(planner.prior_share, default 0.25); --planner policy acts from it alone"}),
    ("episodes", "--episodes", {"type": int}),
    ("seed", "--seed", {"type": int, "help": "seeds the episodes (seed + i) and the planner"}),
    ("out", "--out", {"help": "output folder (default runs/plan/<task>_<model>_<planner>[_prior])"}),
    ("control_hz", "--control-hz", {"type": float, "help": "control rate F: report the plans that missed 1/F s"}),
    ("planner.horizon", "--horizon", {"type": int, "help": "planning horizon (default 12; 20 on push)"}),
    ("planner.samples", "--samples", {"type": int, "help": "sequences per iteration (default 128; 96 on push)"}),
    ("planner.iterations", "--iterations", {"type": int, "help": "refinement rounds per action (default 3)"}),
    ("planner.elites", "--elites", {"type": int, "help": "CEM elites (default 12, or samples/10 with --samples)"}),
    ("objective", "--objective", {"choices": list(OBJECTIVES),
                                  "help": "maximise the model's reward, or approach the encoded goal image"}),
    ("replan_every", "--replan-every", {"type": int, "help": "actions executed per plan (default 1)"}),
    ("max_steps", "--max-steps", {"type": int, "help": "cap on steps per episode (default: the task's)"}),
    ("videos", "--videos", {"type": int, "help": "episodes to record as video (default 2; 0: none)"}),
    ("record", "--record", {"metavar": "DATASET", "help": "also add every real episode to this dataset"}),
    ("torch_threads", "--torch-threads", {"type": int, "help": "torch intra-op threads while planning (default 1: "
                                          "on a busy 2-core machine two made a learned-model plan ~10x slower); "
                                          "0 keeps torch's default"}),
]


def add_arguments(parser) -> None:
    for key, flag, options in FLAGS:
        if "choices" not in options:
            options = {"metavar": flag[2:].upper().replace("-", "_"), **options}
        parser.add_argument(flag, dest=key.replace(".", "_"), default=None, **options)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--fov", action="append", default=[], metavar="FACTOR=VALUE",
                        help="plan in the real scene changed by a factor of variation the task declares (repeatable), "
                             "e.g. --fov block_mass=1.5; the MuJoCo oracle sees the change, a learned model does not")
    add_config_arguments(parser)


def config_from_args(args) -> PlanConfig:
    """The run's config: defaults, then ``--config`` files, flags and ``key=value`` overrides."""
    values = {key: getattr(args, key.replace(".", "_")) for key, _, _ in FLAGS}
    values["progress"] = False if args.no_progress else None
    values["fov"] = parse_fov(getattr(args, "fov", None)) or None
    return load_config(args.config, args.overrides, cls=PlanConfig, values=values)


def command_line(cfg: PlanConfig) -> str:
    """The ``embodied plan`` command that reproduces this run: flags, then ``key=value`` for the other settings."""
    values = {k: v for k, v in asdict(cfg).items() if k != "planner"}
    values |= {f"planner.{k}": v for k, v in asdict(cfg.planner).items()}
    parts = ["embodied", "plan"]
    for key, flag, _ in FLAGS:
        value = values.pop(key)
        parts += [] if value is None else [flag, str(value)]
    if not values.pop("progress"):
        parts.append("--no-progress")
    parts += [x for k, v in values.pop("fov").items() for x in ("--fov", f"{k}={v:g}")]
    return " ".join(parts + [f"{k}={v}" for k, v in values.items() if v is not None])


def run(args) -> int:
    cfg = config_from_args(args)
    with torch_threads(cfg.torch_threads):
        return plan(cfg)


def plan(cfg: PlanConfig) -> int:
    """Run the config's MPC episodes, write ``plan.json`` and print one summary line."""
    task, p = canonical_task(cfg.task), cfg.planner
    model_name = cfg.model if cfg.model in REFERENCE_MODELS else Path(cfg.model).name
    suffix = "_prior" if cfg.prior and p.name != "policy" else ""  # never overwrite the run without a prior
    out = check_writable(cfg.out or Path("runs") / "plan" / f"{task}_{model_name}_{p.name}{suffix}", "--out")
    if cfg.record:
        check_writable(cfg.record, "--record")
    settings = {k: v for k, v in asdict(p).items() if k != "name"}
    if settings["elites"] is None and settings["samples"] is not None:  # keep the default 10% elite fraction
        settings["elites"] = max(2, min(p.samples, p.samples // 10))
    planner = make_planner(p.name, task=task, **settings, objective=cfg.objective, seed=cfg.seed)
    s = planner.settings
    if s.samples * s.horizon > MAX_SEQUENCE_STEPS:
        raise UserError(f"planner.horizon x planner.samples = {s.horizon} x {s.samples} imagined steps per iteration "
                        f"is more than {MAX_SEQUENCE_STEPS:,}, too many to hold in memory; "
                        "lower --horizon or --samples")
    model = load_model(cfg.model, task, factors=cfg.fov)
    if cfg.prior:
        planner.prior = load_prior(cfg.prior, model)
        if s.terminal_value and planner.prior.critic is None:
            raise UserError(f"planner.terminal_value = {s.terminal_value}: the prior {cfg.prior} has no critic "
                            "(an SB3 SAC or PPO policy has one); set planner.terminal_value=0")
    env = make_task(task, obs_type="pixels_proprio", width=model.image_size, height=model.image_size,
                    **({"factors": cfg.fov} if cfg.fov else {}))
    if model.abilities.simulator_state:  # score the start once: a task the oracle cannot score fails before planning
        env.reset(seed=cfg.seed)
        model.reward(model.encode(None, None, sim_state=torch.from_numpy(env.get_state())[None]))
    recorder = None
    try:
        if cfg.record:
            recorder = EpisodeRecorder(cfg.record, env, range(cfg.seed, cfg.seed + cfg.episodes), f"mpc-{p.name}")
        result = run_mpc(env, model, planner, episodes=cfg.episodes, seed=cfg.seed, control_hz=cfg.control_hz,
                         video_dir=out / "videos" if cfg.videos > 0 else None, max_steps=cfg.max_steps,
                         replan_every=cfg.replan_every, videos=cfg.videos, progress=cfg.progress, recorder=recorder)
    finally:
        if recorder is not None:
            recorder.close()
        env.close()
    model_ref = cfg.model if cfg.model in REFERENCE_MODELS else str(Path(resolve_run_dir(cfg.model)).resolve())
    result = {"task": task, "model": model_ref, "oracle": model.abilities.simulator_state,
              "objective": cfg.objective, "seed": cfg.seed, "factors": cfg.fov,
              "prior": str(Path(cfg.prior).resolve()) if cfg.prior else None, **result,
              "command": command_line(cfg), "torch_threads": torch.get_num_threads()}
    atomic_write_json(out / "plan.json", result)
    miss = "" if cfg.control_hz is None else f", {result['deadline_miss_rate']:.0%} missed {cfg.control_hz:g} Hz"
    print(f"{task} {p.name}{' with a prior' if suffix else ''} on {model_name}: success {result['success_rate']:.0%}, "
          f"return {result['return_mean']:.2f}, {result['ms_per_action_median']:.1f} ms/action median "
          f"(p95 {result['ms_per_action_p95']:.1f}){miss} -> {out / 'plan.json'}")
    return 0
