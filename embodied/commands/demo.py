"""`embodied demo`: the main job on the default task, as the commands a user would type.

With a shipped checkpoint for the task (``embodied checkpoints``; ``--shipped NAME`` picks one, ``--shipped
none`` ignores them), the demo is about that model, trained long and measured. Two lanes run side by side,
one process each (one torch thread each, so the two cores are shared and neither is oversubscribed):

    lane 1: plan with the shipped model and with the MuJoCo oracle on the same seeds (real MuJoCo episodes)
            -> validate the shipped model (its report)
    lane 2: collect -> train a small fresh model, the step count cut so the whole demo fits in ~10 minutes
            on 2 cores -> plan with the fresh model (its output goes to ``out/fresh.log``)
    -> a summary that says which is which

Without one: collect -> train -> plan (learned model, MuJoCo oracle, random shooting) -> validate -> report,
all on the fresh model. Each stage is skipped when its output already exists, so a killed demo resumes
where it stopped (an unfinished training run resumes from its checkpoint). ``--scale full`` trains the
default config and plans and validates at full size (its own output folder, runs/demo_full by default).
``out/demo.json`` holds the summary for machines.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

from embodied.cli import main as cli
from embodied.envs.registry import canonical_task
from embodied.errors import UserError
from embodied.io import atomic_write_json, check_writable
from embodied.run_page import write_run_page
from embodied.shipped import list_shipped, shipped_for, shipped_path

SCALES = {
    # episodes: collected for the fresh model; configs / train: added to `embodied train` (steps: train.steps,
    #   None keeps the config's); steps_beside_shipped: train.steps when a shipped model is the demo's point;
    # plan_episodes: the fresh model's (and, without a shipped model, the oracle's) MPC episodes;
    #   shipped_plan_episodes: the shipped model's and the oracle's, on the same seeds; plan: extra `plan` flags;
    # probes: the validation preset; validate: extra `validate` flags.
    #   train: per arch (the pixel models' demo heads at x1: the configs' x10 buys reward precision with pixel
    #   accuracy, which this budget cannot spare).
    # The measured times are in the README ("make demo").
    "demo": {"episodes": 150, "configs": [],
             "train": {"recurrent": ["train.batch=8", "model.object_weight=1", "model.reward_weight=1"],
                       "transformer": ["train.batch=8", "model.object_weight=1", "model.reward_weight=1"],
                       "slots": []},
             "steps": 2500, "steps_beside_shipped": 600, "plan_episodes": 4, "shipped_plan_episodes": 10,
             "plan": [], "probes": "quick", "validate": []},
    "full": {"episodes": 600, "configs": [], "train": {}, "steps": None, "steps_beside_shipped": None,
             "plan_episodes": 20, "shipped_plan_episodes": 20, "plan": [], "probes": "full", "validate": []},
}


def _stage(name: str, done: Path, argv: list[str]) -> None:
    if done.exists():
        print(f"[demo] {name}: {done} exists, skipping (delete it to redo)")
        return
    _run(name, argv)


def _run(name: str, argv: list[str]) -> None:
    print(f"[demo] {name}: embodied {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = cli(argv)
    if code != 0:
        raise UserError(f"stage {name!r} failed (exit {code}); fix the error above and re-run "
                        "`embodied demo` to resume")
    print(f"[demo] {name}: done in {time.perf_counter() - start:.0f}s", flush=True)


def _trained(model: Path, steps: int | None) -> bool:
    """True when the run in ``model`` finished (metrics.json final) with at least ``steps`` steps."""
    try:
        metrics = json.loads((model / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(metrics.get("final")) and (steps is None or int(metrics.get("train.steps") or 0) >= steps)


def _train(model: Path, data: Path, task: str, arch: str, s: dict, steps: int | None) -> None:
    """Train the fresh model (or resume an unfinished run of it); skipped when it already finished."""
    if _trained(model, steps):
        print(f"[demo] train: {model / 'metrics.json'} is final, skipping (delete {model} to redo)")
        return
    config = Path("configs") / f"{task}_{arch}.yaml"
    if not config.is_file():  # not run from the repository: its configs/ folder beside the package
        config = Path(__file__).resolve().parents[2] / "configs" / config.name
    argv = ["train", "--config", str(config), *(a for c in s["configs"] for a in ("--config", c)),
            f"data={data}", f"out={model}", *s["train"].get(arch, []), *([f"train.steps={steps}"] if steps else [])]
    _run("train", argv + (["--resume"] if (model / "config.json").exists() else []))


def _plan(name: str, out: Path, task: str, model: str, episodes: int, s: dict, planner: str = "cem") -> dict:
    _stage(name, out / "plan.json", ["plan", "--task", task, "--model", model, "--planner", planner,
                                     "--episodes", str(episodes), "--out", str(out), *s["plan"]])
    return json.loads((out / "plan.json").read_text())


def _validate(out: Path, task: str, model: str, s: dict) -> dict:
    _stage("validate", out / "validation.json", ["validate", "--task", task, "--model", model, "--preset",
                                                 s["probes"], "--out", str(out), *s["validate"]])
    return json.loads((out / "validation.json").read_text())


def add_arguments(parser) -> None:
    parser.add_argument("--task", default="push", choices=["reach", "push", "occlusion"])
    parser.add_argument("--arch", default="slots", choices=["slots", "recurrent", "transformer"],
                        help="the fresh model's architecture (default slots, the object-factored model)")
    parser.add_argument("--scale", default="demo", choices=sorted(SCALES),
                        help="demo: ~10 min on 2 cores; full: default configs, 20 MPC episodes, full probes")
    parser.add_argument("--shipped", metavar="NAME",
                        help="the shipped checkpoint to demonstrate (default: the one for --task, if any; "
                             "none: train and demonstrate a fresh model only)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/demo, or runs/demo_<scale>)")


def _shipped_entry(args) -> dict | None:
    if args.shipped == "none":
        return None
    if args.shipped is None:
        return shipped_for(args.task, args.arch)
    if shipped_path(args.shipped) is None:
        names = ", ".join(e["name"] for e in list_shipped()) or "none shipped"
        raise UserError(f"--shipped {args.shipped!r}: no such shipped checkpoint (shipped: {names}); "
                        "`embodied checkpoints` lists them, --shipped none trains a fresh model only")
    entry = next(e for e in list_shipped() if e["name"] == args.shipped)
    if "error" in entry:
        raise UserError(f"--shipped {args.shipped!r}: {entry['error']}")
    if canonical_task(str(entry.get("task"))) != canonical_task(args.task):
        raise UserError(f"--shipped {args.shipped!r} was trained for task {entry.get('task')!r}, not {args.task!r}; "
                        f"pass --task {entry.get('task')}")
    return entry


def _line(label: str, p: dict) -> str:
    seeds = f"seed {p['seed']}" if p["episodes"] == 1 else f"seeds {p['seed']}-{p['seed'] + p['episodes'] - 1}"
    episodes = f"{p['episodes']} episode{'s' if p['episodes'] != 1 else ''}"
    return (f"  {label:44s} success {p['success_rate']:4.0%} ({episodes}, {seeds})  "
            f"return {p['return_mean']:7.2f}  {p['ms_per_action_median']:4.0f} ms/action")


def _probe_lines(validation: dict) -> list[str]:
    lines = []
    for probe, body in validation["probes"].items():
        score = body["score"]["model"]
        shown = "n/a (probe did not separate the baselines)" if score is None else f"{score:.0f} / 100"
        lines.append(f"  probe {probe:18s} model score {shown}")
    return lines


def _heldout(metrics: dict) -> str:
    def f(key, fmt):
        v = metrics.get(key)
        return "n/a" if v is None else format(v, fmt)
    return (f"held-out PSNR@8 {f('heldout.psnr_h8', '.1f')} dB (copy-last {f('heldout.copy_last_psnr_h8', '.1f')}), "
            f"body error@8 {f('heldout.body_err_h8', '.1f')} px "
            f"(copy-last {f('heldout.copy_last_body_err_h8', '.1f')})")


def run(args) -> int:
    s = SCALES[args.scale]
    default_out = Path("runs") / ("demo" if args.scale == "demo" else f"demo_{args.scale}")
    out = check_writable(args.out or default_out, "--out")
    entry = _shipped_entry(args)
    start = time.perf_counter()
    if entry is None:
        _fresh_only(args, s, out, start)
    else:
        _beside_shipped(args, s, out, entry, start)
    return 0


def _fresh_only(args, s: dict, out: Path, start: float) -> None:
    """No shipped model: everything on a model trained here (the demo as it was before checkpoints shipped)."""
    task, data, model = args.task, out / "data", out / f"{args.task}_{args.arch}"
    _stage("collect", data / "manifest.json",
           ["collect", "--task", task, "--episodes", str(s["episodes"]), "--out", str(data)])
    _train(model, data, task, args.arch, s, s["steps"])
    plans = {"model": _plan("plan (model)", out / "plan_model", task, str(model), s["plan_episodes"], s),
             "mujoco": _plan("plan (mujoco)", out / "plan_mujoco", task, "mujoco", s["plan_episodes"], s),
             "random": _plan("plan (random)", out / "plan_random", task, str(model), s["plan_episodes"], s,
                             planner="random")}
    validation = _validate(out / "validation", task, str(model), s)
    metrics = json.loads((model / "metrics.json").read_text())
    page = write_run_page(model)
    why = "--shipped none" if args.shipped == "none" else f"no shipped checkpoint for {task}"
    print(f"\n[demo] finished in {time.perf_counter() - start:.0f}s ({why}: everything below is a model trained here)")
    print(f"  world model ({args.arch}, {metrics.get('train.steps')} steps): {_heldout(metrics)}")
    labels = {"model": "CEM, learned model", "mujoco": "CEM, MuJoCo oracle", "random": "random shooting, learned model"}
    for n, p in plans.items():
        print(_line(labels[n], p))
    for line in _probe_lines(validation):
        print(line)
    print(f"  report: {(out / 'validation' / 'report.html').resolve()}")
    print(f"  run page: {page.resolve()}")
    _summary(out, start, args, None, {"fresh": plans["model"], "oracle": plans["mujoco"], "random": plans["random"]},
             validation, metrics, out / "validation" / "report.html", page)


def _beside_shipped(args, s: dict, out: Path, entry: dict, start: float) -> None:
    """The shipped model planned beside the MuJoCo oracle on the same seeds and validated; a small fresh model
    trained and planned beside it, so a user sees what training here buys and what the shipped model is."""
    task, name = args.task, entry["name"]
    where = out / "shipped" / name
    model_arg = entry["path"] if Path(name).exists() else name  # a folder called `name` here would win over the name
    print(f"[demo] shipped checkpoint {name!r} ({entry.get('arch')}, step {entry.get('step')}) at {entry['path']}: "
          "planning and validating it; a small fresh model is trained beside it")
    data, model = out / "data", out / f"{task}_{args.arch}_fresh"
    out.mkdir(parents=True, exist_ok=True)
    print(f"[demo] lane 2 (fresh model: collect, train, plan) runs beside this one; its log: {out / 'fresh.log'}",
          flush=True)
    lane = multiprocessing.get_context("spawn").Process(
        target=_fresh_lane, args=(out / "fresh.log", task, args.arch, s, str(data), str(model)))
    lane.start()
    try:
        n = s["shipped_plan_episodes"]
        plans = {"shipped": _plan(f"plan (shipped {name})", where / "plan_cem", task, model_arg, n, s),
                 "oracle": _plan("plan (mujoco)", where / "plan_mujoco", task, "mujoco", n, s)}
        validation = _validate(where / "validation", task, model_arg, s)
        print(f"[demo] lane 1 done in {time.perf_counter() - start:.0f}s; waiting for lane 2 "
              f"(follow it with: tail -f {out / 'fresh.log'})", flush=True)
        lane.join()
    finally:
        if lane.is_alive():  # lane 1 failed or was interrupted: stop lane 2 too (a re-run resumes both)
            lane.terminate()
            lane.join()
    if lane.exitcode != 0:
        raise UserError(f"the fresh model's lane failed (exit {lane.exitcode}); see {out / 'fresh.log'}, fix the "
                        "error and re-run `embodied demo` to resume")
    plans["fresh"] = json.loads((out / "plan_fresh" / "plan.json").read_text())
    metrics = json.loads((model / "metrics.json").read_text())
    page = write_run_page(model)
    recorded = ((entry.get("metrics") or {}).get("planning") or {}).get("model") or {}
    shipped_heldout = (entry.get("metrics") or {}).get("heldout") or {}
    print(f"\n[demo] finished in {time.perf_counter() - start:.0f}s")
    print(f"  SHIPPED model {name!r} ({entry.get('arch')}, {entry.get('step')} steps; trained by "
          f"`{entry.get('command')}`): {_heldout(shipped_heldout)} (shipped.json)")
    if recorded:
        print(f"    shipped.json records planning success {recorded['success_rate']:.0%} over {recorded['episodes']} "
              f"episodes ({recorded.get('planner')}, seeds {recorded.get('seeds')})")
    print(f"  FRESH model ({args.arch}, {metrics.get('train.steps')} steps, trained here on {data}): "
          f"{_heldout(metrics)}")
    print(_line(f"CEM, shipped model {name!r}", plans["shipped"]))
    print(_line("CEM, MuJoCo oracle (same seeds)", plans["oracle"]))
    print(_line(f"CEM, fresh model ({metrics.get('train.steps')} steps)", plans["fresh"]))
    if plans["oracle"]["success_rate"]:
        print("  shipped model / oracle success: "
              f"{plans['shipped']['success_rate'] / plans['oracle']['success_rate']:.2f}")
    print(f"  probes of the shipped model ({s['probes']} preset):")
    for line in _probe_lines(validation):
        print("  " + line)
    print(f"  report (shipped model): {(where / 'validation' / 'report.html').resolve()}")
    print(f"  run page (fresh model): {page.resolve()}")
    _summary(out, start, args, entry, plans, validation, metrics, where / "validation" / "report.html", page)


def _fresh_lane(log: Path, task: str, arch: str, s: dict, data: str, model: str) -> None:
    """Lane 2 of the demo beside a shipped model (a process of its own, output in ``log``): collect, train and
    plan with a small fresh model. Exits non-zero on failure."""
    with open(log, "a", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        data_dir, model_dir = Path(data), Path(model)
        try:
            _stage("collect", data_dir / "manifest.json",
                   ["collect", "--task", task, "--episodes", str(s["episodes"]), "--workers", "1",
                    "--out", data])
            _train(model_dir, data_dir, task, arch, s, s["steps_beside_shipped"])
            _plan("plan (fresh model)", model_dir.parent / "plan_fresh", task, model, s["plan_episodes"], s)
        except UserError as e:
            print(f"embodied demo: {e}", flush=True)
            sys.exit(2)


def _summary(out: Path, start: float, args, entry, plans: dict, validation: dict, metrics: dict, report: Path,
             page: Path) -> None:
    keep = ("success_rate", "success_any_rate", "return_mean", "episodes", "seed", "planner", "model",
            "ms_per_action_median", "command")
    atomic_write_json(out / "demo.json", {
        "task": args.task, "scale": args.scale, "wall_s": round(time.perf_counter() - start, 1),
        "shipped": None if entry is None else {k: entry.get(k) for k in ("name", "path", "arch", "step", "command")},
        "validated": "shipped" if entry is not None else "fresh",
        "plans": {k: {f: p.get(f) for f in keep} for k, p in plans.items()},
        "probe_scores": {p: b["score"]["model"] for p, b in validation["probes"].items()},
        "fresh_model": {"run_dir": metrics.get("run_dir"), "steps": metrics.get("train.steps"),
                        **{k: v for k, v in metrics.items() if k.startswith("heldout.")}},
        "report": str(report.resolve()), "run_page": str(page.resolve())})
