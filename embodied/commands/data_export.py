"""`embodied export`: write a dataset as a LeRobot dataset (format v2.1; see :mod:`embodied.lerobot`).

    embodied export --data data/push --out lerobot/push [--fps 20]

Frames go into the parquet files as PNG (lossless), so `embodied import` gives the dataset back exactly.
"""
from __future__ import annotations

import json
from pathlib import Path

from embodied.io import check_writable
from embodied.lerobot_export import export_lerobot


def add_arguments(parser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (made by `embodied collect`)")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the LeRobot dataset")
    parser.add_argument("--fps", type=float, default=None,
                        help="frames per second for the timestamps (default: the dataset's own, else 20)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    check_writable(args.out, "--out")
    summary = export_lerobot(args.data, args.out, fps=args.fps, progress=not args.no_progress)
    print(json.dumps(summary))
    return 0
