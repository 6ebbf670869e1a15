"""Performance benchmark: MuJoCo, imagination, planning and training throughput in one run.

``embodied bench --out DIR``
writes ``bench.json`` and ``bench.md``. Every measurement runs in its own
spawned process so its peak resident memory is its own; each reports the
median of repeated timed runs after a warm-up. Learned models are built from
their default configs: speed does not depend on the trained weights.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ARCHS = ("recurrent", "transformer")
TASKS = ("reach", "push", "occlusion")


def _median_rate(fn, units: int, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median units/s and median seconds of ``fn`` over ``repeats`` timed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    med = statistics.median(times)
    return units / med, med


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup_process(threads: int) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(threads)


# ---- MuJoCo ground truth ----------------------------------------------------------------------
def _mujoco_steps(task: str, steps: int) -> float:
    import numpy as np

    from embodied.envs import make_task

    env = make_task(task, obs_type="pixels")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, env.action_space.shape[0]))

    def run():
        env.reset(seed=0)
        for a in actions:
            env.step(a)

    rate, _ = _median_rate(run, steps, repeats=3)
    return rate


def bench_mujoco(task: str, steps: int, workers: int) -> dict:
    """Env steps/s with 64x64 rendering, one env in this process and ``workers`` envs in parallel."""
    _setup_process(1)
    single = _mujoco_steps(task, steps)
    ctx = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_setup_process, initargs=(1,)) as pool:
        list(pool.map(_mujoco_steps, [task] * workers, [10] * workers))  # warm the workers
        start = time.perf_counter()
        list(pool.map(_mujoco_steps, [task] * workers, [steps] * workers))
        wall = time.perf_counter() - start
    # each worker ran 1 warm-up + 3 timed passes of `steps`
    parallel = workers * 4 * steps / wall
    return {"steps_per_s_1env": single, f"steps_per_s_{workers}workers": parallel, "workers": workers,
            "peak_rss_mb": _peak_rss_mb()}


# ---- learned models ---------------------------------------------------------------------------
def _spec(task: str) -> dict:
    from embodied.collect import dataset_spec

    return dataset_spec(task, 64)


def _context_batch(model, spec: dict, batch: int):
    import torch

    t = model.context
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 255, (batch, t, 64, 64, 3), dtype=torch.uint8, generator=g)
    actions = torch.rand(batch, t - 1, spec["action_dim"], generator=g) * 2 - 1
    proprio = torch.randn(batch, t, spec["proprio_dim"], generator=g)
    return frames, actions, proprio


def bench_imagination(arch: str, task: str, batches: list[int], horizon: int, threads: int) -> dict:
    """Latent steps/s (with reward) at several batch sizes and decoded frames/s."""
    _setup_process(threads)
    import torch

    from embodied.models import build_model

    spec = _spec(task)
    model = build_model({"arch": arch}, spec).eval()
    out = {"params": sum(p.numel() for p in model.parameters())}
    with torch.no_grad():
        frames, actions, proprio = _context_batch(model, spec, 1)
        state = model.encode(frames, actions, proprio)
        for b in batches:
            acts = torch.rand(b, horizon, spec["action_dim"]) * 2 - 1
            rate, _ = _median_rate(lambda: model.rollout(state, acts), b * horizon, repeats=5)
            out[f"latent_steps_per_s_b{b}"] = rate
        final, _ = model.rollout(state, torch.zeros(64, 1, spec["action_dim"]))
        out["decoded_frames_per_s_b64"], _ = _median_rate(lambda: model.decode(final), 64, repeats=5)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def bench_planning(model_name: str, planner: str, task: str, actions: int, threads: int) -> dict:
    """Milliseconds per planned action at default planner settings, warm-started as in MPC."""
    _setup_process(threads)
    import numpy as np
    import torch

    from embodied.models.oracle import MujocoOracle
    from embodied.envs import make_task
    from embodied.planners import make_planner

    env = make_task(task, obs_type="pixels_proprio")
    obs, _ = env.reset(seed=0)
    if model_name == "mujoco":
        model = MujocoOracle(task)
        state_fn = lambda: model.encode(None, None, sim_state=torch.from_numpy(env.get_state())[None])  # noqa: E731
    else:
        from embodied.models import build_model

        spec = _spec(task)
        model = build_model({"arch": model_name}, spec).eval()
        frames, acts, proprio = _context_batch(model, spec, 1)
        state_fn = lambda: model.encode(frames, acts, proprio)  # noqa: E731
    plan = make_planner(planner, task=task)
    times = []
    with torch.no_grad():
        for i in range(actions + 1):
            start = time.perf_counter()
            sequence = plan.plan(model, state_fn())
            elapsed = time.perf_counter() - start
            plan.advance(1)
            env.step(np.asarray(sequence[0]))
            if i >= 1:  # the first plan is a warm-up
                times.append(elapsed * 1000)
    times.sort()
    return {"ms_per_action_median": statistics.median(times), "ms_per_action_p95": times[int(0.95 * (len(times) - 1))],
            "settings": plan.settings.to_dict(), "peak_rss_mb": _peak_rss_mb()}


def bench_training(arch: str, task: str, iters: int, threads: int) -> dict:
    """Training frames/s (forward, backward, Adam step) at the model's default batch and window."""
    _setup_process(threads)
    import numpy as np
    import torch

    from embodied.collect import collect
    from embodied.config import load_config
    from embodied.data import Dataset, WindowSampler
    from embodied.models import build_model

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / f"{task}_{arch}.yaml", [])
    with tempfile.TemporaryDirectory() as tmp:
        collect(task, 3, Path(tmp), workers=1, progress=False)
        data = Dataset(Path(tmp), task=task)
        model = build_model(dict(cfg.model), data.manifest)
        sampler = WindowSampler(data.episodes, cfg.train.seq_len)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        rng = np.random.default_rng(0)
        batch = sampler.sample(cfg.train.batch, rng)
        step = [0]

        def train_step():
            loss, _ = model.loss(batch, step[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step[0] += 1

        frames = cfg.train.batch * cfg.train.seq_len
        rate, _ = _median_rate(lambda: [train_step() for _ in range(iters)], frames * iters, repeats=3)
    return {"frames_per_s": rate, "batch": cfg.train.batch, "seq_len": cfg.train.seq_len, "peak_rss_mb": _peak_rss_mb()}


# ---- driver -----------------------------------------------------------------------------------
def _isolated(fn, *args):
    """Run fn(*args) in a fresh spawned process (its own peak RSS)."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def run_bench(out: Path, quick: bool = False, task: str = "push", workers: int = 2, threads: int = 2,
              progress: bool = True) -> dict:
    """Run every measurement and write bench.json and bench.md to ``out``."""
    from tqdm import tqdm

    steps = 100 if quick else 1000
    batches = [1, 64] if quick else [1, 64, 256, 1024]
    n_actions = 1 if quick else 20
    tasks = (task,) if quick else TASKS
    archs = ARCHS[:1] if quick else ARCHS
    jobs = [(f"mujoco.{t}", bench_mujoco, (t, steps, workers)) for t in tasks]
    jobs += [(f"imagination.{a}", bench_imagination, (a, task, batches, 10, threads)) for a in archs]
    for planner in ("cem",) if quick else ("cem", "mppi"):
        jobs += [(f"planning.{planner}.{m}", bench_planning, (m, planner, task, n_actions, threads))
                 for m in (*archs, "mujoco")]
    jobs += [(f"training.{a}", bench_training, (a, task, 1 if quick else 5, threads)) for a in archs]
    results: dict = {}
    for name, fn, args in tqdm(jobs, desc="bench", disable=not progress):
        start = time.perf_counter()
        results[name] = _isolated(fn, *args)
        results[name]["wall_s"] = time.perf_counter() - start
    mujoco_rate = results[f"mujoco.{task}"]["steps_per_s_1env"]
    b = 64 if quick else 256
    ratios = {a: results[f"imagination.{a}"][f"latent_steps_per_s_b{b}"] / mujoco_rate for a in archs}
    bench = {
        f"imagine_over_mujoco_b{b}": max(ratios.values()),
        f"imagine_over_mujoco_b{b}_per_arch": ratios,
        "cem_ms_per_action_median": results["planning.cem.recurrent"]["ms_per_action_median"],
        "task": task, "quick": quick,
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads, "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    from embodied.io import atomic_write_bytes, atomic_write_json

    atomic_write_json(out / "bench.json", bench)
    atomic_write_bytes(out / "bench.md", markdown_table(bench).encode())
    return bench


def markdown_table(bench: dict) -> str:
    """The README table of a bench.json."""
    r, task = bench["results"], bench["task"]
    lines = ["| measurement | value |", "| --- | --- |"]
    for t in TASKS:
        if f"mujoco.{t}" in r:
            m = r[f"mujoco.{t}"]
            par = next(v for k, v in m.items() if k.startswith("steps_per_s_") and k.endswith("workers"))
            lines.append(f"| MuJoCo {t} step + 64x64 render, 1 env / {m['workers']} workers | "
                         f"{m['steps_per_s_1env']:,.0f} / {par:,.0f} steps/s |")
    for a in (a for a in ARCHS if f"imagination.{a}" in r):
        m = r[f"imagination.{a}"]
        rates = ", ".join(f"b{k.rsplit('_b', 1)[1]}: {v:,.0f}" for k, v in m.items() if k.startswith("latent_steps"))
        lines.append(f"| {a} latent steps/s ({m['params'] / 1e6:.2f}M params) | {rates} |")
        lines.append(f"| {a} decoded frames/s (batch 64) | {m['decoded_frames_per_s_b64']:,.0f} |")
    for k, v in bench.items():
        if k.startswith("imagine_over_mujoco") and k.endswith("per_arch"):
            lines.append(f"| imagination / MuJoCo ({task}, {k.split('_')[3]}) | "
                         + ", ".join(f"{a}: {x:.1f}x" for a, x in v.items()) + " |")
    for name, m in r.items():
        if name.startswith("planning."):
            _, planner, model = name.split(".")
            lines.append(f"| {planner.upper()} ms/action, {model} (median / p95) | "
                         f"{m['ms_per_action_median']:.1f} / {m['ms_per_action_p95']:.1f} |")
    for a in (a for a in ARCHS if f"training.{a}" in r):
        m = r[f"training.{a}"]
        lines.append(f"| {a} training (batch {m['batch']} x {m['seq_len']}) | {m['frames_per_s']:,.0f} frames/s |")
    lines.append("| peak RSS per measurement | " + ", ".join(f"{k}: {v['peak_rss_mb']:.0f} MB" for k, v in r.items()) + " |")
    return "\n".join(lines) + "\n"
