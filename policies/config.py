"""The settings of a policy run (``embodied policy train``; documented in configs/policy.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field

from embodied.config import check_range
from embodied.errors import UserError
from embodied.policies.agents import ACTIVATIONS, ALGOS, PPOSettings, SACSettings

BASELINES = ("none", "real", "random")
CHOICES = {"algo": ALGOS, "baseline": BASELINES, "split": ("train", "heldout", "all"), "start": ("first", "any"),
           "obs": ("auto", "latent", "readout"), "history": ("episode", "context"), "real_obs": ("latent", "state")}


@dataclass
class PolicyConfig:
    task: str = "reach"                # reach | push | occlusion
    model: str | None = None           # world-model run folder (not needed for baseline random)
    algo: str = "sac"                  # sac | ppo
    steps: int = 20_000                # env steps (transitions) to train for, all envs together
    out: str | None = None             # default runs/policy/<task>_<model>_<algo>[_<baseline>]
    baseline: str = "none"             # none: train in imagination; real: the same budget in the real task; random
    num_envs: int | None = None        # parallel envs; null: 4 for SAC, 16 for PPO
    eval_episodes: int = 50            # real (and imagined) evaluation episodes
    seed: int = 0
    split: str = "train"               # dataset episodes that seed imagined episodes: train | heldout | all
    start: str = "any"                 # seed from an episode's first frame (first) or from any step (any)
    horizon: int = 8                   # imagined episode length; 0: the real task's
    obs: str = "auto"                  # what the policy sees: latent | readout | auto (readout where the model
                                       # has an object head, else latent)
    history: str = "episode"           # real-env latent: encode the whole episode (episode) or the last frames
    real_obs: str = "latent"           # baseline real: latent (as in imagination) or state (privileged)
    reward_scale: float = 10.0         # training-only reward multiplier
    videos: int = 2                    # real evaluation episodes recorded in eval.mp4 (0: none)
    threads: int = 1                   # torch CPU threads; 0 keeps torch's default
    save_every: int = 0                # snapshot the agent every N transitions into snapshots/ (0: none)
    progress: bool = True
    sac: SACSettings = field(default_factory=SACSettings)
    ppo: PPOSettings = field(default_factory=PPOSettings)

    def check(self, source: str) -> None:
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise UserError(f"{key} = {value!r} in {source} must be one of {', '.join(allowed)}")
        if self.ppo.activation not in ACTIVATIONS:
            raise UserError(f"ppo.activation = {self.ppo.activation!r} in {source} must be one of "
                            f"{', '.join(ACTIVATIONS)}")
        if self.baseline != "random":
            check_range(source, {"steps": self.steps}, low=1)
            if self.model is None:
                raise UserError("no world model given: pass --model RUN_DIR (a run folder from `embodied train`), "
                                "or use --baseline random")
        sac, ppo = self.sac, self.ppo
        check_range(source, {"eval_episodes": self.eval_episodes, "num_envs": self.num_envs,
                             "sac.batch_size": sac.batch_size, "sac.buffer_size": sac.buffer_size,
                             "sac.train_freq": sac.train_freq, "ppo.rollout": ppo.rollout,
                             "ppo.batch_size": ppo.batch_size, "ppo.n_epochs": ppo.n_epochs}, low=1)
        check_range(source, {"seed": self.seed, "videos": self.videos, "horizon": self.horizon, "threads": self.threads,
                             "save_every": self.save_every,
                             "sac.learning_starts": sac.learning_starts, "ppo.ent_coef": ppo.ent_coef}, low=0)
        check_range(source, {"reward_scale": self.reward_scale, "sac.learning_rate": sac.learning_rate,
                             "sac.updates_per_step": sac.updates_per_step,
                             "ppo.learning_rate": ppo.learning_rate}, low=0, above=True)
        check_range(source, {"sac.gamma": sac.gamma, "ppo.gamma": ppo.gamma}, low=0, high=1, above=True)
        check_range(source, {"ppo.gae_lambda": ppo.gae_lambda}, low=0, high=1)
        for key, arch in (("sac.net_arch", sac.net_arch), ("ppo.net_arch", ppo.net_arch)):
            if any(width < 1 for width in arch):
                raise UserError(f"{key} = {arch} in {source} must list positive layer widths, e.g. [256, 256]")
