"""Performance benchmark: MuJoCo, imagination, planning and training throughput in one run.

``embodied bench --out DIR``
writes ``bench.json`` and ``bench.md``. Every measurement runs in its own
spawned process so its peak resident memory is its own; each reports the
median of repeated timed runs after a warm-up. Learned models are built from
their default configs (``configs/TASK_ARCH.yaml``) and fitted to a tiny dataset
collected in the measurement's process: speed does not depend on the trained
weights. The contended measurements run once on the machine as it is and once
beside one competing busy process the benchmark starts and stops itself, and
report the ratio of the two times (``contended_over_idle``, > 1 is slower).
Imagination and training also report their arithmetic against the machine's
matmul rate (:mod:`embodied.benchmarks.ceiling`): how much faster each could
get without doing less work.
"""
from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

from embodied.benchmarks.ceiling import count_gflop, share_of_peak
from embodied.benchmarks.table import markdown_table

ARCHS = ("slots", "recurrent", "transformer")
CONTENDED = ("slots", "recurrent")  # the archs measured also beside a busy process (and in --quick)
TASKS = ("reach", "push", "occlusion")
PLAN_THREADS = 1  # the torch threads `embodied plan` plans with
# the amortised end of the planner dial (README, "Amortised planning"): CEM three steps deep around a policy prior,
# scored with the prior's critic beyond it
AMORTISED = {"horizon": 3, "samples": 16, "iterations": 1, "elites": 4, "terminal_value": 1.0}
# (m, k, n): a square GEMM, the transformer's fused qkv projection at batch 256 x 2 tokens, a conv-like tall GEMM
GEMM_SHAPES = ((1024, 1024, 1024), (512, 128, 384), (4096, 256, 256))


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


# ---- a competing busy process -----------------------------------------------------------------
def _spin(started, stop) -> None:
    """A pure-Python busy loop until ``stop`` is set or its parent is gone."""
    parent = os.getppid()
    started.set()
    while not stop.is_set() and os.getppid() == parent:
        for _ in range(10_000):
            pass


@contextmanager
def busy_process():
    """One competing CPU-bound process (spawned) for the duration of the block; always stopped on exit."""
    ctx = get_context("spawn")
    started, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_spin, args=(started, stop), daemon=True)
    proc.start()
    try:
        if not started.wait(60):
            raise RuntimeError("the competing busy process did not start")
        yield proc
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


def contended(measure) -> dict:
    """``measure()`` (seconds) on the machine as it is and beside one busy process, and their ratio."""
    idle = measure()
    with busy_process():
        busy = measure()
    return {"idle_s": idle, "contended_s": busy, "contended_over_idle": busy / idle}


# ---- the machine's arithmetic ------------------------------------------------------------------
def bench_matmul(threads: int) -> dict:
    """The best float32 GEMM rate (GFLOP/s) at ``threads`` torch threads, and the rate of each shape."""
    _setup_process(threads)
    import torch

    rates = {}
    for m, k, n in GEMM_SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        calls = max(1, int(2e9 // (2 * m * k * n)))  # about 2 GFLOP per timed run
        rates[f"{m}x{k}x{n}"] = _median_rate(lambda: [torch.mm(a, b) for _ in range(calls)],
                                             2 * m * k * n * calls / 1e9, repeats=7)[0]
    return {"gflops": max(rates.values()), "gflops_per_shape": rates, "threads": threads}


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
def _fitted_model(arch: str, task: str):
    """(model, config, window sampler): the arch's default-config model fitted to 3 episodes collected here."""
    import numpy as np

    from embodied.collect import collect
    from embodied.config import load_config
    from embodied.dataset import Dataset, WindowSampler
    from embodied.models import build_model

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / f"{task}_{arch}.yaml", [])
    with tempfile.TemporaryDirectory() as tmp:
        collect(task, 3, Path(tmp), workers=1, progress=False)
        data = Dataset(Path(tmp), task=task)
    model = build_model(dict(cfg.model), data.manifest)
    sampler = WindowSampler(data.episodes, cfg.train.seq_len)
    model.fit_data(sampler.sample(16, np.random.default_rng(0)))
    return model, cfg, sampler


def bench_imagination(arch: str, task: str, batches: list[int], horizon: int, threads: int) -> dict:
    """Latent steps/s (with reward) at several batch sizes and decoded frames/s, from a real context."""
    _setup_process(threads)
    import numpy as np
    import torch

    model, _, sampler = _fitted_model(arch, task)
    model.eval()
    action_dim, c = model.action_dim, model.context
    window = sampler.sample(1, np.random.default_rng(1))
    out = {"params": sum(p.numel() for p in model.parameters()), "threads": threads}
    with torch.no_grad():
        state = model.encode(window["frames"][:, :c], window["actions"][:, :c - 1], window["proprio"][:, :c])
        for b in batches:
            acts = torch.rand(b, horizon, action_dim) * 2 - 1
            rate, _ = _median_rate(lambda: model.rollout(state, acts), b * horizon, repeats=5)
            out[f"latent_steps_per_s_b{b}"] = rate
        out["gflop_per_step"] = count_gflop(lambda: model.rollout(state, acts)) / (b * horizon)
        final, _ = model.rollout(state, torch.zeros(64, 1, action_dim))
        out["decoded_frames_per_s_b64"], _ = _median_rate(lambda: model.decode(final), 64, repeats=5)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _untrained_prior(model):
    """A policy prior as `embodied policy train` makes one (SB3 SAC, its default network) on the model's latent
    observations, untrained: what it costs does not depend on its weights."""
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import SAC

    from embodied.envs.imagined.core import vector_observation
    from embodied.planners.prior import PolicyPrior, sb3_critic
    from embodied.policies.agents import SACSettings

    state = model.encode(torch.zeros(1, model.context, model.image_size, model.image_size, 3, dtype=torch.uint8),
                         torch.zeros(1, model.context - 1, model.action_dim),
                         torch.zeros(1, model.context, model.proprio_dim))
    spaces = gym.Env()
    spaces.observation_space = gym.spaces.Box(-np.inf, np.inf, (vector_observation(model, state).shape[1],), np.float32)
    spaces.action_space = gym.spaces.Box(-1.0, 1.0, (model.action_dim,), np.float32)
    agent = SAC("MlpPolicy", spaces, buffer_size=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": list(SACSettings().net_arch)})
    return PolicyPrior(agent, "latent", label="untrained SAC", critic=sb3_critic(agent))


def bench_planning(model_name: str, planner: str, task: str, actions: int, is_contended: bool = False) -> dict:
    """Milliseconds per planned action in an MPC loop (state estimate + warm-started plan) at default settings.

    As in :func:`embodied.planners.mpc.run_mpc`, a model with ``abilities.update``
    is encoded once and then updated with each new observation; the others
    re-encode their context window every action. ``planner`` "amortised" is CEM
    with a policy prior at the ``AMORTISED`` settings, "policy" the prior alone.
    """
    _setup_process(PLAN_THREADS)
    import numpy as np
    import torch

    from embodied.envs import make_task
    from embodied.envs.context import ObsHistory
    from embodied.models.oracle import MujocoOracle
    from embodied.planners import make_planner
    from embodied.planners.mpc import update_inputs

    env = make_task(task, obs_type="pixels_proprio")
    model = MujocoOracle(task) if model_name == "mujoco" else _fitted_model(model_name, task)[0].eval()
    if planner in ("amortised", "policy"):
        prior = _untrained_prior(model)
        plan = make_planner("cem", task=task, prior=prior, **AMORTISED) if planner == "amortised" else \
            make_planner("policy", task=task, prior=prior, horizon=1)
    else:
        plan = make_planner(planner, task=task)
    history = ObsHistory(model.max_context, model.action_dim)
    oracle, streaming = model.abilities.simulator_state, model.abilities.update

    def episode() -> list[float]:
        """ms of each of ``actions`` control steps, after a warm-up step."""
        obs, _ = env.reset(seed=0)
        plan.reset(seed=0)
        history.reset(obs, sim_state=env.unwrapped.get_state() if oracle else None)
        state, action, times = None, None, []
        for i in range(actions + 1):
            start = time.perf_counter()
            if state is None or not streaming:
                state = model.encode(**history.encode_inputs())
            else:
                state = model.update(state, *update_inputs(action, obs))
            action = np.asarray(plan.plan(model, state)[0])
            elapsed = time.perf_counter() - start
            plan.advance(1)
            obs, *_ = env.step(action)
            history.push(action, obs, sim_state=env.unwrapped.get_state() if oracle else None)
            if i >= 1:
                times.append(elapsed * 1000)
        return sorted(times)

    runs: list[list[float]] = []

    def seconds() -> float:
        runs.append(episode())
        return statistics.median(runs[-1]) / 1000

    with torch.no_grad():
        out = contended(seconds) if is_contended else {"idle_s": seconds()}
    times = runs[0]
    return {"ms_per_action_median": statistics.median(times),
            "ms_per_action_p95": times[math.ceil(0.95 * len(times)) - 1],
            "threads": PLAN_THREADS, "settings": plan.settings.to_dict(), **out, "peak_rss_mb": _peak_rss_mb()}


def bench_training(arch: str, task: str, iters: int, repeats: int, threads: int, is_contended: bool = False) -> dict:
    """Training frames/s (forward, backward, Adam step) at the model's default batch and window."""
    _setup_process(threads)
    import numpy as np
    import torch

    model, cfg, sampler = _fitted_model(arch, task)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = sampler.sample(cfg.train.batch, np.random.default_rng(0))
    step = [0]

    def train_step():
        loss, _ = model.loss(batch, step[0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step[0] += 1

    def seconds() -> float:
        return _median_rate(lambda: [train_step() for _ in range(iters)], 1, repeats, warmup=0)[1]

    gflop = count_gflop(train_step)  # also the warm-up
    out = contended(seconds) if is_contended else {"idle_s": seconds()}
    frames = cfg.train.batch * cfg.train.seq_len * iters
    return {"frames_per_s": frames / out["idle_s"], "gflop_per_frame": gflop / (cfg.train.batch * cfg.train.seq_len),
            "batch": cfg.train.batch, "seq_len": cfg.train.seq_len,
            "threads": threads, **out, "peak_rss_mb": _peak_rss_mb()}


# ---- driver -----------------------------------------------------------------------------------
def _isolated(fn, *args):
    """Run fn(*args) in a fresh spawned process (its own peak RSS)."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def run_bench(out: Path, quick: bool = False, task: str = "push", workers: int = 2, threads: int | None = None,
              progress: bool = True) -> dict:
    """Run every measurement and write bench.json and bench.md to ``out``.

    ``threads`` (default: :func:`embodied.threads.default_threads`) are the torch threads of the imagination
    and training measurements; planning uses ``PLAN_THREADS`` as ``embodied plan`` does.
    """
    from tqdm import tqdm

    from embodied.threads import default_threads

    threads = threads or default_threads()
    all_cores = os.cpu_count() or 1
    steps = 100 if quick else 1000
    batches = [1, 64] if quick else [1, 64, 256, 1024]
    n_actions = 2 if quick else 20
    iters, repeats = (1, 1) if quick else (5, 3)
    tasks = (task,) if quick else TASKS
    archs = CONTENDED if quick else ARCHS
    jobs = [("matmul", bench_matmul, (threads,))]
    if all_cores != threads:
        jobs.append(("matmul.all_cores", bench_matmul, (all_cores,)))
    jobs += [(f"mujoco.{t}", bench_mujoco, (t, steps, workers)) for t in tasks]
    jobs += [(f"imagination.{a}", bench_imagination, (a, task, batches, 10, threads)) for a in archs]
    for planner in ("cem",) if quick else ("cem", "mppi"):
        jobs += [(f"planning.{planner}.{m}", bench_planning, (m, planner, task, n_actions,
                                                               planner == "cem" and m in CONTENDED))
                 for m in (*archs, "mujoco")]
    jobs += [(f"planning.{planner}.{a}", bench_planning, (a, planner, task, n_actions))
             for planner in ("amortised", "policy") for a in CONTENDED]
    jobs += [(f"training.{a}", bench_training, (a, task, iters, repeats, threads, a in CONTENDED)) for a in archs]
    jobs += [(f"training.{a}.all_cores", bench_training, (a, task, iters, repeats, all_cores, True)) for a in CONTENDED]
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
        "amortised_ms_per_action_median": {a: results[f"planning.amortised.{a}"]["ms_per_action_median"]
                                           for a in CONTENDED},
        "amortised_over_oracle_cem": {a: results[f"planning.amortised.{a}"]["ms_per_action_median"]
                                      / results["planning.cem.mujoco"]["ms_per_action_median"] for a in CONTENDED},
        "contended_over_idle": {k: v["contended_over_idle"] for k, v in results.items() if "contended_over_idle" in v},
        "arithmetic": _arithmetic(results, b),
        "task": task, "quick": quick,
        "machine": {"cpus": all_cores, "torch_threads": threads, "plan_threads": PLAN_THREADS,
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    from embodied.io import atomic_write_bytes, atomic_write_json

    atomic_write_json(out / "bench.json", bench)
    atomic_write_bytes(out / "bench.md", markdown_table(bench).encode())
    return bench


def _arithmetic(results: dict, b: int) -> dict:
    """Each imagination (at batch ``b``) and training measurement against the matmul rate at its threads."""
    peak = {m["threads"]: m["gflops"] for name, m in results.items() if name.startswith("matmul")}
    out = {f"{name}.b{b}": share_of_peak(m["gflop_per_step"], m[f"latent_steps_per_s_b{b}"], peak[m["threads"]])
           for name, m in results.items() if name.startswith("imagination.")}
    out.update({name: share_of_peak(m["gflop_per_frame"], m["frames_per_s"], peak[m["threads"]])
                for name, m in results.items() if name.startswith("training.")})
    return out
