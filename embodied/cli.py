"""The `embodied` command. Each subcommand is one module of :mod:`embodied.commands`.

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``;
this file only lists them. Bad input (``UserError``, ``ValueError``) and file-system errors (``OSError``)
are reported as one line, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

import embodied  # noqa: F401  (sets MUJOCO_GL before mujoco loads)

# before torch loads: idle OpenMP threads sleep instead of spinning, so a core taken by another process does not
# stall every parallel region
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SUBCOMMANDS = {
    "collect": "collect MuJoCo episodes into a dataset",
    "import": "turn a LeRobot dataset (v2.0/v2.1) into a dataset",
    "export": "write a dataset as a LeRobot dataset (v2.1)",
    "train": "train a world model on a dataset",
    "plan": "run receding-horizon MPC in the real task",
    "policy": "train an SB3 policy inside a world model and evaluate it in the real task",
    "validate": "score a world model against MuJoCo with the validation probes",
    "compare": "compare several world models on the same probes",
    "bench": "measure MuJoCo, imagination, planning and training throughput",
    "demo": "collect, train, plan, validate and report on the default task",
    "report": "write one HTML page for a run folder: curves, held-out metrics, videos, plans, probes",
    "checkpoints": "list the trained checkpoints shipped with the package (usable as --model NAME)",
}
MODULES = {"import": "data_import", "export": "data_export"}  # module names that differ (`import` is a keyword)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the chosen subcommand's module is imported (fast start-up)."""
    parser = argparse.ArgumentParser(prog="embodied", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = f"embodied.commands.{MODULES.get(name, name)}"
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    args.argv = argv  # what the subcommand was given, for the command line a run records
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ValueError as err:
        print(f"embodied {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only or missing file: one line, files already written are kept
        from embodied.io import os_error_message

        print(f"embodied {args.command}: error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"embodied {args.command}: interrupted; completed work is saved and a re-run resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
