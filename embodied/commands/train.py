"""`embodied train`: train a world model on a dataset (see :mod:`embodied.train`).

    embodied train --config configs/reach_recurrent.yaml [--config configs/debug.yaml] \\
        [--resume] [data=DIR] [out=DIR] [train.steps=2000 ...]
    embodied train --config configs/push_recurrent.yaml --rounds 7 [rounds.episodes=40 ...]  # on-policy rounds
    torchrun --nproc_per_node=2 -m embodied.cli train --config ...   # DistributedDataParallel
"""
from __future__ import annotations

import os
import shlex

from embodied.config import add_config_arguments, load_config
from embodied.errors import UserError
from embodied.io import check_writable
from embodied.rounds import run_rounds
from embodied.train import train


def add_arguments(parser) -> None:
    add_config_arguments(parser, required=True)
    parser.add_argument("--resume", action="store_true", help="continue the run in `out` from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--rounds", type=int, default=None, metavar="K",
                        help="then K on-policy rounds: record MPC episodes with the latest model, fine-tune, repeat "
                             "(rounds.* in the config; resumable, every round kept under OUT/rounds)")


def run(args) -> int:
    cfg = load_config(args.config, args.overrides, values={"rounds.rounds": args.rounds})
    check_writable(cfg.out, "out")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.rounds.rounds:
        if world > 1:
            raise UserError("on-policy rounds run in one process: drop torchrun, or train with rounds.rounds=0")
        summary = run_rounds(cfg, progress=not args.no_progress)
        print(f"{cfg.out}: {len(summary['rounds'])} on-policy rounds, latest run {summary.get('latest', cfg.out)} "
              f"(recorded episodes solved at some step, by round: "
              f"{[round(r['recorded_success_rate'], 2) for r in summary['rounds']]})")
        return 0
    launcher = f"torchrun --nproc_per_node={world} -m embodied.cli" if world > 1 else "embodied"
    command = shlex.join([*launcher.split(), *args.argv])
    m = train(cfg, resume=args.resume, command=command, progress=not args.no_progress)
    if m:
        h = max((int(k.rsplit("_h", 1)[1]) for k in m if k.startswith("heldout.psnr_h")), default=None)
        score = (f"; held-out h{h}: PSNR {m[f'heldout.psnr_h{h}']:.2f} dB (copy-last "
                 f"{m[f'heldout.copy_last_psnr_h{h}']:.2f})") if h else ""
        if h and m.get(f"heldout.body_err_h{h}") is not None:
            score += (f", body error {m[f'heldout.body_err_h{h}']:.1f} px "
                      f"(copy-last {m[f'heldout.copy_last_body_err_h{h}']:.1f})")
        print(f"{cfg.out}: {m['train.steps']} steps in {m['train.wall_s']:.0f}s "
              f"({m['train.frames_per_s'] or 0:.0f} frames/s){score}")
    return 0
