"""The policy prior in the planners: the policy planner acts as the policy, CEM/MPPI score the prior's proposals,
and `embodied plan --prior` loads a policy folder (a bad one is refused with one line)."""
from __future__ import annotations

import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
import pytest
import torch

from embodied.models.base import WorldModel
from embodied.planners import PolicyPrior, load_prior, make_planner

pytestmark = pytest.mark.usefixtures("one_thread")

DT = 0.1


class PointMass(WorldModel):
    """State = position; step = pos + clip(action) * dt; reward = -distance to ``goal``; encoded from proprio."""

    image_size = 8

    def __init__(self, goal):
        super().__init__()
        self.goal = torch.as_tensor(goal, dtype=torch.float32)
        self.action_dim = self.proprio_dim = len(goal)
        self.calls: list[torch.Tensor] = []

    def encode(self, frames, actions, proprio=None, sim_state=None):
        return {"pos": proprio[:, -1].float()}

    def features(self, state):
        return state["pos"]

    def step(self, state, action):
        return {"pos": state["pos"] + action.clamp(-1, 1) * DT}

    def reward(self, state):
        return -torch.linalg.norm(state["pos"] - self.goal, dim=-1)

    def decode(self, state):
        return torch.zeros(state["pos"].shape[0], 8, 8, 3, dtype=torch.uint8)

    def rollout(self, state, actions):
        self.calls.append(actions.clone())
        return super().rollout(state, actions)


class Greedy:
    """A perfect policy for PointMass: straight at the goal, as fast as the bounds allow (SB3's ``predict``)."""

    def __init__(self, goal):
        self.goal = np.asarray(goal, np.float32)
        self.batches: list[int] = []

    def predict(self, obs, deterministic=False):
        self.batches.append(len(obs))
        return np.clip((self.goal - obs) / DT, -1, 1).astype(np.float32), None


def origin(dim: int):
    return {"pos": torch.zeros(1, dim)}


def true_return(model, plan) -> float:
    return float(WorldModel.rollout(model, origin(plan.shape[1]), plan[None])[1].sum())


class _Spaces(gym.Env):
    def __init__(self, obs_dim: int, action_dim: int):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)


def sac_folder(folder, obs_dim: int, action_dim: int):
    """An (untrained) SAC policy saved as `embodied policy train` saves one: policy.zip and policy.json."""
    from stable_baselines3 import SAC

    agent = SAC("MlpPolicy", _Spaces(obs_dim, action_dim), buffer_size=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": [8]})
    folder.mkdir(parents=True)
    agent.save(folder / "policy.zip")
    (folder / "policy.json").write_text(json.dumps({"algo": "sac", "trained_in": "imagination", "baseline": "none",
                                                    "observations": "latent", "config": {"obs": "latent"}}))
    return agent


def test_policy_planner_returns_the_policys_actions(tmp_path):
    """A saved SB3 policy, loaded as a prior: the policy planner's plan is the policy rolled through the model."""
    model = PointMass([0.3, -0.2])
    agent = sac_folder(tmp_path / "pol", 2, 2)
    prior = load_prior(tmp_path / "pol", model)
    assert prior.obs == "latent"
    state = {"pos": torch.tensor([[0.1, 0.05]])}
    plan = make_planner("policy", prior=prior, horizon=3).plan(model, state)
    assert plan.shape == (3, 2) and not model.calls  # one imagined rollout, no search
    s = state
    for t in range(3):
        want = agent.predict(s["pos"].numpy(), deterministic=True)[0][0]
        np.testing.assert_array_equal(plan[t].numpy(), want)
        s = model.step(s, plan[t:t + 1])
    with pytest.raises(ValueError, match="--prior"):
        make_planner("policy", horizon=3).plan(model, state)


def test_proposals_are_batched_and_noisy_but_the_first():
    model = PointMass([0.3, -0.2, 0.1])
    policy = Greedy(model.goal)
    prior = PolicyPrior(policy)
    g = torch.Generator().manual_seed(0)
    rollouts = prior.propose(model, origin(3), 6, 4, noise_std=0.5, generator=g, low=-0.8, high=0.8)
    assert rollouts.shape == (6, 4, 3) and policy.batches == [6] * 4  # one policy call per step for all sequences
    assert rollouts.abs().max() <= 0.8
    clean = prior.propose(model, origin(3), 1, 4, low=-0.8, high=0.8)[0]
    assert torch.equal(rollouts[0], clean)
    assert all(not torch.equal(rollouts[i], clean) for i in range(1, 6))


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_a_prior_that_knows_the_optimum_lets_few_samples_find_it(name):
    """Six dimensions, eight steps, eight samples, one iteration: hopeless alone, exact with the prior among them."""
    goal = [2.0, -2.0, 2.0, -2.0, 2.0, -2.0]  # out of reach: the optimum is full speed towards it throughout
    model = PointMass(goal)
    optimum = true_return(model, torch.tensor(goal).sign().expand(8, -1))
    settings = dict(horizon=8, samples=8, iterations=1, elites=2, select="best")
    alone = [optimum - true_return(model, make_planner(name, **settings, seed=s).plan(model, origin(6)))
             for s in range(3)]
    prior = PolicyPrior(Greedy(goal))
    helped = [optimum - true_return(model, make_planner(name, **settings, seed=s, prior=prior).plan(model, origin(6)))
              for s in range(3)]
    assert min(alone) > 0.5, alone
    assert max(helped) < 1e-5, helped


def test_prior_share_and_the_warm_start():
    """round(prior_share * samples) proposals after the starting proposal, then the previous plan shifted."""
    goal = [0.6, -0.6]
    model = PointMass(goal)
    policy = Greedy(goal)
    planner = make_planner("cem", horizon=5, samples=20, iterations=2, elites=4, prior_share=0.25, prior_std=0.0,
                           prior=PolicyPrior(policy))
    clean = PolicyPrior(Greedy(goal)).propose(model, origin(2), 1, 5)[0]
    first = planner.plan(model, origin(2))
    assert policy.batches == [5] * 5  # five proposals, one batched rollout of the horizon
    for batch in model.calls:  # noise-free proposals: all five are the policy's rollout, in every iteration
        assert all(torch.equal(batch[i], clean) for i in range(1, 6))
    assert torch.equal(model.calls[0][0], clean)  # the starting proposal
    model.calls.clear()
    planner.advance(1)
    planner.plan(model, origin(2))
    shifted = torch.cat([first[1:], first[-1:]])
    assert all(torch.equal(batch[6], shifted) for batch in model.calls)
    with pytest.raises(ValueError, match="prior_share"):
        make_planner("cem", prior_share=1.5)


def test_no_prior_changes_nothing():
    model = PointMass([0.4, 0.1])
    for name in ("cem", "mppi", "random"):
        a = make_planner(name, seed=3, horizon=6, samples=30, iterations=2, elites=4)
        b = make_planner(name, seed=3, horizon=6, samples=30, iterations=2, elites=4, prior_share=0.9, prior_std=2.0)
        assert torch.equal(a.plan(model, origin(2)), b.plan(model, origin(2))), name


def test_plan_command_with_a_prior(tmp_path, capsys):
    """`embodied plan --prior`: a policy folder drives the policy planner and CEM; bad priors exit 2 with one line."""
    from embodied.cli import main
    from embodied.envs.imagined import ImaginedEnv
    from embodied.load import load_model

    model = load_model("reach", "reach")  # the shipped reach model
    dim = ImaginedEnv(model, obs_mode="latent", task="reach", horizon=1).observation_space.shape[0]
    sac_folder(tmp_path / "pol", dim, 2)
    base = ["plan", "--task", "reach", "--model", "reach", "--episodes", "1", "--max-steps", "3", "--horizon", "3",
            "--samples", "8", "--iterations", "1", "--videos", "0", "--no-progress"]
    for planner in ("policy", "cem"):
        out = tmp_path / planner
        assert main(base + ["--planner", planner, "--prior", str(tmp_path / "pol"), "--out", str(out)]) == 0
        data = json.loads((out / "plan.json").read_text())
        assert data["planner"] == planner and data["prior"] == str((tmp_path / "pol").resolve())
        assert f"--prior {tmp_path / 'pol'}" in data["command"]
    capsys.readouterr()
    sac_folder(tmp_path / "wrong", dim + 1, 2)
    (tmp_path / "empty").mkdir()
    for bad, message in ((tmp_path / "missing", "no such folder or .zip file"), (tmp_path / "empty", "no policy.zip"),
                         (tmp_path / "wrong", "observes a")):
        assert main(base + ["--prior", str(bad), "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(base + ["--model", "mujoco", "--prior", str(tmp_path / "pol"), "--out", str(tmp_path / "bad")]) == 2
    assert "MuJoCo oracle" in capsys.readouterr().err
    assert main(base + ["--planner", "policy", "--out", str(tmp_path / "bad")]) == 2
    assert "--prior POLICY" in capsys.readouterr().err
    assert main(base + ["planner.terminal_value=1", "--out", str(tmp_path / "bad")]) == 2
    assert "pass --prior POLICY" in capsys.readouterr().err
    out = tmp_path / "valued"
    assert main(base + ["--prior", str(tmp_path / "pol"), "planner.terminal_value=1", "--out", str(out)]) == 0
    assert json.loads((out / "plan.json").read_text())["planner_settings"]["terminal_value"] == 1.0
    assert not (tmp_path / "bad" / "plan.json").exists()


class Sparse(PointMass):
    """PointMass whose reward is 0 until the goal is within 0.05: a short horizon alone sees nothing."""

    def reward(self, state):
        return (torch.linalg.norm(state["pos"] - self.goal, dim=-1) < 0.05).float()


def distance_critic(goal):
    """Minus the steps a full-speed policy needs from each observed position to ``goal``."""
    goal = torch.as_tensor(goal, dtype=torch.float32)
    return lambda obs: -torch.linalg.norm(obs - goal, dim=-1) / DT


def test_terminal_value_is_added_to_the_score_and_guides_a_short_horizon():
    goal = [0.8, -0.6]
    model = Sparse(goal)
    prior = PolicyPrior(Greedy([0.0, 0.0]), critic=distance_critic(goal))  # a useless actor, a knowing critic
    planner = make_planner("cem", horizon=1, samples=16, iterations=2, elites=4, terminal_value=0.5, discount=0.9,
                           prior=prior)
    actions = torch.rand(5, 1, 2) * 2 - 1
    final = {"pos": origin(2)["pos"] + actions[:, 0] * DT}
    want = model.reward(final) + 0.5 * 0.9 * distance_critic(goal)(final["pos"])
    torch.testing.assert_close(planner.score(model, origin(2), actions), want)
    direction = torch.tensor(goal) / torch.linalg.norm(torch.tensor(goal))

    def progress(**value) -> float:
        """Mean step towards the goal of the first planned action over five seeds (at most 1.4: the box corner)."""
        return sum(float(make_planner("cem", horizon=1, samples=16, iterations=3, elites=4, prior=prior, seed=seed,
                                      **value).plan(model, origin(2))[0] @ direction) for seed in range(5)) / 5

    assert progress(terminal_value=0.5) > 1.0  # towards the goal it cannot see within one step
    assert progress() < 0.5


def test_terminal_value_needs_a_prior_with_a_critic():
    model = PointMass([0.3, 0.1])
    with pytest.raises(ValueError, match="needs a policy prior"):
        make_planner("cem", horizon=2, samples=4, elites=2, terminal_value=1.0).plan(model, origin(2))
    with pytest.raises(ValueError, match="no critic"):
        make_planner("cem", horizon=2, samples=4, elites=2, terminal_value=1.0,
                     prior=PolicyPrior(Greedy([0.3, 0.1]))).plan(model, origin(2))
    with pytest.raises(ValueError, match="terminal_value"):
        make_planner("cem", terminal_value=-1.0)


@pytest.mark.parametrize("algo", ["sac", "ppo"])
def test_a_loaded_sb3_prior_acts_as_predict_and_its_critic_is_the_agents(tmp_path, algo):
    """The prior calls the policy network directly: the same actions as SB3's ``predict``; its value is
    min_i Q_i(s, pi(s)) for the off-policy algorithms and V(s) for PPO."""
    import stable_baselines3

    cls = getattr(stable_baselines3, algo.upper())
    kwargs = {"buffer_size": 1} if algo != "ppo" else {"n_steps": 8, "batch_size": 8}
    agent = cls("MlpPolicy", _Spaces(3, 2), seed=0, device="cpu", policy_kwargs={"net_arch": [8]}, **kwargs)
    folder = tmp_path / "pol"
    folder.mkdir()
    agent.save(folder / "policy.zip")
    (folder / "policy.json").write_text(json.dumps({"algo": algo, "trained_in": "imagination", "baseline": "none",
                                                    "observations": "latent", "config": {"obs": "latent"}}))
    model = PointMass([0.3, -0.2, 0.1])
    model.action_dim = 2
    prior = load_prior(folder, model)
    states = {"pos": torch.randn(6, 3)}
    want = agent.predict(states["pos"].numpy(), deterministic=True)[0]
    np.testing.assert_allclose(prior.act(model, states).numpy(), want, atol=1e-6)
    with torch.no_grad():
        obs = states["pos"]
        if algo == "ppo":
            value = agent.policy.predict_values(obs)[:, 0]
        else:
            value = torch.minimum(*agent.critic(obs, agent.actor(obs, deterministic=True)))[:, 0]
    torch.testing.assert_close(prior.value(model, states), value)
