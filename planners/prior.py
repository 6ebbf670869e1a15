"""A policy prior for the planners (amortised planning, as in TD-MPC2): an actor proposes action sequences.

:class:`PolicyPrior` rolls a policy through the world model in imagination from the planner's
``(model, state)``, all N sequences in one batch: at each horizon step one policy call on the
N observations (the model's latent or read-out vector, as the policy saw it in training) and one
``model.step``. Sequence 0 takes the policy's deterministic actions; the others add Gaussian
noise of std ``noise_std`` to each action, and the policy reacts to the states that noise leads to.
No simulator is involved.

With a ``critic`` (an SB3 agent's own: ``min_i Q_i(s, pi(s))`` for SAC, ``V(s)`` for PPO),
:meth:`PolicyPrior.value` scores where a plan ends, as TD-MPC2 bootstraps its short horizon with the
learned value (the planners' ``terminal_value`` setting).

:func:`load_prior` loads a folder or zip written by ``embodied policy train`` with the loader of
``embodied policy rank`` (SB3's own ``load``; algorithm and observations from the run's policy.json).
"""
from __future__ import annotations

from pathlib import Path

import torch

from embodied.envs.imagined.core import vector_observation
from embodied.errors import UserError
from embodied.models.base import State, WorldModel, repeat_state


class PolicyPrior:
    """``agent`` acting on ``obs`` vectors: an SB3 algorithm (its policy network called directly), or anything
    with SB3's ``predict(obs, deterministic=True)``; ``critic`` (obs (B, D) -> (B,)) scores states, if given."""

    def __init__(self, agent, obs: str = "latent", label: str = "policy", critic=None):
        self.agent, self.obs, self.label, self.critic = agent, obs, label, critic
        self._policy = sb3_policy(agent)
        if self._policy is not None:  # the action box, once: act() runs at every horizon step
            space = self._policy.action_space
            self._box = tuple(torch.as_tensor(b, dtype=torch.float32) for b in (space.low, space.high))

    def act(self, model: WorldModel, state: State) -> torch.Tensor:
        """The policy's deterministic actions (B, A) in a batch of model states."""
        obs = vector_observation(model, state, self.obs)
        if self._policy is not None:
            return sb3_actions(self._policy, obs, *self._box)
        action = self.agent.predict(obs.cpu().numpy(), deterministic=True)[0]
        return torch.as_tensor(action, dtype=torch.float32).reshape(obs.shape[0], -1)

    def value(self, model: WorldModel, state: State) -> torch.Tensor:
        """(B,) the critic's value of a batch of model states; a ValueError without a critic."""
        if self.critic is None:
            raise ValueError(f"the policy prior {self.label!r} has no critic to score where a plan ends: set "
                             "planner.terminal_value=0, or use a policy from `embodied policy train`")
        return self.critic(vector_observation(model, state, self.obs)).float().reshape(-1)

    @torch.no_grad()
    def propose(self, model: WorldModel, state: State, n: int, horizon: int, noise_std: float = 0.0,
                generator: torch.Generator | None = None, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
        """``n`` imagined rollouts (n, H, A) from a batch-1 ``state``; row 0 noise-free, every action clamped."""
        states = repeat_state(state, n)
        actions = []
        for t in range(horizon):
            action = self.act(model, states)
            if n > 1 and noise_std > 0:
                action[1:] += noise_std * torch.randn(action[1:].shape, generator=generator)
            actions.append(action.clamp(low, high))
            if t < horizon - 1:  # the last action needs no next state
                states = model.step(states, actions[-1])
        return torch.stack(actions, dim=1)

    def __repr__(self) -> str:
        return f"PolicyPrior({self.label!r}, obs={self.obs!r})"


def sb3_policy(agent):
    """The policy network of an SB3 algorithm, in eval mode; None for any other agent."""
    policy = getattr(agent, "policy", None)
    if policy is None or not hasattr(policy, "_predict"):
        return None
    policy.set_training_mode(False)
    return policy


def sb3_actions(policy, obs: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """What ``policy.predict(obs, deterministic=True)`` returns in the action box [``low``, ``high``], as a (B, A)
    tensor without the numpy round trip."""
    with torch.no_grad():
        action = policy._predict(obs.to(policy.device), deterministic=True).float().reshape(obs.shape[0], -1).cpu()
    if policy.squash_output:  # tanh-squashed in [-1, 1]: back to the action box
        return low + 0.5 * (action + 1.0) * (high - low)
    return torch.maximum(torch.minimum(action, high), low)


def sb3_critic(agent):
    """obs (B, D) -> (B,) value of an SB3 agent: min over its Q-heads at its own deterministic action (SAC), or
    its V (PPO); None if it has neither."""
    policy = sb3_policy(agent)
    if policy is None:
        return None
    if hasattr(policy, "critic") and hasattr(policy, "actor"):
        def q_value(obs):
            with torch.no_grad():
                obs = obs.to(policy.device)
                return torch.cat(policy.critic(obs, policy._predict(obs, deterministic=True)), 1).min(1).values.cpu()
        return q_value
    if hasattr(policy, "predict_values"):
        def v_value(obs):
            with torch.no_grad():
                return policy.predict_values(obs.to(policy.device)).reshape(-1).cpu()
        return v_value
    return None


def check_prior_path(path) -> Path:
    """The zip of a policy folder or the zip itself; a one-line UserError for anything else."""
    p = Path(path)
    if p.is_dir() and (p / "policy.zip").is_file():
        return p / "policy.zip"
    if p.is_file() and p.suffix == ".zip":
        return p
    what = ("this folder holds no policy.zip" if p.is_dir() else "not a .zip file" if p.is_file()
            else "no such folder or .zip file")
    raise UserError(f"--prior {str(path)!r}: {what}; pass a folder written by `embodied policy train` "
                    "(not --baseline random) or one of its snapshots/policy_<steps>_steps.zip")


def load_prior(path, model: WorldModel) -> PolicyPrior:
    """The prior of a policy folder or SB3 zip, its observations checked against ``model``."""
    from embodied.policies.policy_spec import parse_policy, sb3_observations  # SB3 loads only for a prior
    from embodied.policies.sb3_zip import load_sb3_zip

    zip_path = check_prior_path(path)
    if model.abilities.simulator_state:
        raise UserError(f"--prior {str(path)!r}: a policy observes a learned model's latent or read-out, which the "
                        "MuJoCo oracle does not have; plan with the model it was trained in (--model RUN_DIR)")
    spec = parse_policy(str(zip_path.resolve()))
    agent = load_sb3_zip(spec.path, spec.algo)
    return PolicyPrior(agent, sb3_observations(spec, agent, model), label=spec.label, critic=sb3_critic(agent))
