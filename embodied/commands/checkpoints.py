"""`embodied checkpoints`: the trained models that ship with the package (see :mod:`embodied.shipped`).

    embodied checkpoints            # a table: name, task, arch, step, key metrics, folder
    embodied checkpoints --json     # every shipped.json, for machines

Each name works wherever a run folder does (``--model push``). The folder is
``embodied/shipped/`` or ``$EMBODIED_SHIPPED_DIR``.
"""
from __future__ import annotations

import json

from embodied.shipped import list_shipped, shipped_root


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the shipped checkpoints as JSON")


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def row(entry: dict) -> dict[str, str]:
    """The table row of one shipped checkpoint: its identity and key metrics as short strings."""
    if "error" in entry:
        return {"name": entry["name"], "task": "?", "arch": "?", "step": "?", "PSNR@8": "-", "body@8": "-",
                "plan": "-", "oracle": "-", "probes": "-", "path": entry["path"] + f"  ({entry['error']})"}
    metrics = entry.get("metrics") or {}
    heldout = metrics.get("heldout") or {}
    planning = metrics.get("planning") or {}
    model, oracle = planning.get("model") or {}, planning.get("oracle") or {}
    scores = [s for s in ((metrics.get("probes") or {}).get("scores") or {}).values() if s is not None]
    psnr, copy = heldout.get("heldout.psnr_h8"), heldout.get("heldout.copy_last_psnr_h8")
    episodes = f" ({model['episodes']} ep)" if model.get("episodes") else ""
    return {"name": entry["name"], "task": str(entry.get("task")), "arch": str(entry.get("arch")),
            "step": str(entry.get("step")),
            "PSNR@8": _num(psnr, ".1f") + ("" if copy is None else f" / {copy:.1f}"),
            "body@8": _num(heldout.get("heldout.body_err_h8"), ".2f"),
            "plan": _pct(model.get("success_rate")) + (episodes if model else ""),
            "oracle": _pct(oracle.get("success_rate")),
            "probes": f"{sum(scores) / len(scores):.0f} ({len(scores)})" if scores else "-",
            "path": entry["path"]}


def run(args) -> int:
    entries = list_shipped()
    if args.json:
        print(json.dumps({"root": str(shipped_root()), "checkpoints": entries}, indent=1))
        return 0
    if not entries:
        print(f"none shipped: {shipped_root()} holds no checkpoints yet (ship a trained run with "
              "`python -m embodied.shipped RUN_DIR NAME ...`)")
        return 0
    rows = [row(e) for e in entries]
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(f"{c:{width[c]}s}" for c in cols).rstrip())
    for r in rows:
        print("  ".join(f"{r[c]:{width[c]}s}" for c in cols).rstrip())
    print("PSNR@8: held-out dB, model / copy-last; body@8: px; plan / oracle: planning success in the real "
          "task on the same seeds; probes: mean score (count). `--model NAME` loads one; --json for every number.")
    return 0
