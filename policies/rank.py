"""Ranking policies in imagination: does a world model order policies as the real task does?

``rank_policies(cfg)`` runs every policy for the same episodes twice: in the
real MuJoCo task and in the model's imagination, both from the same start
states (episode ``i`` starts from ``reset(seed=seed + 10000 + i)`` of the real
task; the imagined episode is seeded with that first real frame, as
:class:`embodied.envs.imagined.LatentObservation` sees it after a reset) and for
the same number of steps. It reports each policy's real and imagined success
rate and return, and how well the imagined numbers rank the policies:
Spearman and Pearson correlations, top-1 agreement and pairwise agreement, each
with a bootstrap confidence interval over episodes.

Policies (``--policies``, mixed freely)
    ``random``: uniform actions. ``scripted[:NOISE]``: the task's expert with
    temporally correlated action noise of standard deviation NOISE (default 0),
    as ``embodied collect`` uses it; in the real task it reads the true state,
    in imagination the model's predicted object positions and proprio (it
    needs a model with those heads). A folder written by ``embodied policy
    train`` (its ``policy.zip``), or an SB3 SAC or PPO MlpPolicy zip such as the
    snapshots of ``--save-every`` (``DIR/snapshots/policy_<steps>_steps.zip``):
    loaded by :func:`embodied.policies.sb3_zip.load_sb3_zip`, which unpickles
    nothing (algorithm and observations from the run's ``policy.json``),
    acting on the model's latent or read-out vector behind
    :class:`~embodied.envs.imagined.LatentObservation` in the real task and in
    :class:`~embodied.envs.imagined.ImaginedEnv`, deterministic actions. The
    per-episode random numbers of ``random`` and ``scripted`` are seeded by the
    episode's seed, so a policy draws the same noise in both worlds.

What a policy argument names is parsed in :mod:`embodied.policies.policy_spec`, the statistics are in
:mod:`embodied.policies.rank_stats`, the page in
:mod:`embodied.policies.rank_page`.

Writes ``rank.json``, ``scatter.png`` (imagined against real success and
return, one labelled point per policy) and ``rank.html`` under ``out``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from embodied.config import check_range
from embodied.envs.imagined import ImaginedEnv, LatentObservation
from embodied.envs.factors import check_factors
from embodied.envs.registry import canonical_task, make_task, task_class
from embodied.errors import UserError
from embodied.io import atomic_write_bytes, atomic_write_json
from embodied.load import load_model, resolve_run_dir
from embodied.policies.imagination import EVAL_SEED_OFFSET, checkpoint_info
from embodied.policies.policy_spec import PolicySpec, parse_policies, sb3_observations
from embodied.policies.rank_page import plot_scatter, rank_html
from embodied.policies.rank_stats import METRICS, ranking_stats, ranks
from embodied.policies.sb3_zip import load_sb3_zip

FORMAT = "embodied-rank/1"


@dataclass
class RankConfig:
    task: str = "reach"                # reach | push | occlusion
    model: str | None = None           # the world model whose imagination ranks the policies (a run folder)
    policies: list[str] = field(default_factory=list)  # random | scripted[:noise] | policy folder | SB3 zip
    episodes: int = 20                 # episodes per policy, in each world; seeds seed + 10000 + i
    seed: int = 0
    horizon: int = 0                   # steps per episode in both worlds; 0: the task's episode length
    out: str | None = None             # default runs/rank/<task>_<model>
    bootstrap: int = 1000              # resamples of the episodes for the confidence intervals (0: none)
    level: float = 0.95                # confidence level of the intervals
    history: str = "episode"           # real-env latent of SB3 policies: the whole episode or the last frames
    threads: int = 1                   # torch CPU threads; 0 keeps torch's default
    progress: bool = True
    fov: dict = field(default_factory=dict)  # factors of variation of the real scene, e.g. {block_mass: 1.5}

    def check(self, source: str) -> None:
        if self.model is None:
            raise UserError("no world model given: pass --model RUN_DIR (a run folder from `embodied train`)")
        if len(self.policies) < 2:
            raise UserError(f"policies = {self.policies} in {source}: rank at least two, e.g. "
                            "--policies random scripted:0 scripted:0.6 runs/policy/reach_sac")
        if self.history not in ("episode", "context"):
            raise UserError(f"history = {self.history!r} in {source} must be one of episode, context")
        check_range(source, {"episodes": self.episodes}, low=1)
        check_range(source, {"seed": self.seed, "horizon": self.horizon, "bootstrap": self.bootstrap,
                             "threads": self.threads}, low=0)
        check_range(source, {"level": self.level}, low=0, high=1, above=True, below=True)
        if self.fov:
            self.fov = check_factors(task_class(self.task), self.fov)


# ---- the policies -----------------------------------------------------------------------------------------------

class Actor:
    """``act(obs)`` of one policy in one world for one episode at a time (``start(seed)`` begins an episode)."""

    def __init__(self, spec: PolicySpec, action_dim: int, expert=None, agent=None):
        self.spec, self.action_dim, self.expert, self.agent = spec, action_dim, expert, agent
        self.rng = np.random.default_rng(0)
        self.noise = np.zeros(action_dim)

    def start(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)  # the same draws in the real and the imagined episode
        self.noise = np.zeros(self.action_dim)

    def __call__(self, obs) -> np.ndarray:
        kind = self.spec.kind
        if kind == "random":
            return self.rng.uniform(-1.0, 1.0, self.action_dim)
        if kind == "sb3":
            return self.agent.predict(obs, deterministic=True)[0]
        # scripted: correlated noise of stationary std `noise`, as embodied.collect.make_policy
        self.noise = 0.8 * self.noise + 0.6 * self.spec.noise * self.rng.standard_normal(self.action_dim)
        return np.clip(np.asarray(self.expert(), np.float64) + self.noise, -1.0, 1.0)


# ---- the episodes -----------------------------------------------------------------------------------------------

def _start_context(task_env, seed: int, model) -> dict:
    """The first real frame (and proprio) of episode ``seed``: what an imagined episode is seeded with."""
    obs, _ = task_env.reset(seed=seed)
    ctx = {"frames": np.asarray(obs["pixels"])[None]}
    if model.proprio_dim:
        ctx["proprio"] = np.asarray(obs["proprio"], np.float32)[None]
    return ctx


def success_from_objects(task_env, objects: dict) -> bool | None:
    """The task's success rule on object positions ({name: xy}); None unless every sensor of the task is an
    object position (``<name>_pos``), so that the rule reads nothing else."""
    m = task_env.model
    sensors = {m.sensor(i).name for i in range(m.nsensor)}
    if not objects or sensors != {f"{name}_pos" for name in objects}:
        return None
    data = np.zeros(m.nsensordata)
    for name, xy in objects.items():
        task_env.sensor(data, f"{name}_pos")[:2] = np.asarray(xy, np.float64)[:2]
    return bool(task_env.reward_from_sensors(data)[1])


def _object_names(model, task_env) -> list[str]:
    """The names of the model's predicted objects, in its order (the dataset's: the task's objects)."""
    return list(getattr(model, "object_names", None) or [o.name for o in task_env.objects])


def _predicted(model, state, names) -> tuple[dict, np.ndarray | None]:
    """The model's predicted object positions ({name: xy}) and proprio of a batch-1 state."""
    with torch.no_grad():
        xy = model.objects(state)[0].double().cpu().numpy()
        proprio = model.proprio(state)[0].double().cpu().numpy() if model.abilities.proprio else None
    return dict(zip(names, xy)), proprio


def real_episodes(task_env, model, spec: PolicySpec, seeds, steps: int, agent=None, obs: str = "latent",
                  history: str = "episode") -> list[dict]:
    """Each seed's episode of the policy in the real task: {seed, return, success (at the last step), steps}."""
    if spec.kind == "sb3":
        env = LatentObservation(task_env, model, history=history, obs_mode=obs)
        actor = Actor(spec, model.action_dim, agent=agent)
    else:
        env = task_env
        actor = Actor(spec, model.action_dim, expert=task_env.expert)
    records = []
    for seed in seeds:
        obs_now, _ = env.reset(seed=seed)
        actor.start(seed)
        ret, success, t = 0.0, False, 0
        for t in range(1, steps + 1):
            obs_now, reward, terminated, truncated, info = env.step(actor(obs_now))
            ret += float(reward)
            success = bool(info.get("is_success", False))
            if terminated or truncated:
                break
        records.append({"seed": seed, "return": ret, "success": success, "steps": t})
    return records


def imagined_episodes(task_env, model, spec: PolicySpec, seeds, steps: int, agent=None,
                      obs: str = "latent") -> tuple[list[dict], str | None]:
    """Each seed's episode of the policy in the model's imagination, seeded with the real episode's first frame.

    Returns the records and where imagined success came from: the model (its success head, or the task's
    rule on its predicted reward), the task's rule on its predicted object positions, or None (unknown).
    """
    env = ImaginedEnv(model, obs_mode=obs, task=model.task, horizon=steps)
    names = _object_names(model, task_env) if model.abilities.objects else []
    if spec.kind == "scripted":
        if not (model.abilities.objects and len(names) == len(task_env.objects)):
            raise UserError(f"policy {spec.label}: the scripted expert acts on object positions, and this model "
                            "predicts none (no object head): rank SB3 or random policies with it, or train a model "
                            "with model.object_weight > 0")

        def expert():
            objects, proprio = _predicted(model, env.core.state, names)
            return task_env.expert(objects, proprio)

        actor = Actor(spec, model.action_dim, expert=expert)
    else:
        actor = Actor(spec, model.action_dim, agent=agent)
    records, source = [], None
    for seed in seeds:
        obs_now, info = env.reset(options={"context": _start_context(task_env, seed, model)})
        actor.start(seed)
        ret, success, t = 0.0, None, 0
        for t in range(1, steps + 1):
            obs_now, reward, terminated, truncated, info = env.step(actor(obs_now))
            ret += float(reward)
            if terminated or truncated:
                break
        if "is_success" in info:
            success, source = bool(info["is_success"]), "model"
        elif names:
            success = success_from_objects(task_env, _predicted(model, env.core.state, names)[0])
            source = "predicted objects" if success is not None else None
        records.append({"seed": seed, "return": ret, "success": success, "steps": t})
    env.close()
    return records, source


# ---- the run ----------------------------------------------------------------------------------------------------

def _summary(records: list[dict]) -> dict:
    returns = np.array([r["return"] for r in records])
    known = [r["success"] for r in records if r["success"] is not None]
    return {"success_rate": float(np.mean(known)) if len(known) == len(records) else None,
            "return_mean": float(returns.mean()), "return_std": float(returns.std()), "episodes": len(records)}


def rank_policies(cfg: RankConfig, command: str = "", log=None) -> dict:
    """Run every policy in both worlds, score the ranking, write rank.json, scatter.png and rank.html."""
    t0 = time.perf_counter()
    task = canonical_task(cfg.task)
    specs = parse_policies(cfg.policies)  # every policy checked before any episode runs
    model = load_model(cfg.model, task)
    model_name = Path(str(resolve_run_dir(cfg.model))).name
    out = Path(cfg.out or Path("runs") / "rank" / f"{task}_{model_name}")
    fov = {"factors": cfg.fov} if cfg.fov else {}
    size = model.image_size
    task_env = make_task(task, obs_type="pixels_proprio", width=size, height=size, **fov)  # frames: SB3, contexts
    state_env = make_task(task, obs_type="state", **fov)  # scripted and random act in the real task without frames
    steps = cfg.horizon or int(task_env.max_episode_steps)
    if steps > task_env.max_episode_steps:
        raise UserError(f"horizon = {cfg.horizon}: a real {task} episode has at most {task_env.max_episode_steps} "
                        "steps; pass --horizon up to that (0: all of them)")
    seeds = [cfg.seed + EVAL_SEED_OFFSET + i for i in range(cfg.episodes)]
    if any(s.kind == "scripted" for s in specs):
        if state_env.expert() is None:
            raise UserError(f"task {task!r} has no scripted expert: rank SB3 or random policies")
        if not model.abilities.objects:
            raise UserError("the scripted expert acts on object positions in imagination, and this model predicts "
                            "none (no object head): rank SB3 or random policies with it, or train a model with "
                            "model.object_weight > 0")
    agents, run_dir = {}, Path(str(resolve_run_dir(cfg.model))).resolve()
    for spec in specs:  # load and check every SB3 policy before the long part
        if spec.kind == "sb3":
            agent = load_sb3_zip(spec.path, spec.algo)
            spec.obs = sb3_observations(spec, agent, model)
            agents[spec.label] = agent
            if log and spec.trained_with and Path(spec.trained_with).resolve() != run_dir:
                log(f"note: {spec.label} was trained in {spec.trained_with}; here it observes through --model")

    rows, success_sources = [], set()
    for spec in specs:
        t_policy = time.perf_counter()
        agent = agents.get(spec.label)
        obs = spec.obs or "latent"
        real_env = task_env if spec.kind == "sb3" else state_env
        real = real_episodes(real_env, model, spec, seeds, steps, agent, obs, spec.history or cfg.history)
        imagined, source = imagined_episodes(task_env, model, spec, seeds, steps, agent, obs)
        success_sources.add(source)
        row = {"label": spec.label, "kind": spec.kind, "policy": asdict(spec), "real": _summary(real),
               "imagined": _summary(imagined), "per_episode": {"real": real, "imagined": imagined},
               "wall_s": round(time.perf_counter() - t_policy, 2)}
        rows.append(row)
        if log:
            r, i = row["real"], row["imagined"]
            isucc = "n/a" if i["success_rate"] is None else f"{i['success_rate']:.0%}"
            log(f"  {spec.label:24s} real success {r['success_rate']:4.0%} return {r['return_mean']:8.2f} | "
                f"imagined success {isucc:>4s} return {i['return_mean']:8.2f}  ({row['wall_s']:.0f} s)")
    task_env.close()
    state_env.close()

    per_episode = {(world, metric): np.array([[float(e[metric]) if e[metric] is not None else np.nan
                                               for e in row["per_episode"][world]] for row in rows])
                   for world in ("real", "imagined") for metric in METRICS}
    statistics = {}
    for metric in METRICS:
        real, imagined = per_episode[("real", metric)], per_episode[("imagined", metric)]
        if np.isnan(imagined).any():
            statistics[metric] = None  # imagined success unknown for this model and task
            continue
        statistics[metric] = ranking_stats(real, imagined, cfg.bootstrap, cfg.seed, cfg.level)
        for name, rank in (("real_rank", ranks(real.mean(1))), ("imagined_rank", ranks(imagined.mean(1)))):
            for row, r in zip(rows, rank):
                row.setdefault(name, {})[metric] = r
    source = next(iter(success_sources)) if len(success_sources) == 1 else None
    result = {
        "format": FORMAT, "task": task, "model": str(cfg.model), "checkpoint": checkpoint_info(
            str(resolve_run_dir(cfg.model))), "factors": cfg.fov, "episodes": cfg.episodes, "steps": steps,
        "seeds": seeds, "imagined_success_from": source,
        "bootstrap": {"samples": cfg.bootstrap, "level": cfg.level, "seed": cfg.seed},
        "policies": rows, "statistics": statistics, "command": command, "config": asdict(cfg),
        "torch_threads": torch.get_num_threads(), "wall_s": round(time.perf_counter() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out.mkdir(parents=True, exist_ok=True)
    plot_scatter(out / "scatter.png", rows)
    atomic_write_json(out / "rank.json", result)
    atomic_write_bytes(out / "rank.html", rank_html(result).encode())
    result["rank_json"] = str(out / "rank.json")
    return result
