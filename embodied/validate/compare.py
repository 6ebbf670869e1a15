"""Several world models on the same probes and the same start states.

Each model is validated with the same task, settings and seed (so the probes
draw the same start states and actions), its full report written to
``OUT/<name>/``; ``OUT/compare.json`` holds the score table and
``OUT/compare.html`` the side-by-side table and overlaid plots.
"""
from __future__ import annotations

from pathlib import Path

from embodied.io import atomic_write_json
from embodied.load import REFERENCE_MODELS
from embodied.report import write_compare_report
from embodied.validate.runner import validate

FORMAT = "embodied-compare/1"


def _name(spec, taken: set) -> str:
    p = Path(str(spec))
    base = p.name if str(spec) not in REFERENCE_MODELS else str(spec)
    if base in taken:  # two runs with the same folder name
        base = "_".join(p.parts[-2:]) if len(p.parts) > 1 else base
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def compare(models: list, task: str, out: Path, quick: bool = False, seed: int = 0, probes=None,
            media: bool = True, progress=print, command: str | None = None) -> dict:
    """Validate every model under ``out/<name>`` and write compare.json and compare.html."""
    if len(models) < 1:
        raise ValueError(f"pass at least one model (run directory or {' | '.join(REFERENCE_MODELS)})")
    out = Path(out)
    taken, validations = set(), {}
    for spec in models:
        name = _name(spec, taken)
        validations[name] = validate(task, spec, out / name, quick=quick, seed=seed, probes=probes, media=media,
                                     model_name=name, progress=progress, command=command)
    probes_seen = []
    for v in validations.values():
        probes_seen += [p for p in v["probes"] if p not in probes_seen]
    first = next(iter(validations.values()))
    table = {p: {n: v["probes"].get(p, {}).get("score", {}).get("model") for n, v in validations.items()}
             for p in probes_seen}
    for p in probes_seen:
        base = first["probes"].get(p, {}).get("score", {})
        table[p] |= {"copy_last": base.get("copy_last"), "mujoco": base.get("mujoco")}
    summary = {"format": FORMAT, "task": first["task"], "settings": first["settings"],
               "models": {n: str(s) for n, s in zip(validations, models)}, "command": command,
               "checkpoints": {n: v.get("checkpoint") for n, v in validations.items()}, "scores": table,
               "metrics": {p: {n: v["probes"].get(p, {}).get("metrics", {}).get("model")
                               for n, v in validations.items()}
                           for p in probes_seen},
               "reports": {n: f"{n}/report.html" for n in validations}}
    atomic_write_json(out / "compare.json", summary)
    write_compare_report(out, validations)
    return summary
