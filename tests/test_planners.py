"""Planners on a model whose optimum is known, the oracle's exactness, and short closed loops."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
import pytest
import torch

from embodied.envs.context import ObsHistory
from embodied.envs.registry import make_task, task_class
from embodied.errors import UserError
from embodied.models.base import Abilities, WorldModel
from embodied.models.oracle import MujocoOracle
from embodied.planners import PLANNERS, PlannerSettings, make_planner
from embodied.planners.mpc import run_mpc


class PointMass(WorldModel):
    """State = position; step = pos + clip(action) * dt; reward = -distance to ``goal``.

    Records every batch of action sequences it is asked to roll out.
    """

    abilities = Abilities(goal_distance=True)

    def __init__(self, goal, dt: float = 0.1):
        super().__init__()
        self.goal = torch.as_tensor(goal, dtype=torch.float32)
        self.action_dim = len(goal)
        self.dt = dt
        self.calls: list[torch.Tensor] = []

    def encode(self, frames, actions, proprio=None, sim_state=None):
        return {"pos": proprio[:, -1, : self.action_dim].float()}

    def features(self, state):
        return state["pos"]

    def step(self, state, action):
        return {"pos": state["pos"] + action.clamp(-1, 1) * self.dt}

    def reward(self, state):
        return -torch.linalg.norm(state["pos"] - self.goal, dim=-1)

    def decode(self, state):
        return torch.zeros(state["pos"].shape[0], 8, 8, 3, dtype=torch.uint8)

    def goal_distance(self, state, goal):
        return torch.linalg.norm(state["pos"] - goal["pos"], dim=-1)

    def rollout(self, state, actions):
        self.calls.append(actions.clone())
        return super().rollout(state, actions)


def origin(dim: int = 2):
    return {"pos": torch.zeros(1, dim)}


def true_return(model: PointMass, state, plan: torch.Tensor) -> float:
    _, rewards = WorldModel.rollout(model, state, plan[None])
    return float(rewards.sum())


SMALL = dict(horizon=8, samples=200, iterations=6, elites=20)


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_finds_saturated_first_action_towards_goal(name):
    # the goal needs several full-speed steps on both axes: the first action is (1, -1)
    model = PointMass([0.35, -0.25])
    plan = make_planner(name, **SMALL).plan(model, origin(), None)
    assert plan.shape == (8, 2)
    assert plan[0, 0] > 0.9 and plan[0, 1] < -0.9, plan[0]


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_finds_interior_optimum(name):
    # a goal half a step away: the best first action lands on it (0.5), not at the bound.
    # MPPI's precision is bounded by its fixed noise, so it gets a smaller one here.
    model = PointMass([0.05])
    extra = {"noise_std": 0.3} if name == "mppi" else {}
    plan = make_planner(name, horizon=3, samples=200, iterations=6, elites=10, **extra).plan(model, origin(1), None)
    assert abs(float(plan[0, 0]) - 0.5) < 0.08, plan[:, 0]


def test_goal_objective_uses_goal_distance():
    model = PointMass([9.0, 9.0])  # the reward points elsewhere; only the goal state counts
    goal = {"pos": torch.tensor([[-10.0, 10.0]])}
    plan = make_planner("cem", objective="goal", **SMALL).plan(model, origin(), goal)
    assert plan[0, 0] < -0.9 and plan[0, 1] > 0.9, plan[0]
    with pytest.raises(ValueError, match="goal"):
        make_planner("cem", objective="goal").plan(model, origin(), None)


def test_random_shooting_is_worse_than_cem():
    dim = 6
    model = PointMass([10.0] * dim)
    optimum = true_return(model, origin(dim), torch.ones(10, dim))
    gaps = {}
    for name in ("cem", "random"):  # same budget: 3 batches of 100 sequences
        gaps[name] = [optimum - true_return(model, origin(dim), make_planner(
            name, horizon=10, samples=100, iterations=3, elites=10, seed=seed).plan(model, origin(dim), None))
            for seed in range(3)]
    assert max(gaps["cem"]) < min(gaps["random"])
    assert np.mean(gaps["cem"]) < 0.75 * np.mean(gaps["random"])


def test_one_batched_rollout_per_iteration():
    model = PointMass([1.0, 1.0])
    for name in (n for n in PLANNERS if n != "policy"):  # the policy planner searches nothing (test_planners_prior)
        model.calls.clear()
        make_planner(name, horizon=5, samples=40, iterations=3, elites=5).plan(model, origin(), None)
        assert [tuple(c.shape) for c in model.calls] == [(40, 5, 2)] * 3, name


def test_warm_start_shift():
    model = PointMass([0.3, -0.2])
    planner = make_planner("cem", horizon=6, samples=32, iterations=2, elites=4)
    assert torch.equal(planner.initial_mean(2), torch.zeros(6, 2))
    plan = planner.plan(model, origin(), None)
    assert torch.equal(planner.initial_mean(2), torch.cat([plan[1:], plan[-1:]]))
    planner.advance(2)
    assert torch.equal(planner.initial_mean(2), torch.cat([plan[2:], plan[-1:], plan[-1:]]))
    planner.reset()
    assert torch.equal(planner.initial_mean(2), torch.zeros(6, 2))
    cold = make_planner("cem", horizon=6, samples=32, iterations=2, elites=4, warm_start=False)
    cold.plan(model, origin(), None)
    assert torch.equal(cold.initial_mean(2), torch.zeros(6, 2))


@pytest.mark.parametrize("name", ["cem", "mppi", "random"])
def test_warm_start_speeds_convergence(name):
    dim, horizon = 4, 10
    model = PointMass([5.0] * dim)
    settings = dict(horizon=horizon, samples=24, iterations=1, elites=4)
    warm = make_planner(name, **settings)
    # converge once (many iterations), execute the first action, then replan with a single iteration
    warm.settings = PlannerSettings(**{**warm.settings.to_dict(), "iterations": 8})
    first = warm.plan(model, origin(dim), None)
    state = model.step(origin(dim), first[:1])
    warm.settings = PlannerSettings(**{**warm.settings.to_dict(), "iterations": 1})
    warm_score = true_return(model, state, warm.plan(model, state, None))
    cold_score = true_return(model, state, make_planner(name, **settings, seed=1).plan(model, state, None))
    assert warm_score > cold_score


@pytest.mark.parametrize("name", ["cem", "mppi", "random"])
def test_bounds_respected(name):
    for goal in ([5.0, -5.0], [-5.0, 5.0]):
        model = PointMass(goal)
        planner = make_planner(name, action_low=-0.3, action_high=0.5, noise_std=2.0, **SMALL)
        for _ in range(3):
            plan = planner.plan(model, origin(), None)
            assert plan.min() >= -0.3 and plan.max() <= 0.5
        sampled = torch.cat(model.calls)
        assert sampled.min() >= -0.3 and sampled.max() <= 0.5
        # the bound itself is found when the goal lies beyond it
        if name != "random":
            assert plan[0].tolist() == pytest.approx([0.5 if g > 0 else -0.3 for g in goal], abs=0.1)


@pytest.mark.parametrize("name", ["cem", "mppi", "random"])
def test_seeded_and_reproducible(name):
    model = PointMass([0.4, 0.1])
    a = make_planner(name, seed=7, **SMALL)
    b = make_planner(name, seed=7, **SMALL)
    c = make_planner(name, seed=8, **SMALL)
    pa, pb, pc = (p.plan(model, origin(), None) for p in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)
    a.reset()
    assert torch.equal(a.plan(model, origin(), None), pa)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="elites"):
        make_planner("cem", samples=10, elites=20)
    with pytest.raises(ValueError, match="unknown planner setting"):
        make_planner("cem", horizn=3)
    with pytest.raises(ValueError, match="unknown planner"):
        make_planner("ilqr")
    with pytest.raises(ValueError, match="objective"):
        make_planner("mppi", objective="value")


def test_task_defaults():
    push = task_class("push").planner_defaults
    assert push["horizon"] != PlannerSettings().horizon
    assert make_planner("cem", task="push").settings.horizon == push["horizon"]
    assert make_planner("cem", task="Push").settings.samples == push["samples"]
    assert make_planner("cem", task="push", horizon=5, samples=None).settings.horizon == 5
    assert make_planner("cem", task="reach").settings == make_planner("cem").settings


# ---- the MuJoCo oracle -------------------------------------------------------------


@pytest.mark.parametrize("task", ["reach", "push"])
def test_oracle_rollout_equals_env(task):
    env = make_task(task, obs_type="state")
    env.reset(seed=3)
    oracle = MujocoOracle(task)
    start = env.get_state()
    rng = np.random.default_rng(0)
    actions = torch.as_tensor(rng.uniform(-1, 1, (3, 8, env.action_space.shape[0])), dtype=torch.float32)
    encoded = oracle.encode(None, None, sim_state=torch.from_numpy(start)[None])
    final, rewards = oracle.rollout(encoded, actions)
    n = oracle._nphys
    stepped = oracle.encode(None, None, sim_state=torch.from_numpy(start)[None])
    for i in range(3):
        env.set_state(start)
        real = [env.step(a)[1] for a in actions[i].numpy()]
        np.testing.assert_array_equal(rewards[i].numpy(), np.float32(real))
        np.testing.assert_array_equal(final["sim"][i, :n].numpy(), env.get_state()[:n])
    # step() replays the env exactly too
    env.set_state(start)
    for a in actions[0].numpy():
        env.step(a)
        stepped = oracle.step(stepped, torch.as_tensor(a)[None])
    np.testing.assert_array_equal(stepped["sim"][0].numpy(), env.get_state())
    env.close()


@pytest.mark.parametrize("task", ["reach", "push"])
def test_goal_image_solves_the_task(task):
    env = make_task(task, obs_type="pixels_proprio")
    env.reset(seed=5)
    before = env.get_state()
    obs, sim = env.goal_observation()
    np.testing.assert_array_equal(env.get_state(), before)  # the env is left as it was
    assert obs["pixels"].shape == (64, 64, 3) and obs["proprio"].shape == env.proprio_space.shape
    env.set_state(sim)
    assert env._info()["is_success"]
    env.close()


# ---- closed loop ------------------------------------------------------------------


class PixelPointMassEnv(gym.Env):
    """A stand-in robot: any gymnasium.Env with pixels + proprio observations."""

    def __init__(self, goal=(0.5, -0.3), max_steps=15):
        self.goal = np.asarray(goal, dtype=np.float32)
        self.max_steps = max_steps
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)})

    def _obs(self):
        return {"pixels": np.full((8, 8, 3), self.t, np.uint8), "proprio": self.pos.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = self.np_random.uniform(-0.2, 0.2, 2).astype(np.float32), 0
        return self._obs(), {}

    def step(self, action):
        self.pos = self.pos + np.clip(action, -1, 1) * 0.1
        self.t += 1
        dist = float(np.linalg.norm(self.pos - self.goal))
        return self._obs(), -dist, False, self.t >= self.max_steps, {"is_success": dist < 0.05}


class RecordingPointMass(PointMass):
    context = 3

    def __init__(self, goal):
        super().__init__(goal)
        self.encoded = []

    def encode(self, frames, actions, proprio=None, sim_state=None):
        assert sim_state is None  # a learned model never sees the simulator
        self.encoded.append((frames.clone(), actions.clone(), proprio.clone()))
        return super().encode(frames, actions, proprio)


def test_closed_loop_learned_model_on_any_gym_env(tmp_path):
    env = PixelPointMassEnv()
    model = RecordingPointMass(env.goal)
    result = run_mpc(env, model, make_planner("cem"), episodes=2, seed=0, control_hz=1000.0, video_dir=tmp_path,
                     videos=1)
    assert result["success_rate"] == 1.0 and result["episodes"] == 2
    assert 0 <= result["deadline_miss_rate"] <= 1
    assert result["ms_per_action_p95"] >= result["ms_per_action_median"] > 0
    # the model saw only real observations: a padded window of T frames, T-1 actions, T proprio
    frames, actions, proprio = model.encoded[0]
    assert frames.shape == (1, 3, 8, 8, 3) and frames.dtype == torch.uint8
    assert actions.shape == (1, 2, 2) and not actions.any()
    assert proprio.shape == (1, 3, 2)
    frames, actions, proprio = model.encoded[5]
    assert frames[0, :, 0, 0, 0].tolist() == [3, 4, 5]  # the last three frames, in order
    assert len(list(tmp_path.iterdir())) == 1  # one video, first episode only


class SimBlind(WorldModel):
    """A learned model stand-in for a real task: its state is the last proprio; it must never get sim_state."""

    context = 2
    abilities = Abilities(goal_distance=True)

    def __init__(self, action_dim: int):
        super().__init__()
        self.action_dim = action_dim
        self.encoded = 0

    def encode(self, frames, actions, proprio=None, sim_state=None):
        assert sim_state is None, "a learned model was handed the simulator state"
        self.encoded += 1
        return {"p": proprio[:, -1].float()}

    def step(self, state, action):
        return {"p": state["p"]}

    def decode(self, state):
        return torch.zeros(state["p"].shape[0], 64, 64, 3, dtype=torch.uint8)

    def features(self, state):
        return state["p"]

    def reward(self, state):
        return -state["p"].abs().sum(-1)

    def goal_distance(self, state, goal):
        return torch.linalg.norm(state["p"] - goal["p"], dim=-1)


@pytest.mark.parametrize("objective", ["reward", "goal"])
def test_learned_model_never_gets_the_simulator_state(objective):
    env = make_task("push", obs_type="pixels_proprio")
    model = SimBlind(env.action_space.shape[0])
    planner = make_planner("random", horizon=3, samples=8, iterations=1, elites=2, objective=objective)
    result = run_mpc(env, model, planner, episodes=2, seed=0, max_steps=3)
    goals = 2 if objective == "goal" else 0  # one encoded goal image per episode
    assert result["plans"] == 6 and model.encoded == 6 + goals
    env.close()


class ActionLog(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.actions = []

    def step(self, action):
        self.actions.append(np.array(action))
        return self.env.step(action)


class SpyOracle(MujocoOracle):
    def __init__(self, task):
        super().__init__(task)
        self.seen = []

    def encode(self, frames, actions, proprio=None, sim_state=None):
        self.seen.append(None if sim_state is None else sim_state.clone())
        return super().encode(frames, actions, proprio, sim_state)


@pytest.mark.parametrize("objective", ["reward", "goal"])
def test_oracle_run_gets_the_simulator_state(objective):
    env, twin = make_task("reach", obs_type="pixels_proprio"), make_task("reach", obs_type="pixels_proprio")
    oracle = SpyOracle("reach")
    planner = make_planner("cem", horizon=3, samples=8, iterations=1, elites=2, objective=objective)
    env = ActionLog(env)  # the loop reads the simulator state through wrappers (env.unwrapped)
    run_mpc(env, oracle, planner, episodes=1, seed=4, max_steps=3)
    # the state at each plan is the real env's: replay the executed actions in a twin env
    twin.reset(seed=4)
    want = [twin.get_state()]
    for a in env.actions[:-1]:
        twin.step(a)
        want.append(twin.get_state())
    plans = oracle.seen[1:] if objective == "goal" else oracle.seen  # the goal is encoded first
    assert len(plans) == 3 and all(s is not None for s in oracle.seen)
    for got, expected in zip(plans, want):
        np.testing.assert_array_equal(got[0].numpy(), expected)
    if objective == "goal":  # the goal's simulator state: the scene solved
        twin.set_state(oracle.seen[0][0].numpy())
        assert twin._info()["is_success"]
    env.close(), twin.close()


def test_goal_objective_needs_a_goal_image():
    env = make_task("occlusion", obs_type="pixels_proprio")
    model = SimBlind(env.action_space.shape[0])
    with pytest.raises(UserError, match="--objective reward"):
        run_mpc(env, model, make_planner("cem", objective="goal"), episodes=1)
    env.close()


def test_history_padding():
    h = ObsHistory(context=4, action_dim=1)
    h.reset({"pixels": np.zeros((2, 2, 3), np.uint8), "proprio": np.ones(2, np.float32)})
    h.push([0.5], {"pixels": np.full((2, 2, 3), 9, np.uint8), "proprio": np.zeros(2, np.float32)})
    inputs = h.encode_inputs()
    frames, actions, proprio = inputs["frames"], inputs["actions"], inputs["proprio"]
    assert inputs["sim_state"] is None
    assert frames[0, :, 0, 0, 0].tolist() == [0, 0, 0, 9]
    assert actions[0, :, 0].tolist() == [0, 0, 0.5]
    assert proprio[0, :, 0].tolist() == [1, 1, 1, 0]


def _random_return(env, episodes, seed, steps):
    rng = np.random.default_rng(seed)
    total = 0.0
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        for _ in range(steps):
            total += env.step(rng.uniform(-1, 1, env.action_space.shape))[1]
    return total / episodes


@pytest.mark.parametrize("objective", ["reward", "goal"])
def test_closed_loop_oracle_reach_beats_random(objective):
    env = make_task("reach", obs_type="pixels_proprio")
    oracle = MujocoOracle("reach")
    planner = make_planner("cem", horizon=8, samples=48, iterations=2, elites=6, objective=objective)
    result = run_mpc(env, oracle, planner, episodes=2, seed=0, max_steps=20)
    random_return = _random_return(env, 2, 0, 20)
    assert result["return_mean"] > random_return + 0.5, (result["return_mean"], random_return)
    assert result["success_any_rate"] > 0
    env.close()


def test_plan_command_writes_plan_json(tmp_path):
    from embodied.cli import main

    out = tmp_path / "run"
    code = main(["plan", "--task", "reach", "--model", "mujoco", "--planner", "mppi", "--episodes", "1",
                 "--max-steps", "4", "--horizon", "4", "--samples", "16", "--iterations", "1",
                 "--control-hz", "5", "--videos", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "plan.json").read_text())
    for key in ("success_rate", "return_mean", "ms_per_action_median", "ms_per_action_p95", "deadline_miss_rate"):
        assert isinstance(data[key], float), key
    assert data["planner_settings"]["samples"] == 16 and data["oracle"] is True
    assert data["command"].startswith("embodied plan")
    assert [p.suffix for p in (out / "videos").iterdir()] in ([".mp4"], [".gif"])
    assert main(["plan", "--model", str(tmp_path / "missing"), "--no-progress"]) == 2


def test_plan_command_takes_a_config_and_overrides(tmp_path, capsys):
    """--config and key=value set any planner setting; flags win over the file; plan.json's command reproduces it."""
    from embodied.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "plan.yaml"
    out = tmp_path / "run"
    args = ["plan", "--config", str(config), "--task", "push", "--episodes", "1", "--max-steps", "2",
            "--samples", "16", "--iterations", "1", "--videos", "0", "--no-progress", "--out", str(out),
            "planner.name=mppi", "planner.horizon=3", "planner.temperature=0.5"]
    assert main(args) == 0
    data = json.loads((out / "plan.json").read_text())
    assert data["task"] == "push" and data["planner"] == "mppi"
    settings = data["planner_settings"]
    assert (settings["horizon"], settings["samples"], settings["elites"], settings["temperature"]) == (3, 16, 2, 0.5)
    assert data["command"].split()[2:4] == ["--task", "push"] and "planner.temperature=0.5" in data["command"]
    assert "--planner mppi" in data["command"] and "--horizon 3" in data["command"]
    capsys.readouterr()
    assert main(["plan", "planner.horizn=3"]) == 2
    assert "planner.horizon" in capsys.readouterr().err  # a one-line hint at the right key


def test_plan_record_adds_real_episodes_to_a_dataset(tmp_path):
    """--record: each real MPC episode lands in a dataset that trains like a collected one; seeds never clash."""
    from embodied.cli import main
    from embodied.dataset import Dataset

    data = tmp_path / "data"
    args = ["plan", "--task", "reach", "--model", "mujoco", "--episodes", "2", "--max-steps", "5", "--horizon", "4",
            "--samples", "16", "--iterations", "1", "--videos", "0", "--no-progress", "--seed", "100",
            "--out", str(tmp_path / "run"), "--record", str(data)]
    assert main(args) == 0
    ds = Dataset(data, "reach")
    assert ds.manifest["policies"] == {"mpc-cem": 2} and sorted(e.seed for e in ds.episodes) == [100, 101]
    ep = ds.episodes[0]
    assert len(ep) == 5 and ep.frames.shape == (6, 64, 64, 3) and set(ep.objects) == {"fingertip", "target"}
    assert main(args) == 2  # the same seeds again: refused, nothing overwritten
    assert len(Dataset(data, "reach").episodes) == 2


def test_a_filtering_model_is_encoded_once_per_episode_and_plans_as_if_re_encoded():
    """A model with ``abilities.update`` (the shipped slots reach model) is encoded once per episode and then
    updated with each executed action and new frame; the loop acts exactly as when it re-encodes its padded
    history window every action (the update is a step of the same filter)."""
    from dataclasses import replace

    from embodied.load import load_model

    model = load_model("reach", "reach")
    assert model.abilities.update
    calls = {"encode": 0, "update": 0}

    class Spy(type(model)):
        def encode(self, *args, **kwargs):
            calls["encode"] += 1
            return super().encode(*args, **kwargs)

        def update(self, *args, **kwargs):
            calls["update"] += 1
            return super().update(*args, **kwargs)

    class Reencoding(Spy):
        abilities = replace(model.abilities, update=False)

    results = {}
    for cls in (Spy, Reencoding):
        model.__class__ = cls
        calls.update(encode=0, update=0)
        env = ActionLog(make_task("reach", obs_type="pixels_proprio"))
        planner = make_planner("cem", task="reach", horizon=4, samples=16, iterations=2, elites=4)
        result = run_mpc(env, model, planner, episodes=2, seed=3, max_steps=6)
        results[cls.__name__] = (np.stack(env.actions), result["return_mean"], dict(calls))
        env.close()
    actions, ret, streamed = results["Spy"]
    actions_re, ret_re, reencoded = results["Reencoding"]
    assert streamed == {"encode": 2, "update": 10} and reencoded == {"encode": 12, "update": 0}
    np.testing.assert_allclose(actions, actions_re, atol=1e-5)
    assert abs(ret - ret_re) < 1e-4
