"""`embodied collect`: record MuJoCo episodes into a dataset (see :mod:`embodied.collect`)."""
from __future__ import annotations

from pathlib import Path

from embodied.collect import COLLECT_POLICIES, collect
from embodied.errors import UserError


def add_arguments(parser) -> None:
    parser.add_argument("--task", default="push", help="reach | push | occlusion | any Gymnasium MuJoCo id")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--policy", default="mixed", choices=COLLECT_POLICIES)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    parser.add_argument("--seed", type=int, default=0, help="first reset seed of a new dataset")
    parser.add_argument("--out", type=Path, required=True)


def run(args) -> int:
    if args.episodes < 1:
        raise UserError("--episodes must be at least 1")
    result = collect(args.task, args.episodes, args.out, args.policy, args.workers, args.size, args.seed)
    m = result["manifest"]
    print(f"{args.out}: {m['episodes_total']} episodes, {m['steps_total']} steps of {m['task']} "
          f"(policies {m['policies']}, success {m['success_rate']:.0%}); "
          f"collected {result['frames']} frames in {result['wall_s']:.1f}s = {result['frames_per_s']:.0f} frames/s "
          f"with {result['workers']} workers")
    return 0
