"""`embodied report RUN_DIR`: one HTML page per run folder (see :mod:`embodied.run_page`).

    embodied report runs/push_recurrent            # writes runs/push_recurrent/index.html
    embodied report runs/push_recurrent --out ~/push.html

Training curves, held-out metrics against copy-last, real | imagined | difference
videos, and the run's planning and validation results where they exist; prints
the page's path.
"""
from __future__ import annotations

from pathlib import Path

from embodied.io import check_writable
from embodied.run_page import write_run_page


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder made by `embodied train`")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="the page to write (default RUN_DIR/index.html; its pictures go beside it)")


def run(args) -> int:
    if args.out is not None:
        check_writable(args.out if args.out.is_dir() else args.out.parent, "--out")
    page = write_run_page(args.run_dir, args.out)
    print(page.resolve())
    return 0
