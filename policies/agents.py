"""stable-baselines3 agents from their hyper-parameters (the ``sac`` and ``ppo`` sections of a policy config)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

ALGOS = ("sac", "ppo")
ALGO_CLASSES = {"sac": SAC, "ppo": PPO}
ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


@dataclass
class SACSettings:
    learning_rate: float = 3e-4
    gamma: float = 0.98
    batch_size: int = 256
    buffer_size: int | None = None      # transitions kept; null: max(steps, 1000)
    learning_starts: int | None = None  # transitions before the first update; null: min(1000, max(steps // 10, envs))
    train_freq: int = 1                 # env steps (of all envs together) between update rounds
    updates_per_step: float = 0.5       # gradient updates per env transition (0.5: one per 2 transitions)
    net_arch: list[int] = field(default_factory=lambda: [256, 256])


@dataclass
class PPOSettings:
    learning_rate: float = 3e-4
    gamma: float = 0.98
    rollout: int = 2048                 # transitions per update, all envs together (at least 16 per env)
    batch_size: int = 256               # minibatch (at most one rollout)
    n_epochs: int = 10
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    net_arch: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "tanh"            # tanh | relu


def make_agent(algo: str, venv: VecEnv, steps: int, seed: int, sac: SACSettings | None = None,
               ppo: PPOSettings | None = None):
    """An untrained SAC or PPO agent on ``venv`` for a budget of ``steps`` transitions (all envs together)."""
    n = venv.num_envs
    if algo == "sac":
        s = sac or SACSettings()
        return SAC("MlpPolicy", venv, learning_rate=s.learning_rate, gamma=s.gamma, batch_size=s.batch_size,
                   buffer_size=max(steps, 1000) if s.buffer_size is None else s.buffer_size,
                   learning_starts=min(1000, max(steps // 10, n)) if s.learning_starts is None else s.learning_starts,
                   train_freq=s.train_freq, gradient_steps=max(1, round(s.updates_per_step * n)),
                   policy_kwargs={"net_arch": list(s.net_arch)}, seed=seed, verbose=0, device="cpu")
    if algo != "ppo":
        raise ValueError(f"algo={algo!r} is not one of {ALGOS}")
    p = ppo or PPOSettings()
    if p.activation not in ACTIVATIONS:
        raise ValueError(f"ppo.activation={p.activation!r} is not one of {', '.join(ACTIVATIONS)}")
    n_steps = max(16, p.rollout // n)
    return PPO("MlpPolicy", venv, learning_rate=p.learning_rate, gamma=p.gamma, n_steps=n_steps,
               batch_size=min(p.batch_size, n_steps * n), n_epochs=p.n_epochs, gae_lambda=p.gae_lambda,
               ent_coef=p.ent_coef, seed=seed, verbose=0, device="cpu",
               policy_kwargs={"net_arch": list(p.net_arch), "activation_fn": ACTIVATIONS[p.activation]})


class ScaleReward(VecEnvWrapper):
    """Rewards multiplied by ``scale`` (training only: SAC's entropy bonus otherwise drowns small rewards)."""

    def __init__(self, venv: VecEnv, scale: float):
        super().__init__(venv)
        self.scale = scale

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, reward, done, infos = self.venv.step_wait()
        return obs, reward * self.scale, done, infos


def scale_rewards(venv: VecEnv, scale: float) -> VecEnv:
    """``venv`` with rewards multiplied by ``scale`` (unchanged for 1)."""
    return venv if scale == 1.0 else ScaleReward(venv, scale)
