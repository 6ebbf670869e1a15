"""`embodied validate`: score a world model against MuJoCo with the task's probes (see :mod:`embodied.validate`).

    embodied validate --task push --model runs/push --out val/push [--preset quick] [--probes causality]
    embodied validate --config val.yaml seed=1 probes=[fidelity,causality]
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from embodied.config import add_config_arguments, check_range, load_config
from embodied.envs.factors import check_factors, parse_fov
from embodied.envs.registry import task_class
from embodied.errors import UserError
from embodied.io import check_writable
from embodied.load import REFERENCE_MODELS
from embodied.threads import default_threads
from embodied.validate.harness import PROBES
from embodied.validate.runner import probes_to_run, validate


@dataclass
class ValidateConfig:
    model: str                   # run folder of a trained model, or a reference model (mujoco, copy_last, ...)
    out: str                     # folder for validation.json and report.html
    task: str = "push"           # the model's task: reach | push | occlusion | a Gymnasium MuJoCo id
    quick: bool = False          # few start states (tests, demo, ~10-30 s); false: the full preset
    seed: int = 0                # start states are the same for the same seed
    probes: list[str] = field(default_factory=list)  # a subset of the task's probes; empty: all of them
    media: bool = True           # GIFs of the best and worst cases in the report
    fov: dict = field(default_factory=dict)  # factors of variation of the MuJoCo scene, e.g. {block_mass: 1.5}

    def check(self, source: str) -> None:
        check_range(source, {"seed": self.seed}, low=0)
        check_probes(self.task, self.probes, source)
        self.fov = check_factors(task_class(self.task), self.fov)


def check_probes(task: str, probes: list[str], source: str) -> None:
    """A one-line UserError unless every probe in ``probes`` applies to ``task``."""
    try:
        probes_to_run(task_class(task).probes, probes)
    except ValueError as err:
        raise UserError(f"{err} (probes in {source})") from None


def add_common_arguments(parser) -> None:
    """The flags `validate` and `compare` share; each becomes the config value of the same name."""
    parser.add_argument("--task", help="reach | push | occlusion (the model's task; default push)")
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, help="start states are the same for the same seed (default 0)")
    parser.add_argument("--probes", help=f"comma-separated subset of {','.join(PROBES)} (default: the task's)")
    parser.add_argument("--no-media", action="store_true", help="skip the GIFs of best and worst cases")
    parser.add_argument("--quick", action="store_true", help="few start states (tests, demo)")


def common_values(args, quick: bool | None) -> dict:
    """Config values of the shared flags (None: not given, so a config file or the default decides)."""
    probes = None if args.probes is None else [p.strip() for p in args.probes.split(",") if p.strip()]
    return {"task": args.task, "out": None if args.out is None else str(args.out), "seed": args.seed,
            "probes": probes, "quick": quick, "media": False if args.no_media else None}


def common_flags(cfg) -> list[str]:
    """The flags after the models that repeat a run of ``cfg`` (recorded in the JSON)."""
    return ((["--probes", ",".join(cfg.probes)] if cfg.probes else []) + ([] if cfg.media else ["--no-media"]))


def add_arguments(parser) -> None:
    parser.add_argument("--model", help=f"run folder of a trained model, a shipped checkpoint's name "
                        f"(`embodied checkpoints`), or {' | '.join(REFERENCE_MODELS)}")
    parser.add_argument("--preset", choices=["quick", "full"],
                        help="quick: few start states (tests, demo, ~10-30 s); full: more start states (default)")
    parser.add_argument("--fov", action="append", default=[], metavar="FACTOR=VALUE",
                        help="run the probes in the MuJoCo scene changed by a factor of variation the task declares "
                             "(repeatable), e.g. --fov block_mass=1.5")
    add_common_arguments(parser)
    add_config_arguments(parser)


def run(args) -> int:
    quick = True if args.quick or args.preset == "quick" else (False if args.preset == "full" else None)
    cfg = load_config(args.config, args.overrides, cls=ValidateConfig,
                      values={"model": args.model, **common_values(args, quick), "fov": parse_fov(args.fov) or None})
    check_writable(cfg.out, "--out")
    torch.set_num_threads(default_threads())
    fov = [x for k, v in cfg.fov.items() for x in ("--fov", f"{k}={v:g}")]
    command = shlex.join(["embodied", "validate", "--task", cfg.task, "--model", cfg.model, "--out", cfg.out,
                          "--preset", "quick" if cfg.quick else "full", "--seed", str(cfg.seed), *common_flags(cfg),
                          *fov])
    validation = validate(cfg.task, cfg.model, cfg.out, quick=cfg.quick, seed=cfg.seed, probes=cfg.probes or None,
                          media=cfg.media, command=command, factors=cfg.fov)
    out = Path(cfg.out)
    bad = [p for p, r in validation["probes"].items() if not r["separates"]]
    print(f"wrote {out / 'validation.json'}")
    print(f"report: {(out / 'report.html').resolve()}")
    if bad:
        print(f"warning: probe(s) {', '.join(bad)} could not separate the baselines from MuJoCo on these start "
              "states: their scores are not meaningful", file=sys.stderr)
    return 0
