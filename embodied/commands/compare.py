"""`embodied compare`: several world models on the same probes and start states (see :mod:`embodied.validate.compare`).

    embodied compare runs/a runs/b mujoco --task push --out cmp/push [--quick]
    embodied compare --config cmp.yaml seed=1        # models: [runs/a, runs/b] in the file

Positional arguments are models, except ``key=value`` config overrides.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from embodied.commands.validate import add_common_arguments, check_probes, common_flags, common_values
from embodied.config import check_range, load_config
from embodied.envs.registry import canonical_task
from embodied.errors import UserError
from embodied.io import check_writable
from embodied.load import REFERENCE_MODELS, load_model
from embodied.validate.compare import compare

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


@dataclass
class CompareConfig:
    models: list[str]            # run folders of trained models and/or reference models (mujoco, copy_last, ...)
    out: str                     # folder for compare.json, compare.html and one report per model
    task: str = "push"           # the models' task
    quick: bool = False          # few start states (tests, demo)
    seed: int = 0                # every model sees the same start states for the same seed
    probes: list[str] = field(default_factory=list)  # a subset of the task's probes; empty: all of them
    media: bool = True           # GIFs of the best and worst cases in each report

    def check(self, source: str) -> None:
        if not self.models:
            raise UserError(f"no models to compare in {source}; pass run folders or {' | '.join(REFERENCE_MODELS)}")
        check_range(source, {"seed": self.seed}, low=0)
        check_probes(self.task, self.probes, source)


def check_models(models: list[str], task: str) -> None:
    """Load every run folder once before any probe runs: a missing, broken or other-task model fails in seconds."""
    for spec in models:
        if spec not in REFERENCE_MODELS:
            load_model(spec, canonical_task(task))


def add_arguments(parser) -> None:
    parser.add_argument("items", nargs="*", metavar="MODEL | key=value",
                        help=f"run folders (or {' | '.join(REFERENCE_MODELS)}), and config overrides such as seed=1")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config file; several are merged in order (later files win)")
    add_common_arguments(parser)


def run(args) -> int:
    overrides = [a for a in args.items if OVERRIDE.match(a)]
    models = [a for a in args.items if not OVERRIDE.match(a)] or None
    cfg = load_config(args.config, overrides, cls=CompareConfig,
                      values={"models": models, **common_values(args, True if args.quick else None)})
    check_writable(cfg.out, "--out")
    check_models(cfg.models, cfg.task)
    command = shlex.join(["embodied", "compare", *cfg.models, "--task", cfg.task, "--out", cfg.out,
                          *(["--quick"] if cfg.quick else []), "--seed", str(cfg.seed), *common_flags(cfg)])
    summary = compare(cfg.models, cfg.task, cfg.out, quick=cfg.quick, seed=cfg.seed, probes=cfg.probes or None,
                      media=cfg.media, command=command)
    names = list(summary["models"])
    width = max(12, *(len(n) for n in names))
    print(f"{'probe':18s} " + " ".join(f"{n:>{width}s}" for n in [*names, "copy_last", "mujoco"]))
    for p, row in summary["scores"].items():
        print(f"{p:18s} " + " ".join(f"{('n/a' if row.get(n) is None else f'{row[n]:.1f}'):>{width}s}"
                                     for n in [*names, "copy_last", "mujoco"]))
    print(f"report: {(Path(cfg.out) / 'compare.html').resolve()}")
    return 0
