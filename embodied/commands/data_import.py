"""`embodied import`: turn a LeRobot dataset (format v2.0 / v2.1) into one of ours (see :mod:`embodied.lerobot`).

    embodied import --lerobot path/to/lerobot_dataset --out data/my_robot [--task my_robot]
                    [--image-key observation.images.top]

Then train on it like any dataset: `embodied train --config configs/push_recurrent.yaml data=data/my_robot
out=runs/my_robot task=my_robot`.
"""
from __future__ import annotations

import json
from pathlib import Path

from embodied.io import check_writable
from embodied.lerobot import IMAGE_KEY
from embodied.lerobot_import import import_lerobot


def add_arguments(parser) -> None:
    parser.add_argument("--lerobot", type=Path, required=True,
                        help="LeRobot dataset folder (the one holding meta/info.json and data/)")
    parser.add_argument("--out", type=Path, required=True, help="new dataset folder")
    parser.add_argument("--task", default=None,
                        help="name of the dataset's task (default: the dataset's robot_type, else its folder name)")
    parser.add_argument("--image-key", default=IMAGE_KEY, help=f"the camera to import (default {IMAGE_KEY})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    check_writable(args.out, "--out")
    summary = import_lerobot(args.lerobot, args.out, task=args.task, image_key=args.image_key,
                             progress=not args.no_progress)
    print(json.dumps(summary))
    return 0
