"""`embodied bench`: throughput of MuJoCo, imagination, planning and training, alone and beside a busy process."""
from __future__ import annotations

from pathlib import Path

from embodied.benchmarks.bench import run_bench
from embodied.benchmarks.table import markdown_table
from embodied.envs.registry import task_class
from embodied.errors import UserError
from embodied.io import check_writable
from embodied.threads import default_threads


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--task", default="push")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="torch threads of the imagination and training measurements (default: all cores but "
                             "one); planning uses 1, as embodied plan does")
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

