"""What a run folder holds and where its results are found: its JSON files, its TensorBoard scalars, and the
plan.json / validation.json files that later commands wrote about it (inside it, beside it, in runs/plan/).

:mod:`embodied.run_page` reads a run through these; a missing or unreadable file is reported, never raised.
"""
from __future__ import annotations

import json
from pathlib import Path

PAGE_DIR = "page"  # the run page's pictures, inside the run folder
SKIP_DIRS = {"tb", "videos", PAGE_DIR, "rounds"}  # folders of a run that hold no results of later commands


def is_run_folder(path: Path) -> bool:
    """A folder made by `embodied train`: it holds a checkpoint (config.json) or held-out metrics."""
    path = Path(path)
    return path.is_dir() and ((path / "config.json").is_file() or (path / "metrics.json").is_file())


def read_json(path: Path) -> tuple[dict | None, str | None]:
    """(content, None), or (None, why) for a missing or unreadable file: the page says so, never fails."""
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as err:
        return None, f"{path.name} could not be read ({type(err).__name__}: {err})"
    return (obj, None) if isinstance(obj, dict) else (None, f"{path.name} is not a JSON object")


def read_scalars(tb_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Every TensorBoard scalar under ``tb_dir`` as tag -> (steps, values), one value per step.

    ``train/loss`` is logged twice per step by `embodied train` (the all-reduced loss, then the
    model's own log of it); the first value of a step is kept.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get("scalars", []):
        seen: dict[int, float] = {}
        for e in acc.Scalars(tag):
            seen.setdefault(int(e.step), float(e.value))
        steps = sorted(seen)
        out[tag] = (steps, [seen[s] for s in steps])
    return out


def same_path(a, b: Path) -> bool:
    """Whether ``a`` names the folder ``b`` (False for anything that is not a path)."""
    try:
        return Path(a).resolve() == b.resolve()
    except (OSError, TypeError, ValueError):
        return False


def find_results(run_dir: Path, filename: str) -> list[tuple[Path, dict]]:
    """Every readable ``filename`` (plan.json, validation.json) in the places a run's results are kept."""
    run_dir = Path(run_dir)
    candidates = [run_dir / filename]
    for sub in sorted(p for p in subdirs(run_dir) if p.name not in SKIP_DIRS):
        candidates += [sub / filename] + [s / filename for s in subdirs(sub)]
    parent = run_dir.resolve().parent
    candidates += [s / filename for s in subdirs(parent)]
    candidates += [s / filename for s in subdirs(parent / "plan")]
    candidates += [s / filename for s in subdirs(Path("runs") / "plan")]
    found, seen = [], set()
    for path in candidates:
        try:
            key = path.resolve()
            if key in seen or not path.is_file():
                continue
        except OSError:
            continue
        seen.add(key)
        obj, _ = read_json(path)
        if obj is not None:
            found.append((path, obj))
    return found


def subdirs(path: Path) -> list[Path]:
    """The visible subfolders of ``path``, sorted; none when it cannot be listed."""
    try:
        return sorted(p for p in Path(path).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
