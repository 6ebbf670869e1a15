"""`embodied policy train`: an SB3 agent trained only inside a world model, evaluated in the real task.

::

    embodied policy train --task reach --model RUN_DIR --algo sac --steps 20000 --out runs/policy/reach_sac
    embodied policy train --task reach --model RUN_DIR --algo sac --steps 20000 --baseline real --out ...
    embodied policy train --task reach --baseline random --out ...

Imagination (default)
    SAC or PPO from stable-baselines3 trains on an :class:`embodied.envs.imagined.SB3VecEnv`:
    ``--num-envs`` imagined episodes advanced in one batched model step, the
    model's read-out observations (``--obs``), its predicted reward, episodes
    seeded from any step of the model's training episodes (``--split``,
    ``--start``) and truncated after ``--horizon`` (8) imagined steps. No real
    env step is taken while training.

    Why short episodes: open loop, a model slowly loses what does not move (on
    Reach the imagined target drifts ~2 cm in 10 steps and ~14 cm in 50), so a
    policy trained on long imagined episodes chases a wandering target and
    stops short of the real one. Short rollouts from the states the dataset
    visited stay where the model was trained (8 open-loop steps); SB3
    bootstraps the value at each truncation.
``--baseline real``
    The same algorithm, hyper-parameters, number of parallel envs and step
    budget directly in the real MuJoCo task, seeing the same latent
    observations (the real env behind :class:`embodied.envs.imagined.LatentObservation`,
    with the same model's encoder): the only difference from imagination is
    where the dynamics and the reward come from.
``--baseline random``
    Uniform random actions: the floor.

Every policy is then evaluated in the real task through the latent wrapper
(``--eval-episodes`` episodes, seeds ``--seed + 10000 + i``, deterministic
actions) and in imagination (the same number of imagined episodes). The run
folder holds ``policy.zip`` (SB3's own format: ``SAC.load(path)``),
``policy.json`` (written atomically) with ``real_success_rate``,
``real_return_mean``, ``imagined_return_mean``, ``env_steps_imagined``,
``env_steps_real``, ``wall_s``, the command and the checkpoint used, and
``eval.mp4``, the first real evaluation episodes.

Rewards are multiplied by ``--reward-scale`` for training only (SAC's entropy
bonus otherwise drowns the tasks' small per-step rewards); every reported
return is in the task's own units.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ALGOS = ("sac", "ppo")
BASELINES = ("none", "real", "random")
EVAL_SEED_OFFSET = 10_000  # real evaluation episodes never reuse the training resets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("train", help="train SB3 in imagination (or a baseline) and evaluate it in the real task",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="reach", help="task name (reach, push, occlusion)")
    p.add_argument("--model", default=None, help="world-model run folder (needed except for --baseline random)")
    p.add_argument("--algo", choices=ALGOS, default="sac")
    p.add_argument("--steps", type=int, default=20_000, help="env steps (transitions) to train for, all envs together")
    p.add_argument("--out", default=None, help="output folder (default runs/policy/<task>_<model>_<algo>[_<baseline>])")
    p.add_argument("--baseline", choices=BASELINES, default="none",
                   help="none: train in imagination; real: same budget in the real task; random: random actions")
    p.add_argument("--num-envs", type=int, default=None, help="parallel envs (default 4 for SAC, 16 for PPO)")
    p.add_argument("--eval-episodes", type=int, default=50, help="real (and imagined) evaluation episodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=["train", "heldout", "all"], default="train",
                   help="dataset episodes that seed imagined episodes (default: the model's training episodes)")
    p.add_argument("--start", choices=["first", "any"], default="any",
                   help="seed from an episode's first frame (as after a real reset) or from any step")
    p.add_argument("--horizon", type=int, default=8,
                   help="imagined episode length (0: the real task's); with --start any a short horizon keeps "
                        "rollouts where the model was trained, and SB3 bootstraps the value at the truncation")
    p.add_argument("--obs", choices=["latent", "readout"], default="readout",
                   help="what the policy sees: the model's latent state, or its read-out heads (normalised "
                        "proprio, and object positions when the model has model.object_weight > 0)")
    p.add_argument("--history", choices=["episode", "context"], default="episode",
                   help="real-env latent: encode the whole episode so far, or only the last model.context frames")
    p.add_argument("--real-obs", choices=["latent", "state"], default="latent",
                   help="--baseline real: observe the real env through the model (latent, default: the same "
                        "observations as in imagination) or its true simulator state (a privileged upper bound)")
    p.add_argument("--reward-scale", type=float, default=10.0, help="training-only reward multiplier")
    p.add_argument("--gamma", type=float, default=0.98)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--updates-per-step", type=float, default=0.5,
                   help="SAC gradient updates per env transition (0.5: one update per 2 transitions)")
    p.add_argument("--videos", type=int, default=2, help="real evaluation episodes recorded in eval.mp4 (0: none)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


# ---------------------------------------------------------------------------------------------
# envs
# ---------------------------------------------------------------------------------------------


def real_env(task: str, model, history: str = "episode", obs: str = "latent"):
    """The real task seen through ``model`` (pixels and proprio in, latent or read-out vector out)."""
    from embodied.envs import make_task
    from embodied.envs.imagined import LatentObservation

    size = int(getattr(model, "image_size", 64))
    env = make_task(task, obs_type="pixels_proprio", width=size, height=size)
    return LatentObservation(env, model, history=history, obs_mode=obs)


class _ScaleReward:
    """SB3 VecEnv wrapper multiplying rewards (training only)."""

    @staticmethod
    def wrap(venv, scale: float):
        from stable_baselines3.common.vec_env import VecEnvWrapper

        class ScaleReward(VecEnvWrapper):
            def reset(self):
                return self.venv.reset()

            def step_wait(self):
                obs, reward, done, infos = self.venv.step_wait()
                return obs, reward * scale, done, infos

        return venv if scale == 1.0 else ScaleReward(venv)


def make_agent(algo: str, venv, args, seed: int):
    import torch
    from stable_baselines3 import PPO, SAC

    if algo == "sac":
        n = venv.num_envs
        updates = max(1, int(round(args.updates_per_step * n)))
        return SAC("MlpPolicy", venv, learning_rate=args.lr, gamma=args.gamma, batch_size=256,
                   buffer_size=max(args.steps, 1000), learning_starts=min(1000, max(args.steps // 10, n)),
                   train_freq=1, gradient_steps=updates, policy_kwargs={"net_arch": [256, 256]},
                   seed=seed, verbose=0, device="cpu")
    n_steps = max(16, 2048 // venv.num_envs)
    return PPO("MlpPolicy", venv, learning_rate=args.lr, gamma=args.gamma, n_steps=n_steps,
               batch_size=min(256, n_steps * venv.num_envs), n_epochs=10, gae_lambda=0.95, ent_coef=0.0,
               policy_kwargs={"net_arch": [256, 256], "activation_fn": torch.nn.Tanh}, seed=seed, verbose=0,
               device="cpu")


# ---------------------------------------------------------------------------------------------
# evaluation in imagination
# ---------------------------------------------------------------------------------------------


def evaluate_imagined(model, act_batch, episodes: int, seed: int, split: str, start: str, task: str,
                      obs: str = "latent") -> dict:
    """Mean return (and predicted success where known) of ``episodes`` imagined episodes run in one batch."""
    from embodied.envs.imagined import ImaginedVectorEnv

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


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def _command_line(args) -> str:
    parts = ["embodied", "policy", "train"]
    for key, value in vars(args).items():
        if key.startswith("_") or key in ("command", "action") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return " ".join(parts)


def _checkpoint_info(run_dir) -> dict:
    from embodied.envs.imagined import dataset_path_of, run_config

    cfg = run_config(run_dir)
    return {"model": str(run_dir), "model_arch": cfg.get("arch") or (cfg.get("model") or {}).get("arch"),
            "model_step": cfg.get("step"), "dataset": dataset_path_of(run_dir)}


def train(args) -> dict:
    """Train (or not, for --baseline random), evaluate, write policy.json; returns its content."""
    import torch
    from stable_baselines3.common.vec_env import DummyVecEnv

    from embodied.io import atomic_write_json
    from embodied.errors import UserError
    from embodied.envs.imagined import load_world_model, make_sb3_vec_env
    from embodied.envs.registry import canonical_task
    from embodied.policies.evaluate import evaluate, random_actor, sb3_actor

    t_start = time.perf_counter()
    if args.threads and args.threads > 0:
        torch.set_num_threads(args.threads)
    task = canonical_task(args.task)
    if args.steps < 1 and args.baseline != "random":
        raise ValueError(f"--steps {args.steps} must be >= 1")
    if args.model is None and args.baseline != "random":
        raise UserError("--model RUN_DIR is required (a world model run folder from `embodied train`), "
                        "except with --baseline random")
    model = load_world_model(args.model, task) if args.model else None
    model_name = Path(args.model).name if args.model else "none"
    suffix = "" if args.baseline == "none" else f"_{args.baseline}"
    out = Path(args.out or Path("runs") / "policy" / f"{task}_{model_name}_{args.algo}{suffix}")
    out.mkdir(parents=True, exist_ok=True)
    num_envs = args.num_envs or (4 if args.algo == "sac" else 16)
    progress = not args.no_progress

    result: dict = {"task": task, "algo": args.algo if args.baseline != "random" else "random",
                    "trained_in": {"none": "imagination", "real": "real", "random": "nothing"}[args.baseline],
                    "baseline": args.baseline, "seed": args.seed, "steps": args.steps, "num_envs": num_envs,
                    "env_steps_imagined": 0, "env_steps_real": 0}
    if args.model:
        result.update(_checkpoint_info(args.model))

    # --- train -------------------------------------------------------------------------------
    agent, train_s = None, 0.0
    if args.baseline != "random":
        if args.baseline == "none":
            venv = make_sb3_vec_env(model, num_envs=num_envs, task=task, split=args.split, start=args.start,
                                    horizon=args.horizon or None, obs_mode=args.obs)
            venv.seed(args.seed)
        else:
            if args.real_obs == "state":
                from embodied.envs import make_task

                venv = DummyVecEnv([lambda: make_task(task, obs_type="state") for _ in range(num_envs)])
            else:
                venv = DummyVecEnv([lambda: real_env(task, model, args.history, args.obs) for _ in range(num_envs)])
            venv.seed(args.seed)
        venv = _ScaleReward.wrap(venv, args.reward_scale)
        agent = make_agent(args.algo, venv, args, args.seed)
        t0 = time.perf_counter()
        try:
            agent.learn(total_timesteps=args.steps, progress_bar=progress)
        except KeyboardInterrupt:
            print("embodied policy: interrupted; evaluating the policy trained so far", file=sys.stderr)
        train_s = time.perf_counter() - t0
        steps_done = int(agent.num_timesteps)
        result["env_steps_imagined" if args.baseline == "none" else "env_steps_real"] = steps_done
        result["train_wall_s"] = train_s
        result["train_steps_per_s"] = steps_done / max(train_s, 1e-9)
        agent.save(out / "policy.zip")
        result["policy"] = str(out / "policy.zip")
        result["load_with"] = f"stable_baselines3.{type(agent).__name__}.load({str(out / 'policy.zip')!r})"
        venv.close()

    # --- evaluate in the real task -------------------------------------------------------------
    eval_seed = args.seed + EVAL_SEED_OFFSET
    state_policy = args.baseline == "real" and args.real_obs == "state"
    if state_policy:
        from embodied.envs import make_task

        env = make_task(task, obs_type="state")
    elif model is not None:
        env = real_env(task, model, args.history, args.obs)
    else:
        from embodied.envs import make_task

        env = make_task(task, obs_type="pixels_proprio")
    act = sb3_actor(agent) if agent is not None else random_actor(env.action_space, eval_seed)
    real = evaluate(env, act, episodes=args.eval_episodes, seed=eval_seed,
                    video=out / "eval" if args.videos > 0 else None, video_episodes=args.videos,
                    progress=progress, desc=f"{task} real eval")
    env.close()
    result.update({"real_success_rate": real["success_rate"], "real_success_any_rate": real["success_any_rate"],
                   "real_return_mean": real["return_mean"], "real_return_std": real["return_std"],
                   "eval_episodes": real["episodes"], "eval_seed": eval_seed, "video": real.get("video"),
                   "latent_history": args.history, "observations": "state" if state_policy else
                   (args.obs if model is not None else "none")})

    # --- and in imagination --------------------------------------------------------------------
    if model is not None and not state_policy:
        if agent is not None:
            act_batch = lambda obs: agent.predict(obs, deterministic=True)[0]  # noqa: E731
        else:
            rng = np.random.default_rng(eval_seed)
            act_batch = lambda obs: rng.uniform(-1, 1, size=(obs.shape[0], model.action_dim))  # noqa: E731
        result.update(evaluate_imagined(model, act_batch, args.eval_episodes, eval_seed, args.split, args.start, task,
                                        args.obs))
    else:  # a random policy needs no model; a state policy cannot read latents
        result["imagined_return_mean"] = None

    result.update({"wall_s": time.perf_counter() - t_start, "command": _command_line(args),
                   "torch_threads": torch.get_num_threads(), "per_episode": real["per_episode"]})
    atomic_write_json(out / "policy.json", result)
    result["policy_json"] = str(out / "policy.json")
    return result


def run(args) -> int:
    if args.action != "train":
        raise ValueError(f"unknown action {args.action!r}: use `embodied policy train`")
    r = train(args)
    imag = r.get("imagined_return_mean")
    imag_txt = "" if imag is None else f", imagined return {imag:.2f}"
    print(f"{r['task']} {r['algo']} trained in {r['trained_in']}: real success {r['real_success_rate']:.0%}, "
          f"real return {r['real_return_mean']:.2f}{imag_txt} ({r['wall_s']:.0f} s) -> {r['policy_json']}")
    return 0
