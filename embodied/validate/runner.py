"""Running the probes a task declares on one model, and writing validation.json and report.html."""
from __future__ import annotations

import importlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from embodied.envs.registry import canonical_task
from embodied.io import atomic_write_json
from embodied.load import REFERENCE_MODELS, load_model, resolve_run_dir
from embodied.report import write_report
from embodied.validate import scoring
from embodied.validate.harness import PROBES, Harness, Settings

FORMAT = "embodied-validation/1"
WHO_TEXT = {"model": "the world model under test", "copy_last": "copy-last-frame baseline",
            "action_blind": "the model under test with every action replaced by zeros",
            "mujoco": "the MuJoCo simulator through the same reading pipeline (the truth)"}


def probes_to_run(task_probes: dict, probes=None) -> list[str]:
    """The probes to run: ``probes`` (in that order) or every probe the task declares (in :data:`PROBES` order)."""
    unknown = [p for p in (probes or task_probes) if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}: choose from {', '.join(PROBES)}")
    if not probes:
        return [p for p in PROBES if p in task_probes]
    missing = [p for p in probes if p not in task_probes]
    if missing:
        raise ValueError(f"probe(s) {missing} do not apply to this task; choose from {', '.join(task_probes)}")
    return list(probes)


def run_probes(task: str, model, settings: Settings, probes=None, progress=print) -> tuple[dict, dict]:
    """Run the probes; returns (JSON-able results per probe, media cases per probe)."""
    harness = Harness(task, model, settings)
    results, media = {}, {}
    try:
        for name in probes_to_run(harness.probes, probes):
            t0 = time.perf_counter()
            torch.manual_seed(settings.seed)  # stochastic models imagine the same samples on a re-run
            module = importlib.import_module(f"embodied.validate.{name}")
            raw = module.run(harness)
            scored = scoring.probe_score(raw["errors"], raw.get("floors", {}))
            results[name] = {
                "question": module.QUESTION,
                "description": " ".join((module.__doc__ or "").split()),
                "score": scored["score"],
                "metrics": raw["metrics"],
                "errors": raw["errors"],
                "combined_error": scored["combined_error"],
                "reference": scored["reference"],
                "separation": scored["separation"],
                "separates": scored["separates"],
                "curves": raw.get("curves", {}),
                "settings": raw.get("settings", {}),
                "wall_s": round(time.perf_counter() - t0, 2),
            }
            for extra in ("scatter", "notes"):
                if extra in raw:
                    results[name][extra] = raw[extra]
            media[name] = raw.get("cases", [])
            if progress:
                s = scored["score"]
                progress(f"  {name:18s} model {_fmt(s['model'])}  copy_last {_fmt(s['copy_last'])}  "
                         f"action_blind {_fmt(s['action_blind'])}  mujoco {_fmt(s['mujoco'])}  "
                         f"(separation {scored['separation']:.2f}, {results[name]['wall_s']:.1f}s)")
    finally:
        harness.close()
    return results, media


def json_safe(obj):
    """Plain JSON: numpy scalars to Python, NaN and infinities to null (strict parsers reject NaN)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def _fmt(x) -> str:
    return "  n/a" if x is None else f"{x:5.1f}"


def _checkpoint_info(spec) -> dict | None:
    """Run directory and training step of a checkpoint, so every number names what made it."""
    if not isinstance(spec, (str, Path)) or str(spec) in REFERENCE_MODELS:
        return None
    folder = Path(resolve_run_dir(str(spec)))  # a shipped checkpoint's name: its folder
    info = {"run_dir": str(folder.resolve())}
    try:
        cfg = json.loads((folder / "config.json").read_text())
        info |= {k: cfg[k] for k in ("step", "arch", "task") if k in cfg}
    except (OSError, ValueError):
        pass
    return info


def validate(task: str, model, out: Path, quick: bool = False, seed: int = 0, probes=None,
             media: bool = True, model_name: str | None = None, progress=print, command: str | None = None,
             factors: dict | None = None) -> dict:
    """Run the task's probes (or ``probes``) on ``model`` (an object, a run folder or a reference model's
    name); write ``validation.json`` (atomically) and ``report.html`` under ``out``.

    ``factors``: factors of variation of the MuJoCo scene the probes run in (the truth and the oracle
    alike), recorded in ``validation.json``.
    """
    out = Path(out)
    spec = model
    task = canonical_task(task)
    factors = dict(factors or {})
    model = load_model(model, task, factors=factors)
    if canonical_task(model.task or task) != task:
        raise ValueError(f"the model was trained on task {model.task!r}, not {task!r}: pass --task {model.task}")
    settings = Settings(quick=quick, seed=seed, factors=factors)
    t0 = time.perf_counter()
    under = "".join(f", {k}={v:g}" for k, v in factors.items())
    if progress:
        progress(f"validate {model_name or spec} on {task} ({'quick' if quick else 'full'} settings, seed {seed}"
                 f"{under})")
    results, cases = run_probes(task, model, settings, probes, progress)
    validation = {
        "format": FORMAT,
        "task": task,
        "model": model_name or (str(spec) if isinstance(spec, (str, Path)) else type(model).__name__),
        "model_class": type(model).__name__,
        "who": WHO_TEXT,
        "settings": {"quick": quick, "seed": seed},
        "factors": factors,
        "command": command,
        "checkpoint": _checkpoint_info(spec),
        "scores": {p: r["score"] for p, r in results.items()},
        "probes": results,
        "wall_s": round(time.perf_counter() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
    }
    validation = json_safe(validation)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "validation.json", validation)
    write_report(out, validation, cases if media else {})
    return validation
