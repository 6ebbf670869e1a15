"""`embodied bench`: throughput of MuJoCo, imagination, planning and training in one run (bench.json, bench.md)."""
from __future__ import annotations

from pathlib import Path

from embodied.benchmarks.bench import markdown_table, run_bench
from embodied.envs.registry import task_class
from embodied.errors import UserError
from embodied.io import check_writable


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--task", default="push")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the model measurements")
    parser.add_argument("--quick", action="store_true", help="a smoke run of every measurement (seconds)")


def run(args) -> int:
    for flag, value in (("--workers", args.workers), ("--threads", args.threads)):
        if value < 1:
            raise UserError(f"{flag} {value} must be at least 1")
    task_class(args.task)  # an unknown task fails here, not in the first measurement
    check_writable(args.out, "--out")
    bench = run_bench(args.out, quick=args.quick, task=args.task, workers=args.workers, threads=args.threads)
    print(markdown_table(bench))
    print(f"wrote {args.out / 'bench.json'}")
    return 0

