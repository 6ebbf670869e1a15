"""`embodied demo`: the main job on the default task; grows as the pipeline lands."""
from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--task", default="push")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--episodes", type=int, default=60)


def run(args) -> int:
    from embodied.collect import collect

    result = collect(args.task, args.episodes, args.out / "data")
    print(f"dataset {args.out / 'data'}: {result['manifest']['episodes_total']} episodes, "
          f"{result['frames_per_s']:.0f} frames/s")
    return 0
