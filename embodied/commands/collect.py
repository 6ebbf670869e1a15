"""`embodied collect`: record MuJoCo episodes into a dataset (see :mod:`embodied.collect`)."""
from __future__ import annotations

import os
from pathlib import Path

from embodied.collect import COLLECT_POLICIES, collect
from embodied.dataset_checks import fov_args
from embodied.envs.factors import check_factor_setting, parse_fov
from embodied.envs.registry import task_class
from embodied.errors import UserError
from embodied.io import check_writable

SIZES = tuple(4 * 2 ** n for n in range(2, 8))  # 16 .. 512: the image codecs halve a frame down to 4x4


def add_arguments(parser) -> None:
    parser.add_argument("--task", default="push", help="reach | push | occlusion | any Gymnasium MuJoCo id")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--policy", default="mixed", choices=COLLECT_POLICIES)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    parser.add_argument("--seed", type=int, default=0, help="first reset seed of a new dataset")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-actions", action="store_true",
                        help="store no actions (video without labels: the policy still acts, its actions are not "
                             "recorded); a dataset may mix such episodes with labelled ones")
    parser.add_argument("--fov", action="append", default=[], metavar="FACTOR=VALUE|LOW..HIGH",
                        help="record under a factor of variation the task declares (repeatable): a fixed value, e.g. "
                             "--fov block_mass=0.45, or a range each episode draws its value from uniformly (by its "
                             "seed), e.g. --fov block_mass=0.2..0.45; an unknown name lists the task's factors")


def check_args(args) -> None:
    """One-line errors for out-of-range numbers and an unwritable --out, before any work."""
    most = 4 * (os.cpu_count() or 1)
    if args.episodes < 1:
        raise UserError(f"--episodes must be at least 1, not {args.episodes}")
    if args.size not in SIZES:
        raise UserError(f"--size must be 4 x a power of two from {SIZES[0]} to {SIZES[-1]} (e.g. 64), not {args.size}")
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, not {args.seed}")
    if not 1 <= args.workers <= most:
        raise UserError(f"--workers must be from 1 to {most} (4 per CPU; each holds an env), not {args.workers}")
    args.factors = check_factor_setting(task_class(args.task), parse_fov(args.fov))
    check_writable(args.out, "--out")


def run(args) -> int:
    check_args(args)
    result = collect(args.task, args.episodes, args.out, args.policy, args.workers, args.size, args.seed,
                     factors=args.factors, actions=not args.no_actions)
    m = result["manifest"]
    free = sum(r.get("actions") is False for r in m["episodes"])
    factors = fov_args(m.get("factors", {}))
    under = f" under {', '.join(factors)}" if factors else ""
    print(f"{args.out}: {m['episodes_total']} episodes{f' ({free} action-free)' if free else ''}, "
          f"{m['steps_total']} steps of {m['task']}{under} "
          f"(policies {m['policies']}, success {m['success_rate']:.0%}); "
          f"collected {result['frames']} frames in {result['wall_s']:.1f}s = {result['frames_per_s']:.0f} frames/s "
          f"with {result['workers']} workers")
    return 0
