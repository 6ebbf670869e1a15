"""On-policy rounds: record real MPC episodes with the current model, fine-tune on them, repeat.

    embodied train --config configs/push_recurrent.yaml --rounds 7 [rounds.episodes=40 rounds.steps=1000 ...]

A model trained on collected data plans in states that data never showed (a
pusher grazing the block, a block pinned to a wall); its own episodes show them.
Each round plans ``rounds.episodes`` real episodes with the latest model (fresh
seeds from ``rounds.seed`` up, never clashing with collected ones), adds them
to the rounds' dataset, and trains a copy of the latest run ``rounds.steps``
more steps on ``rounds.seq_len``-frame windows (long windows teach long open
loops). Under the run folder ``out``::

    out/                        the base run (trained to train.steps first)
    out/rounds/data/            the base dataset's episodes (hard links) + every round's episodes
    out/rounds/round_01/ ...    the run after each round: checkpoint, metrics, videos
    out/rounds/rounds.json      per round: seeds, success of its recorded episodes, steps, wall time

Every stage is resumable: ``kill -9`` at any point and the same command goes on
(recorded episodes are kept, a half-trained round resumes from its checkpoint,
a finished round is never redone).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from embodied import checkpoint
from embodied.config import Config, RoundsConfig
from embodied.data import episode_files, episode_path, read_manifest
from embodied.envs.registry import canonical_task, make_task
from embodied.errors import UserError
from embodied.io import atomic_write_bytes, atomic_write_json
from embodied.planners import make_planner
from embodied.planners.mpc import run_mpc
from embodied.planners.record import EpisodeRecorder
from embodied.train import train


def run_rounds(cfg: Config, rc: RoundsConfig | None = None, progress: bool = True) -> dict:
    """Train the base run (or resume it), then the on-policy rounds (``rc``, default ``cfg.rounds``);
    returns the summary."""
    rc = rc or cfg.rounds
    base = Path(cfg.out)
    root = base / "rounds"
    summary_path = root / "rounds.json"
    summary = _read_summary(summary_path)
    if _step(base) != cfg.train.steps:
        _say(f"base run {base} to step {cfg.train.steps}")
        train(cfg, resume=True, progress=progress)
    if rc.rounds == 0:
        return summary
    data = root / "data"
    _link_dataset(Path(cfg.data.path), data)
    run = base
    for r in range(1, rc.rounds + 1):
        out = root / f"round_{r:02d}"
        steps = cfg.train.steps + r * rc.steps
        done = next((row for row in summary["rounds"] if row["round"] == r), None)
        if done is not None:
            run = out
            continue
        start = time.perf_counter()
        seeds = range(rc.seed + (r - 1) * rc.episodes, rc.seed + r * rc.episodes)
        _say(f"round {r}/{rc.rounds}: {rc.episodes} {rc.planner} episodes with {run}")
        _record(run, cfg.task, data, seeds, rc.planner)
        _copy_run(run, out)
        _say(f"round {r}/{rc.rounds}: train {out} to step {steps} on {data}")
        round_cfg = replace(cfg, out=str(out), data=replace(cfg.data, path=str(data)),
                            train=replace(cfg.train, steps=steps, seq_len=rc.seq_len))
        metrics = train(round_cfg, resume=True, progress=progress)
        summary["rounds"].append({"round": r, "run": str(out), "seeds": [seeds.start, seeds.stop - 1],
                                  "recorded_success_rate": _success_rate(data, seeds), "train_steps": steps,
                                  "heldout": {k: v for k, v in metrics.items() if k.startswith("heldout.")},
                                  "wall_s": time.perf_counter() - start})
        atomic_write_json(summary_path, summary)
        run = out
    summary["latest"] = str(run)
    atomic_write_json(summary_path, summary)
    return summary


def _step(run: Path) -> int | None:
    """The step of the run's checkpoint, or None without one."""
    return checkpoint.read_config(run)["step"] if (run / "config.json").exists() else None


def _say(text: str) -> None:
    print(f"embodied train: {text}", flush=True)


def _read_summary(path: Path) -> dict:
    if not path.exists():
        return {"rounds": []}
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: unreadable ({err}); restore it, or delete the rounds folder to redo them") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("rounds"), list):
        raise UserError(f"{path}: not a rounds summary; restore it, or delete the rounds folder to redo them")
    return summary


def _link_dataset(source: Path, data: Path) -> None:
    """The base dataset's episodes in ``data`` as hard links (copies across file systems); idempotent."""
    manifest = read_manifest(source)
    (data / "episodes").mkdir(parents=True, exist_ok=True)
    for path in episode_files(source):
        target = data / "episodes" / path.name
        if target.exists():
            continue
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    if not (data / "manifest.json").exists():
        atomic_write_json(data / "manifest.json", manifest)


def _record(run: Path, task: str, data: Path, seeds: range, planner_name: str) -> None:
    """Plan and record the round's episodes whose seeds the dataset does not hold yet."""
    missing = [s for s in seeds if not episode_path(data, s).exists()]
    if not missing:
        return
    model = checkpoint.load(run, task=task)
    env = make_task(canonical_task(task), obs_type="pixels_proprio", width=model.image_size,
                    height=model.image_size)
    recorder = EpisodeRecorder(data, env, missing, f"mpc-{planner_name}")
    try:
        for seed in missing:  # one episode per call: a kill loses at most the episode in flight
            planner = make_planner(planner_name, task=task, seed=seed)
            run_mpc(env, model, planner, episodes=1, seed=seed, videos=0, recorder=recorder)
    finally:
        recorder.close()
        env.close()


def _copy_run(source: Path, out: Path) -> None:
    """Start a round from a copy of the previous run's checkpoint (atomically: a kill leaves none or all)."""
    if (out / "config.json").exists():
        return
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cfg = checkpoint.read_config(source)
    for entry in cfg["files"].values():
        name = entry.get("path")
        shutil.copyfile(source / name, tmp / name)
    atomic_write_bytes(tmp / "config.json", (source / "config.json").read_bytes())
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def _success_rate(data: Path, seeds: range) -> float:
    """Share of the round's recorded episodes solved at some step (the manifest's ``success``), not at the end."""
    rows = [row for row in read_manifest(data)["episodes"] if row["seed"] in seeds]
    return sum(bool(row["success"]) for row in rows) / len(rows) if rows else 0.0
