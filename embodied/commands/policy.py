"""`embodied policy train`: an SB3 agent trained only inside a world model, evaluated in the real task;
`embodied policy rank`: does the model's imagination rank policies as the real task does?

    embodied policy train --task reach --model RUN_DIR --algo sac --steps 20000 --out runs/policy/reach_sac
    embodied policy train --task reach --model RUN_DIR --baseline real --out ...
    embodied policy train --task reach --baseline random --out ...
    embodied policy train --config configs/policy.yaml model=RUN_DIR sac.batch_size=128
    embodied policy train ... --save-every 2000          # snapshots along training, for ranking
    embodied policy rank --task reach --model RUN_DIR --out runs/rank/reach \
        --policies random scripted:0 scripted:0.6 runs/policy/reach_sac runs/policy/reach_sac/snapshots/*.zip

Settings: the defaults (configs/policy.yaml documents them, SB3 hyper-parameters
included), then ``--config`` files, flags and ``key=value`` overrides; see
:mod:`embodied.policies.imagination` for what a run does and writes, and
:mod:`embodied.policies.rank` for the ranking (rank.json, scatter.png, rank.html).
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import asdict


from embodied.commands import torch_threads
from embodied.config import add_config_arguments, load_config
from embodied.io import check_writable
from embodied.policies.config import CHOICES, PolicyConfig
from embodied.policies.imagination import train_policy

# (config keys, flag, argparse options): each flag sets its config values
FLAGS = [
    (("task",), "--task", dict(help="task name (reach, push, occlusion)")),
    (("model",), "--model", dict(help="world-model run folder (needed except for --baseline random)")),
    (("algo",), "--algo", dict(choices=CHOICES["algo"])),
    (("steps",), "--steps", dict(type=int, help="env steps (transitions) to train for, all envs together")),
    (("out",), "--out", dict(help="output folder (default runs/policy/<task>_<model>_<algo>[_<baseline>])")),
    (("baseline",), "--baseline", dict(choices=CHOICES["baseline"], help="none: train in imagination; real: same "
                                       "budget in the real task; random: random actions")),
    (("num_envs",), "--num-envs", dict(type=int, help="parallel envs (default 4 for SAC, 16 for PPO)")),
    (("eval_episodes",), "--eval-episodes", dict(type=int, help="real (and imagined) evaluation episodes")),
    (("seed",), "--seed", dict(type=int)),
    (("split",), "--split", dict(choices=CHOICES["split"], help="dataset episodes that seed imagined episodes "
                                 "(default: the model's training episodes)")),
    (("start",), "--start", dict(choices=CHOICES["start"], help="seed from an episode's first frame (as after a "
                                 "real reset) or from any step")),
    (("horizon",), "--horizon", dict(type=int, help="imagined episode length (default 8; 0: the real task's); "
                                     "short rollouts stay where the model was trained")),
    (("obs",), "--obs", dict(choices=CHOICES["obs"], help="what the policy sees: the model's latent state, its "
                             "read-out heads (normalised proprio and object positions), or auto (default: the "
                             "read-out where the model has an object head, else the latent)")),
    (("history",), "--history", dict(choices=CHOICES["history"], help="real-env latent: encode the whole episode "
                                     "so far, or only the model's last context frames")),
    (("real_obs",), "--real-obs", dict(choices=CHOICES["real_obs"], help="--baseline real: observe the real env "
                                       "through the model (latent) or its true simulator state (privileged)")),
    (("reward_scale",), "--reward-scale", dict(type=float, help="training-only reward multiplier (default 10)")),
    (("sac.gamma", "ppo.gamma"), "--gamma", dict(type=float)),
    (("sac.learning_rate", "ppo.learning_rate"), "--lr", dict(type=float)),
    (("sac.updates_per_step",), "--updates-per-step", dict(type=float, help="SAC gradient updates per env "
                                                           "transition (default 0.5)")),
    (("videos",), "--videos", dict(type=int, help="real evaluation episodes recorded in eval.mp4 (0: none)")),
    (("save_every",), "--save-every", dict(type=int, help="snapshot the agent every N transitions into "
                                           "OUT/snapshots/policy_<steps>_steps.zip (0: none), for `policy rank`")),
    (("threads",), "--threads", dict(type=int, help="torch CPU threads (default 1: the machine is shared)")),
]


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("train", help="train SB3 in imagination (or a baseline) and evaluate it in the real task",
                       description=__doc__.split("\n\n")[0])
    for keys, flag, options in FLAGS:
        p.add_argument(flag, dest=keys[0].replace(".", "_"), default=None, **options)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(p)
    r = sub.add_parser("rank", help="run policies in the real task and in imagination from the same start states; "
                       "how well imagination ranks them", description=RANK_DESCRIPTION)
    for key, flag, options in RANK_FLAGS:
        if "choices" not in options and "metavar" not in options:
            options = {"metavar": flag[2:].upper(), **options}
        r.add_argument(flag, dest=f"rank_{key}", default=None, **options)
    r.add_argument("--fov", action="append", default=[], metavar="FACTOR=VALUE",
                   help="run the real task changed by a factor of variation it declares (repeatable)")
    r.add_argument("--no-progress", action="store_true", help="no per-policy lines")
    add_config_arguments(r)


RANK_DESCRIPTION = ("Each policy runs the same episodes in MuJoCo and in the model's imagination (same start states, "
                    "same steps); rank.json, scatter.png and rank.html report real and imagined success and return, "
                    "Spearman / Pearson, top-1 and pairwise agreement with bootstrap intervals. Put key=value "
                    "overrides before --policies.")
# (config key, flag, argparse options) of `policy rank`
RANK_FLAGS = [
    ("task", "--task", dict(help="task name (reach, push, occlusion)")),
    ("model", "--model", dict(help="the world model whose imagination ranks the policies (a run folder)")),
    ("policies", "--policies", dict(nargs="+", metavar="POLICY", help="random | scripted[:NOISE] (the task's expert "
                                    "with action noise, e.g. scripted:0.3) | a folder from `embodied policy train` | "
                                    "an SB3 zip (e.g. its snapshots/policy_<steps>_steps.zip)")),
    ("episodes", "--episodes", dict(type=int, help="episodes per policy in each world (default 20)")),
    ("seed", "--seed", dict(type=int, help="episode i resets with seed + 10000 + i; also seeds the bootstrap")),
    ("horizon", "--horizon", dict(type=int, help="steps per episode in both worlds (default 0: the task's)")),
    ("out", "--out", dict(help="output folder (default runs/rank/<task>_<model>)")),
    ("bootstrap", "--bootstrap", dict(type=int, help="episode resamples for the confidence intervals (default 1000)")),
    ("history", "--history", dict(choices=("episode", "context"), help="real-env latent of SB3 policies")),
    ("threads", "--threads", dict(type=int, help="torch CPU threads (default 1: the machine is shared)")),
]


def rank_config_from_args(args):
    """The ranking's config: defaults, then ``--config`` files, flags and ``key=value`` overrides."""
    from embodied.envs.factors import parse_fov
    from embodied.policies.rank import RankConfig

    values = {key: getattr(args, f"rank_{key}") for key, _, _ in RANK_FLAGS}
    values["progress"] = False if args.no_progress else None
    values["fov"] = parse_fov(args.fov) or None
    return load_config(args.config, args.overrides, cls=RankConfig, values=values)


def rank_command_line(cfg) -> str:
    """The `embodied policy rank` command that reproduces a ranking."""
    parts = ["embodied", "policy", "rank", "--task", cfg.task, "--model", str(cfg.model), "--episodes",
             str(cfg.episodes), "--seed", str(cfg.seed), "--horizon", str(cfg.horizon), "--bootstrap",
             str(cfg.bootstrap), "--history", cfg.history, "--threads", str(cfg.threads)]
    parts += ["--out", str(cfg.out)] if cfg.out else []
    parts += [x for k, v in cfg.fov.items() for x in ("--fov", f"{k}={v:g}")]
    parts += [] if cfg.progress else ["--no-progress"]
    parts += [f"level={cfg.level:g}", "--policies", *cfg.policies]
    return shlex.join(parts)


def run_rank(args) -> int:
    from embodied.policies.rank import rank_policies

    cfg = rank_config_from_args(args)
    check_writable(cfg.out or "runs/rank", "--out")
    log = (lambda line: print(line, file=sys.stderr)) if cfg.progress else None
    with torch_threads(cfg.threads):
        r = rank_policies(cfg, rank_command_line(cfg), log=log)
    s = r["statistics"]
    parts = [f"{metric} spearman {_num(s[metric]['spearman']['value'])} "
             f"[{_num(s[metric]['spearman']['ci'][0])}, {_num(s[metric]['spearman']['ci'][1])}], "
             f"pairwise {_num(s[metric]['pairwise']['value'])}"
             for metric in ("success", "return") if s.get(metric)]
    print(f"{r['task']}: {len(r['policies'])} policies x {r['episodes']} episodes, imagined vs real: "
          f"{'; '.join(parts) or 'no statistic defined'} ({r['wall_s']:.0f} s) -> {r['rank_json']}")
    return 0


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def config_from_args(args) -> PolicyConfig:
    """The run's config: defaults, then ``--config`` files, flags and ``key=value`` overrides."""
    values = {key: getattr(args, keys[0].replace(".", "_")) for keys, _, _ in FLAGS for key in keys}
    values["progress"] = False if args.no_progress else None
    return load_config(args.config, args.overrides, cls=PolicyConfig, values=values)


def command_line(cfg: PolicyConfig) -> str:
    """The command that reproduces this run: flags, then ``key=value`` for the chosen algorithm's settings."""
    values = asdict(cfg)
    parts = ["embodied", "policy", "train"]
    for keys, flag, _ in FLAGS:
        if "." not in keys[0] and values[keys[0]] is not None:
            parts += [flag, str(values[keys[0]])]
    if not cfg.progress:
        parts.append("--no-progress")
    if cfg.baseline != "random":
        parts += [f"{cfg.algo}.{k}={v}".replace(" ", "") for k, v in values[cfg.algo].items() if v is not None]
    return " ".join(parts)


def run(args) -> int:
    if args.action == "rank":
        return run_rank(args)
    cfg = config_from_args(args)
    check_writable(cfg.out or "runs/policy", "--out")
    with torch_threads(cfg.threads):
        r = train_policy(cfg, command_line(cfg))
    imag = r["imagined_return_mean"]
    imag_txt = "" if imag is None else f", imagined return {imag:.2f}"
    print(f"{r['task']} {r['algo']} trained in {r['trained_in']}: real success {r['real_success_rate']:.0%}, "
          f"real return {r['real_return_mean']:.2f}{imag_txt} ({r['wall_s']:.0f} s) -> {r['policy_json']}")
    return 0
