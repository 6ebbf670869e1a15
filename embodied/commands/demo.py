"""`embodied demo`: the main job on the default task, as the commands a user would type.

collect -> train -> plan (learned model, MuJoCo oracle, random shooting) ->
validate -> report. Each stage is skipped when its output already exists, so
a killed demo resumes where it stopped. ``--scale full`` trains the default
config instead of the ~4-minute demo budget.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from embodied.cli import main as cli
from embodied.errors import UserError
from embodied.io import check_writable
from embodied.run_page import write_run_page

SCALES = {
    # episodes to collect, training overrides, MPC episodes, validation preset
    # demo: a 4-minute model; the heads at x1 (the configs' x10 buys reward precision with pixel accuracy,
    # which this budget cannot spare)
    "demo": {"episodes": 150, "train": ["train.steps=2500", "train.batch=8", "model.object_weight=1",
                                        "model.reward_weight=1"], "plan_episodes": 4, "probes": "quick"},
    "full": {"episodes": 600, "train": [], "plan_episodes": 20, "probes": "full"},
}


def _stage(name: str, done: Path, argv: list[str]) -> None:
    if done.exists():
        print(f"[demo] {name}: {done} exists, skipping (delete it to redo)")
        return
    print(f"[demo] {name}: embodied {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = cli(argv)
    if code != 0:
        raise UserError(f"stage {name!r} failed (exit {code}); fix the error above and re-run `embodied demo` to resume")
    print(f"[demo] {name}: done in {time.perf_counter() - start:.0f}s", flush=True)


def add_arguments(parser) -> None:
    parser.add_argument("--task", default="push", choices=["reach", "push", "occlusion"])
    parser.add_argument("--arch", default="recurrent", choices=["recurrent", "transformer"])
    parser.add_argument("--scale", default="demo", choices=sorted(SCALES), help="demo: ~10 min on 2 cores; full: default configs")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))


def run(args) -> int:
    s, out, task = SCALES[args.scale], check_writable(args.out, "--out"), args.task
    data, model = out / "data", out / f"{task}_{args.arch}"
    start = time.perf_counter()
    _stage("collect", data / "manifest.json",
           ["collect", "--task", task, "--episodes", str(s["episodes"]), "--out", str(data)])
    _stage("train", model / "metrics.json",
           ["train", "--config", f"configs/{task}_{args.arch}.yaml", f"data={data}", f"out={model}", *s["train"]])
    for name, target in (("model", str(model)), ("mujoco", "mujoco")):
        _stage(f"plan ({name})", out / f"plan_{name}" / "plan.json",
               ["plan", "--task", task, "--model", target, "--planner", "cem",
                "--episodes", str(s["plan_episodes"]), "--out", str(out / f"plan_{name}")])
    _stage("plan (random)", out / "plan_random" / "plan.json",
           ["plan", "--task", task, "--model", str(model), "--planner", "random",
            "--episodes", str(s["plan_episodes"]), "--out", str(out / "plan_random")])
    _stage("validate", out / "validation" / "validation.json",
           ["validate", "--task", task, "--model", str(model), "--preset", s["probes"], "--out", str(out / "validation")])
    metrics = json.loads((model / "metrics.json").read_text())
    plans = {n: json.loads((out / f"plan_{n}" / "plan.json").read_text()) for n in ("model", "mujoco", "random")}
    validation = json.loads((out / "validation" / "validation.json").read_text())
    print(f"\n[demo] finished in {time.perf_counter() - start:.0f}s")
    print(f"  world model ({args.arch}): held-out PSNR@8 {metrics['heldout.psnr_h8']:.1f} dB "
          f"(copy-last {metrics['heldout.copy_last_psnr_h8']:.1f}), body error@8 {metrics['heldout.body_err_h8']:.1f} px "
          f"(copy-last {metrics['heldout.copy_last_body_err_h8']:.1f})")
    labels = {"model": "CEM, learned model", "mujoco": "CEM, MuJoCo oracle", "random": "random shooting, learned model"}
    for n, p in plans.items():
        print(f"  {labels[n]:31s} success {p['success_rate']:.0%}  return {p['return_mean']:.2f}  "
              f"{p['ms_per_action_median']:.0f} ms/action")
    for probe, body in validation["probes"].items():
        score = body["score"]["model"]
        shown = "n/a (probe did not separate the baselines)" if score is None else f"{score:.0f} / 100"
        print(f"  probe {probe:18s} model score {shown}")
    print(f"  report: {(out / 'validation' / 'report.html').resolve()}")
    print(f"  run page: {write_run_page(model).resolve()}")
    return 0
