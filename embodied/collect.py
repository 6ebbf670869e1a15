"""`embodied collect`: record episodes of a task in parallel worker processes.

Collecting policies: uniform random, smooth random, and the task's scripted
expert (``env.expert()``, which reads the true state: it exists to make data)
with temporally correlated noise, so datasets hold successes and failures,
contacts and misses.

Each worker owns one env and writes whole episodes atomically; the parent
shows progress and rebuilds ``manifest.json`` from the episode headers, also
when stopped. A re-run into an existing dataset continues with new seeds, so a
killed run loses at most the episodes in flight and never duplicates one (a
load rebuilds the manifest it left behind). Workers die with the parent, even
a SIGKILLed one; Ctrl-C and SIGTERM stop them at once.

A factor of variation given as a range [low, high] takes its own value in each
episode, drawn by a generator of the episode's seed alone (the same seeds give
the same values, whichever worker records them); the worker builds its env
anew for each such episode.

``actions=False`` (``--no-actions``) records action-free episodes, as a camera
watching a robot would: the policy acts in MuJoCo as usual, but its actions are
not stored (the header says ``actions`` False; see :mod:`embodied.data`).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embodied.data import build_manifest, check_dataset_task, episode_path, write_episode
from embodied.envs.factors import check_factor_setting
from embodied.envs.registry import canonical_task, make_task, task_class
from embodied.errors import UserError
from embodied.io import atomic_write_json, os_error_message

_WORKER: dict = {}
COLLECT_POLICIES = ("random", "scripted", "mixed")
FACTOR_STREAM = 0x666F76  # keeps an episode's factor generator apart from its reset and policy generators


def make_policy(name: str, env, rng: np.random.Generator) -> tuple[Callable[[], np.ndarray], str]:
    """A collecting policy for one episode; returns (act(), label of what it actually is).

    ``random``: uniform actions. ``scripted``: the task's expert with correlated
    noise of a random scale. ``mixed``: 15% uniform random, 15% smooth random
    (slowly varying, often saturated actions: the kind of sequence a sampling
    planner such as iCEM proposes, which uniform noise averages away), 30% the
    task's explorer where it has one (``env.explorer``: contact-rich pushes,
    grazes and misses on Push), the rest scripted. Tasks without an expert (any
    Gymnasium env) fall back to random.
    """
    if name not in COLLECT_POLICIES:
        raise ValueError(f"unknown policy {name!r}: use one of {', '.join(COLLECT_POLICIES)}")
    has_expert = env.expert() is not None
    shape = env.action_space.shape
    if name == "mixed":
        u = rng.random()
        name = "random" if u < 0.15 else "smooth" if u < 0.3 else "explore" if u < 0.6 else "scripted"
        if name == "explore":
            explorer = env.explorer(rng)
            if explorer is not None:
                return explorer
            name = "scripted"
    if name == "random" or not has_expert:
        return (lambda: rng.uniform(-1.0, 1.0, size=shape)), "random"
    if name == "smooth":
        drift = rng.uniform(-1.0, 1.0, size=shape)

        def act_smooth() -> np.ndarray:
            drift[:] = 0.9 * drift + 0.45 * rng.standard_normal(shape)
            return np.clip(1.5 * drift, -1.0, 1.0)

        return act_smooth, "random-smooth"
    scale = rng.uniform(0.1, 0.8)
    noise = np.zeros(shape)

    def act() -> np.ndarray:
        noise[:] = 0.8 * noise + 0.6 * scale * rng.standard_normal(shape)
        return np.clip(env.expert() + noise, -1.0, 1.0)

    return act, f"scripted(noise={scale:.2f})"


def _die_with_parent(parent: int) -> None:
    """Make this worker exit when the collecting process dies, even by SIGKILL (no orphan keeps its memory).

    Linux: the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG;
    strictly, on the exit of the thread that started the worker: ``_run_jobs``
    submits from the thread that then waits for the pool, so it outlives its
    workers); elsewhere a daemon thread polls the parent pid.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _init_worker(task: str, cls: type, size: int, parent: int, factors: dict | None = None) -> None:
    """A worker's env; ``cls`` (pickled by reference) registers a task defined outside the registry module.

    With a ranged factor the env is built per episode instead (:func:`_episode_env`).
    """
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(1)
    from embodied.envs.mujoco_base import MujocoTaskEnv
    from embodied.envs.registry import TASKS, make_task, register_task

    if issubclass(cls, MujocoTaskEnv) and cls.task_name not in TASKS:
        register_task(cls)
    _WORKER["make"] = functools.partial(make_task, task, obs_type="pixels_proprio", width=size, height=size)
    _WORKER["factors"] = factors = dict(factors or {})
    _WORKER["env"] = None if factor_ranges(factors) else _WORKER["make"](**({"factors": factors} if factors else {}))


def factor_ranges(factors: dict) -> dict[str, list[float]]:
    """The factors of a setting ({name: value or [low, high]}) that are ranges, sampled per episode."""
    return {k: v for k, v in factors.items() if isinstance(v, list)}


def episode_factors(factors: dict, seed: int) -> dict[str, float]:
    """The factor values of the episode of reset seed ``seed``: each range's value uniform in [low, high].

    The generator depends on the seed alone (not on the worker or the order), so re-collecting a seed gives the
    same values; it is apart from the seed's reset and policy generators.
    """
    rng = np.random.default_rng([FACTOR_STREAM, seed])
    drawn = {k: float(rng.uniform(low, high)) for k, (low, high) in sorted(factor_ranges(factors).items())}
    return {k: drawn.get(k, v) for k, v in factors.items()}


def _episode_env(seed: int):
    """The worker's env for the episode of ``seed``: rebuilt with that episode's values when a factor is a range."""
    if factor_ranges(_WORKER.get("factors", {})):
        if _WORKER["env"] is not None:
            _WORKER["env"].close()
        _WORKER["env"] = _WORKER["make"](factors=episode_factors(_WORKER["factors"], seed))
    return _WORKER["env"]


class EpisodeBuffer:
    """One episode in the dataset layout (see :mod:`embodied.data`), filled step by step.

    Used by the collecting policies here and by ``embodied plan --record`` (real
    MPC episodes: on-policy data where a model's mistakes showed).
    """

    def __init__(self, env, obs: dict, info: dict):
        self.env = env
        self.frames, self.proprio, self.states = [obs["pixels"]], [obs["proprio"]], [env.get_state()]
        self.objects = {k: [v] for k, v in info["objects"].items()}
        self.actions, self.rewards, self.terminated = [], [], []
        self.success = bool(info.get("is_success", False))

    def add(self, action, obs: dict, reward: float, terminated: bool, info: dict) -> None:
        """Record one env step: the action taken and what it led to."""
        self.frames.append(obs["pixels"])
        self.proprio.append(obs["proprio"])
        self.states.append(self.env.get_state())
        for k, v in info["objects"].items():
            self.objects[k].append(v)
        self.actions.append(np.asarray(action, dtype=np.float32))
        self.rewards.append(reward)
        self.terminated.append(terminated)
        self.success = self.success or bool(info.get("is_success", False))

    def episode(self, seed: int, label: str) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, metadata) as ``write_episode`` takes them."""
        arrays = {"observation.image": np.stack(self.frames),
                  "observation.state": np.stack(self.proprio).astype(np.float32),
                  "action": np.stack(self.actions), "reward": np.asarray(self.rewards, np.float32),
                  "terminated": np.asarray(self.terminated, np.uint8), "sim_state": np.stack(self.states)}
        arrays |= {f"objects.{k}": np.stack(v) for k, v in self.objects.items()}
        meta = {"task": self.env.task_name, "seed": seed, "policy": label, "length": len(self.actions),
                "success": self.success}
        if getattr(self.env, "fov", None):  # the factors of variation it was recorded under
            meta["factors"] = json.dumps(self.env.fov, sort_keys=True)
        return arrays, meta


def record_episode(env, seed: int, policy: str) -> tuple[dict[str, np.ndarray], dict]:
    """Run one episode of ``policy`` from ``env.reset(seed=seed)``; returns arrays and metadata.

    A terminating env runs on past its termination until the episode holds
    ``env.min_episode_steps`` steps; each step's ``terminated`` flag is stored as reported.
    """
    obs, info = env.reset(seed=seed)
    act, label = make_policy(policy, env, np.random.default_rng(seed + 7919))
    buffer = EpisodeBuffer(env, obs, info)
    while True:
        action = np.asarray(act(), dtype=np.float32)
        obs, reward, term, trunc, info = env.step(action)
        buffer.add(action, obs, reward, term, info)
        if trunc or (term and len(buffer.actions) >= env.min_episode_steps):
            break
    return buffer.episode(seed, label)


def _collect_one(out: str, seed: int, policy: str, actions: bool = True) -> int:
    arrays, meta = record_episode(_episode_env(seed), seed, policy)
    if not actions:
        del arrays["action"]
        meta["actions"] = False
    ranges = factor_ranges(_WORKER.get("factors", {}))
    if ranges:  # the header's factors hold the values used; these, what they were drawn from
        meta["factor_ranges"] = json.dumps(ranges, sort_keys=True)
    try:
        write_episode(episode_path(out, seed), arrays, meta)
    except OSError as err:  # a full disk, say: one line in the parent, not a worker's traceback
        raise UserError(os_error_message(err)) from None
    return int(meta["length"])


def dataset_spec(task: str, size: int, factors: dict | None = None) -> dict:
    """Task and space description stored in the manifest (with the factors of variation, when any).

    ``factors``: {name: value, or a range [low, high] (or ``"LOW..HIGH"``) sampled per episode}, checked; the
    manifest records them so. With a ranged colour factor the objects' colours are those at the range's middle.
    """
    setting = check_factor_setting(task_class(task), factors)
    middle = {k: sum(v) / 2 if isinstance(v, list) else v for k, v in setting.items()}
    env = make_task(task, obs_type="pixels_proprio", width=size, height=size,
                    **({"factors": middle} if middle else {}))
    spec = {"task": canonical_task(task), "image_size": [size, size, 3],
            "action_dim": int(env.action_space.shape[0]), "proprio_dim": int(env.observation_space["proprio"].shape[0]),
            "frame_skip": int(env.frame_skip), "max_episode_steps": int(env.max_episode_steps),
            "objects": [{"name": o.name, "rgb": list(o.rgb), "actuated": o.actuated} for o in env.objects]}
    if setting:
        spec["factors"] = setting
    env.close()
    return spec


@contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt (main thread only), so it stops collect as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_jobs(out: Path, seeds: list[int], policy: str, workers: int, init: tuple, progress: bool, desc: str,
              actions: bool = True) -> int:
    """Record the episodes of ``seeds`` in ``workers`` processes; returns the frames recorded.

    At most two jobs per worker are queued at a time. On any error or
    interrupt the queued jobs are dropped and the workers stopped at once
    (their episodes in flight are lost, never half written).
    """
    before = set(mp.active_children())
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=init)
    frames, todo, running = 0, iter(seeds), set()
    bar = tqdm(total=len(seeds), desc=desc, unit="ep", disable=not progress)
    try:
        with _sigterm_as_interrupt():
            while True:
                running |= {pool.submit(_collect_one, str(out), s, policy, actions)
                            for s in itertools.islice(todo, 2 * workers - len(running))}
                if not running:
                    break
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for job in done:
                    frames += job.result() + 1
                    bar.update(1)
    except BrokenProcessPool:
        fewer = f" or use fewer than --workers {workers}" if workers > 1 else ""
        raise UserError(f"a collect worker stopped abruptly (out of memory, or its env failed to start: see above); "
                        f"fix that{fewer} and re-run (finished episodes are kept)") from None
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in set(mp.active_children()) - before:
            proc.kill()
        raise
    finally:
        bar.close()
        pool.shutdown(wait=True)
    return frames


def collect(task: str, episodes: int, out: Path, policy: str = "mixed", workers: int = 2, size: int = 64,
            seed: int = 0, progress: bool = True, factors: dict | None = None, actions: bool = True) -> dict:
    """Add ``episodes`` new episodes to the dataset at ``out``; returns the manifest and throughput.

    ``factors`` ({name: value, or a range [low, high] or ``"LOW..HIGH"``, checked
    against the task's declared factors of variation) changes the MuJoCo scene; a
    range gives each episode its own value (:func:`episode_factors`). The manifest
    records the setting, every episode header the values it used (and the ranges
    they came from), and a dataset holds episodes of one setting only. ``actions=False`` stores no actions.
    The manifest is rewritten from the episode headers at the end, also after an
    error or an interrupt, so it lists exactly the finished episodes.
    """
    out = Path(out)
    spec = dataset_spec(task, size, factors)
    check_dataset_task(out, spec["task"], size=size, factors=spec.get("factors", {}))
    taken = {r["seed"] for r in build_manifest(out, spec)["episodes"]}  # checks every existing episode first
    for tmp in (out / "episodes").glob(".*.tmp"):
        tmp.unlink()  # leftovers of a killed run
    first = max(taken, default=seed - 1) + 1
    seeds = [first + i for i in range(episodes)]
    start = time.perf_counter()
    try:
        frames = _run_jobs(out, seeds, policy, workers, (task, task_class(task), size, os.getpid(),
                                                         spec.get("factors")), progress, f"collect {spec['task']}",
                           actions)
    except BaseException:
        if (out / "episodes").is_dir():  # best effort: a later load rebuilds it anyway (data.reconcile_manifest)
            with contextlib.suppress(OSError, UserError):
                atomic_write_json(out / "manifest.json", build_manifest(out, spec))
        raise
    wall = time.perf_counter() - start
    manifest = build_manifest(out, spec)
    atomic_write_json(out / "manifest.json", manifest)
    return {"manifest": manifest, "new_episodes": episodes, "frames": frames, "wall_s": wall,
            "frames_per_s": frames / wall if wall > 0 else 0.0, "workers": workers}
