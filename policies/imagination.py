"""An SB3 agent trained only inside a world model, evaluated in the real task (:func:`train_policy`).

Imagination (``baseline="none"``)
    SAC or PPO trains on :func:`embodied.envs.imagined.sb3.make_sb3_vec_env`:
    ``num_envs`` imagined episodes advanced in one batched model step, the
    model's read-out (or latent) observations, its predicted reward, episodes
    seeded from any step of the model's training episodes and truncated after
    ``horizon`` (8) imagined steps. No real env step is taken while training.

    Why short episodes: open loop, a model slowly loses what does not move (on
    Reach the imagined target drifts ~2 cm in 10 steps and ~14 cm in 50), so a
    policy trained on long imagined episodes chases a wandering target and
    stops short of the real one. Short rollouts from the states the dataset
    visited stay where the model was trained; SB3 bootstraps the value at each
    truncation.
``baseline="real"``
    The same algorithm, hyper-parameters, number of parallel envs and step
    budget directly in the real MuJoCo task, seeing the same latent
    observations (the real env behind :class:`embodied.envs.imagined.LatentObservation`,
    with the same model's encoder) or, with ``real_obs="state"``, the true
    simulator state (a privileged upper bound).
``baseline="random"``
    Uniform random actions: the floor.

Every policy is then evaluated in the real task through the latent wrapper
(``eval_episodes`` episodes, seeds ``seed + 10000 + i``, deterministic
actions) and in imagination (the same number of imagined episodes). The run
folder holds ``policy.zip`` (SB3's own format: ``SAC.load(path)``),
``policy.json`` (written atomically) with ``real_success_rate``,
``real_return_mean``, ``imagined_return_mean``, ``env_steps_imagined``,
``env_steps_real``, ``wall_s``, the command, the config and the checkpoint
used, and ``eval.mp4``, the first real evaluation episodes. With
``save_every`` N, ``snapshots/policy_<steps>_steps.zip`` holds the agent
every N transitions along training (SB3's ``CheckpointCallback``): policies of
rising quality for ``embodied policy rank``. Rewards are
multiplied by ``reward_scale`` for training only; every reported return is in
the task's own units.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from embodied.checkpoint import read_config
from embodied.envs.imagined import ImaginedVectorEnv, LatentObservation, dataset_path_of
from embodied.envs.imagined.sb3 import make_sb3_vec_env
from embodied.envs.registry import canonical_task, make_task
from embodied.io import atomic_write_json
from embodied.load import load_model, resolve_run_dir
from embodied.models.base import WorldModel
from embodied.policies.agents import make_agent, scale_rewards
from embodied.policies.config import PolicyConfig
from embodied.policies.evaluate import evaluate, random_actor, sb3_actor

EVAL_SEED_OFFSET = 10_000  # real evaluation episodes never reuse the training resets
TRAINED_IN = {"none": "imagination", "real": "real", "random": "nothing"}


def real_env(task: str, model: WorldModel, history: str = "episode", obs: str = "latent") -> LatentObservation:
    """The real task seen through ``model`` (pixels and proprio in, latent or read-out vector out)."""
    env = make_task(task, obs_type="pixels_proprio", width=model.image_size, height=model.image_size)
    return LatentObservation(env, model, history=history, obs_mode=obs)


def observations_for(model: WorldModel | None) -> str:
    """``--obs auto``: the read-out heads where they include object positions, else the latent state (a
    read-out of proprio alone would hide the objects the task is about)."""
    return "readout" if model is not None and model.abilities.objects else "latent"


def training_env(cfg: PolicyConfig, model: WorldModel | None, task: str, num_envs: int) -> VecEnv:
    """The seeded SB3 env an agent trains on (imagined, or the real task for ``baseline="real"``), rewards scaled."""
    if cfg.baseline == "none":
        venv = make_sb3_vec_env(model, num_envs=num_envs, task=task, split=cfg.split, start=cfg.start,
                                horizon=cfg.horizon or None, obs_mode=cfg.obs)
    elif cfg.real_obs == "state":
        venv = DummyVecEnv([lambda: make_task(task, obs_type="state") for _ in range(num_envs)])
    else:
        venv = DummyVecEnv([lambda: real_env(task, model, cfg.history, cfg.obs) for _ in range(num_envs)])
    venv.seed(cfg.seed)
    return scale_rewards(venv, cfg.reward_scale)


def evaluate_imagined(model: WorldModel, act_batch, episodes: int, seed: int, split: str, start: str, task: str,
                      obs: str = "latent") -> dict:
    """Mean return (and predicted success where known) of ``episodes`` imagined episodes run in one batch."""
    venv = ImaginedVectorEnv(model, num_envs=episodes, task=task, split=split, start=start, obs_mode=obs,
                             autoreset_mode="Disabled")
    obs, _ = venv.reset(seed=seed)
    ret = np.zeros(episodes)
    success = None
    for _ in range(venv.core.horizon):
        obs, reward, terminated, truncated, info = venv.step(act_batch(obs))
        ret += reward
        success = info.get("is_success")
        if np.all(terminated | truncated):
            break
    venv.close()
    out = {"imagined_return_mean": float(ret.mean()), "imagined_return_std": float(ret.std()),
           "imagined_episodes": episodes}
    if success is not None:
        out["imagined_success_rate"] = float(np.mean(success))
    return out


def checkpoint_info(model_spec: str) -> dict:
    """The model a policy was trained with: its run folder, architecture, step and dataset."""
    info = {"model": str(model_spec)}
    folder = Path(resolve_run_dir(str(model_spec)))  # a shipped checkpoint's name: its folder
    if folder.is_dir():
        ck = read_config(folder)
        info.update(model_arch=ck["model"]["arch"], model_step=ck["step"], dataset=dataset_path_of(folder))
    return info


def train_policy(cfg: PolicyConfig, command: str = "") -> dict:
    """Train (or not, for the random baseline), evaluate, write policy.zip and policy.json; returns the latter."""
    t_start = time.perf_counter()
    task = canonical_task(cfg.task)
    model = load_model(cfg.model, task) if cfg.model else None
    if cfg.obs == "auto":
        cfg = replace(cfg, obs=observations_for(model))
    model_name = Path(cfg.model).name if cfg.model else "none"
    suffix = "" if cfg.baseline == "none" else f"_{cfg.baseline}"
    out = Path(cfg.out or Path("runs") / "policy" / f"{task}_{model_name}_{cfg.algo}{suffix}")
    out.mkdir(parents=True, exist_ok=True)
    num_envs = cfg.num_envs or (4 if cfg.algo == "sac" else 16)

    result: dict = {"task": task, "algo": cfg.algo if cfg.baseline != "random" else "random",
                    "trained_in": TRAINED_IN[cfg.baseline], "baseline": cfg.baseline, "seed": cfg.seed,
                    "steps": cfg.steps, "num_envs": num_envs, "env_steps_imagined": 0, "env_steps_real": 0}
    if cfg.model:
        result.update(checkpoint_info(cfg.model))

    agent = None
    if cfg.baseline != "random":
        venv = training_env(cfg, model, task, num_envs)
        agent = make_agent(cfg.algo, venv, cfg.steps, cfg.seed, cfg.sac, cfg.ppo)
        t0 = time.perf_counter()
        callback = None
        if cfg.save_every:  # save_freq counts vector-env steps, each num_envs transitions
            callback = CheckpointCallback(save_freq=max(1, cfg.save_every // num_envs),
                                          save_path=str(out / "snapshots"), name_prefix="policy")
        try:
            agent.learn(total_timesteps=cfg.steps, progress_bar=cfg.progress, callback=callback)
        except KeyboardInterrupt:
            print("embodied policy: interrupted; evaluating the policy trained so far", file=sys.stderr)
        train_s = time.perf_counter() - t0
        steps_done = int(agent.num_timesteps)
        result["env_steps_imagined" if cfg.baseline == "none" else "env_steps_real"] = steps_done
        result["train_wall_s"] = train_s
        result["train_steps_per_s"] = steps_done / max(train_s, 1e-9)
        agent.save(out / "policy.zip")
        result["policy"] = str(out / "policy.zip")
        result["load_with"] = f"stable_baselines3.{type(agent).__name__}.load({str(out / 'policy.zip')!r})"
        if callback is not None:  # the files this run wrote, in training order
            every = callback.save_freq * num_envs
            made = [out / "snapshots" / f"policy_{k * every}_steps.zip" for k in range(1, steps_done // every + 1)]
            result["snapshots"] = [str(p) for p in made if p.exists()]
        venv.close()

    # evaluate in the real task
    eval_seed = cfg.seed + EVAL_SEED_OFFSET
    state_policy = cfg.baseline == "real" and cfg.real_obs == "state"
    if state_policy:
        env = make_task(task, obs_type="state")
    elif model is not None:
        env = real_env(task, model, cfg.history, cfg.obs)
    else:
        env = make_task(task, obs_type="pixels_proprio")
    act = sb3_actor(agent) if agent is not None else random_actor(env.action_space, eval_seed)
    real = evaluate(env, act, episodes=cfg.eval_episodes, seed=eval_seed,
                    video=out / "eval" if cfg.videos > 0 else None, video_episodes=cfg.videos,
                    progress=cfg.progress, desc=f"{task} real eval")
    env.close()
    result.update({"real_success_rate": real["success_rate"], "real_success_any_rate": real["success_any_rate"],
                   "real_return_mean": real["return_mean"], "real_return_std": real["return_std"],
                   "eval_episodes": real["episodes"], "eval_seed": eval_seed, "video": real.get("video"),
                   "latent_history": cfg.history, "observations": "state" if state_policy else
                   (cfg.obs if model is not None else "none")})

    # and in imagination (a random policy needs no model; a state policy cannot read latents)
    if model is not None and not state_policy:
        rng = np.random.default_rng(eval_seed)

        def random_batch(obs):
            return rng.uniform(-1, 1, size=(obs.shape[0], model.action_dim))

        act_batch = sb3_actor(agent) if agent is not None else random_batch
        result.update(evaluate_imagined(model, act_batch, cfg.eval_episodes, eval_seed, cfg.split, cfg.start, task,
                                        cfg.obs))
    else:
        result["imagined_return_mean"] = None

    result.update({"wall_s": time.perf_counter() - t_start, "command": command, "config": asdict(cfg),
                   "torch_threads": torch.get_num_threads(), "per_episode": real["per_episode"]})
    atomic_write_json(out / "policy.json", result)
    result["policy_json"] = str(out / "policy.json")
    return result
