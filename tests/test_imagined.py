"""The imagined env (embodied.envs.imagined) and SB3 in imagination (embodied.policies, `embodied policy`).

Gymnasium's and SB3's env checkers on every observation mode, the vector env
(batched stepping equals per-env stepping, both auto-reset modes, the SB3
adapter), action validation and clipping, the real-env latent wrapper, and a
short SB3 run that beats random actions in imagination. The models are tiny
and randomly initialised (shapes and plumbing, not quality), saved as real run
folders over a six-episode dataset.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import embodied.envs  # noqa: F401  (registers embodied/Imagined-v0)
from embodied.envs.context import batch_windows, pad_window
from embodied.envs.imagined import ImaginedEnv, ImaginedVectorEnv, LatentObservation
from embodied.envs.imagined.sb3 import SB3VecEnv, make_sb3_vec_env
from embodied.envs.registry import make_task
from embodied.load import load_model

pytestmark = [pytest.mark.filterwarnings("ignore:.*observation space (minimum|maximum) value is:UserWarning"),
              pytest.mark.filterwarnings("ignore:.*not having a spec:UserWarning"),
              pytest.mark.filterwarnings("ignore:.*different from the unwrapped version:UserWarning")]

ENV_ID = "embodied/Imagined-v0"
TINY = {"recurrent": {"arch": "recurrent", "channels": 8, "embed_dim": 32, "deter": 32, "stoch": 8, "hidden": 32,
                      "proprio_embed": 16, "object_weight": 1.0},
        "transformer": {"arch": "transformer", "channels": 8, "embed_dim": 32, "proprio_embed": 16, "latent": 32,
                        "d_model": 32, "layers": 1, "heads": 2, "hidden": 32, "window": 6}}


@pytest.fixture(scope="session")
def reach_data(tmp_path_factory):
    from embodied.collect import collect

    out = tmp_path_factory.mktemp("reach_data")
    collect("reach", 6, out, workers=1, progress=False)
    return out


def _save_run(arch: str, data, out):
    from embodied import checkpoint
    from embodied.data import read_manifest
    from embodied.dataset import Dataset, WindowSampler
    from embodied.models import build_model

    man = read_manifest(data)
    spec = {k: man[k] for k in ("task", "image_size", "action_dim", "proprio_dim", "objects")}
    torch.manual_seed(0)
    model = build_model(TINY.get(arch, {"arch": arch}), spec)  # an architecture without a tiny config: its defaults
    model.fit_data(WindowSampler(Dataset(data, "reach").episodes, 6).sample(16, np.random.default_rng(0)))
    checkpoint.save(out, model, spec=spec, train_config={"task": "reach", "data": {"path": str(data)}})
    return out


def _archs():
    from embodied.models import MODELS

    return sorted(MODELS)


@pytest.fixture(scope="session", params=_archs())
def run_dir(request, reach_data, tmp_path_factory):
    return _save_run(request.param, reach_data, tmp_path_factory.mktemp(f"run_{request.param}"))


@pytest.fixture(scope="session")
def any_model(run_dir):
    """Each architecture's tiny model, loaded once from its run folder."""
    return load_model(run_dir, "reach")


@pytest.fixture(scope="session")
def recurrent_run(reach_data, tmp_path_factory):
    return _save_run("recurrent", reach_data, tmp_path_factory.mktemp("run_recurrent"))


@pytest.fixture(scope="session")
def model(recurrent_run):
    return load_model(recurrent_run, "reach")


# ---------------------------------------------------------------------------------------------
# the env checkers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("obs_mode", ["latent", "readout", "pixels", "pixels_proprio"])
def test_gymnasium_checker(any_model, obs_mode):
    # through gymnasium.make, so the checker also re-makes the env from its spec for each render mode
    env = gym.make(ENV_ID, model=any_model, obs_mode=obs_mode, render_mode="rgb_array")
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (64, 64, 3)
    env.close()


@pytest.mark.parametrize("obs_mode", ["latent", "readout", "pixels"])
def test_sb3_checker(any_model, obs_mode):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(ImaginedEnv(any_model, obs_mode=obs_mode, render_mode="rgb_array"), warn=False)


def test_loads_from_a_run_folder(recurrent_run):
    env = gym.make(ENV_ID, model=str(recurrent_run))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and env.unwrapped.core.task == "reach"
    with pytest.raises(ValueError, match="push"):
        ImaginedEnv(str(recurrent_run), task="push")


def test_observation_modes(model):
    latent = ImaginedEnv(model, obs_mode="latent")
    pixels = ImaginedEnv(model, obs_mode="pixels")
    both = ImaginedEnv(model, obs_mode="pixels_proprio")
    o_lat, _ = latent.reset(seed=3)
    o_pix, _ = pixels.reset(seed=3)
    o_both, _ = both.reset(seed=3)
    assert o_lat.dtype == np.float32
    with torch.no_grad():
        assert np.array_equal(o_lat, model.features(latent.core.state)[0].numpy())
    assert o_pix.dtype == np.uint8 and o_pix.shape == (64, 64, 3)
    assert np.array_equal(o_both["pixels"], o_pix) and o_both["proprio"].shape == (model.proprio_dim,)
    a = np.array([0.3, -0.7], np.float32)
    o2, r_lat, *_ = latent.step(a)
    _, r_pix, *_ = pixels.step(a)
    assert r_lat == pytest.approx(r_pix) and not np.array_equal(o2, o_lat)
    readout = ImaginedEnv(model, obs_mode="readout")
    o_read, _ = readout.reset(seed=3)
    assert o_read.shape == (model.proprio_dim + 2 * len(model.object_names),) == readout.observation_space.shape
    with torch.no_grad():
        assert np.array_equal(o_read, model.readout(readout.core.state)[0].numpy())


def test_modes_need_declared_abilities(model):
    """A model with neither a proprio nor an object head refuses the read-out modes with a clear message."""
    from embodied.models import build_model

    spec = {**model.spec, "proprio_dim": 0, "objects": []}
    bare = build_model({**TINY["recurrent"], "object_weight": 0.0}, spec)
    assert not bare.abilities.readout and not bare.abilities.proprio
    with pytest.raises(ValueError, match="no readout ability"):
        ImaginedEnv(bare, obs_mode="readout")
    with pytest.raises(ValueError, match="no proprio head"):
        ImaginedEnv(bare, obs_mode="pixels_proprio")
    with pytest.raises(ValueError, match="no readout ability"):
        LatentObservation(make_task("reach", obs_type="pixels_proprio"), bare, obs_mode="readout")


def test_policies_see_objects_by_default(model):
    """`--obs auto`: the read-out where it holds object positions, else the latent (proprio alone hides the target)."""
    from embodied.models import build_model
    from embodied.policies.imagination import observations_for

    assert model.abilities.objects and observations_for(model) == "readout"
    no_objects = build_model({**TINY["recurrent"], "object_weight": 0.0}, model.spec)
    assert no_objects.abilities.readout and not no_objects.abilities.objects
    assert observations_for(no_objects) == "latent"


def test_defaults_and_determinism(model):
    env = ImaginedEnv(model)
    assert env.horizon == 50  # the real Reach episode length
    a, _ = env.reset(seed=11)
    b, _ = env.reset(seed=11)
    assert np.array_equal(a, b)
    seen = {env.reset(seed=s)[0].tobytes() for s in range(8)}
    assert len(seen) > 1  # different seeds draw different held-out contexts / steps
    env.reset(seed=1)
    for t in range(env.horizon):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert not terminated and truncated == (t == env.horizon - 1) and info["step"] == t + 1
        assert isinstance(info["is_success"], bool)  # reach: the task's rule on the predicted reward


def test_reset_from_given_context_and_live_env(model, reach_data):
    from embodied.dataset import Dataset

    ep = Dataset(reach_data, "reach").episodes[0]
    frames, actions, proprio = ep.frames[:6].numpy(), ep.actions[:5].numpy(), ep.proprio[:6].numpy()
    env = ImaginedEnv(model, horizon=5)
    obs, _ = env.reset(options={"context": {"frames": frames, "actions": actions, "proprio": proprio}})
    f, a, p = pad_window(frames, actions, proprio, 5, env.core.context, model.action_dim)
    with torch.no_grad():
        want = model.encode(torch.from_numpy(f)[None], torch.from_numpy(a)[None], torch.from_numpy(p)[None])
        assert np.allclose(obs, model.features(want)[0].numpy(), atol=1e-6)

    live = make_task("reach", obs_type="pixels_proprio")
    env = ImaginedEnv(model, env=live)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


# ---------------------------------------------------------------------------------------------
# actions
# ---------------------------------------------------------------------------------------------


def test_bad_actions_give_clear_errors(model):
    env = ImaginedEnv(model)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    venv = ImaginedVectorEnv(model, num_envs=2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        venv.step(np.array([[0.0, 0.0], [np.inf, 0.0]]))
    with pytest.raises(gym.error.ResetNeeded):
        ImaginedEnv(model).step(np.zeros(2))


def test_out_of_range_actions_are_clipped_like_the_real_task(model):
    from embodied.envs.actions import check_actions

    real = make_task("reach")
    assert np.array_equal(check_actions([5.0, -3.0], real.action_space), [1.0, -1.0])
    a, b = ImaginedEnv(model), ImaginedEnv(model)
    a.reset(seed=4)
    b.reset(seed=4)
    oa, ra, *_ = a.step(np.array([5.0, -3.0]))
    ob, rb, *_ = b.step(np.array([1.0, -1.0]))
    assert np.array_equal(oa, ob) and ra == rb


# ---------------------------------------------------------------------------------------------
# the vector env
# ---------------------------------------------------------------------------------------------


def test_make_vec_gives_the_batched_env(recurrent_run):
    venv = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", model=str(recurrent_run))
    assert isinstance(venv.unwrapped, ImaginedVectorEnv) and isinstance(venv, VectorEnv)
    obs, info = venv.reset(seed=0)
    assert venv.observation_space.contains(obs) and obs.shape[0] == 3
    obs, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
    assert venv.observation_space.contains(obs)
    assert reward.shape == terminated.shape == truncated.shape == (3,)
    assert info["is_success"].shape == (3,) and info["_is_success"].all()
    venv.close()


@pytest.mark.parametrize("obs_mode", ["latent", "pixels"])
def test_vector_batching_equals_per_env_stepping(model, obs_mode):
    n = 3
    venv = ImaginedVectorEnv(model, num_envs=n, obs_mode=obs_mode)
    singles = [ImaginedEnv(model, obs_mode=obs_mode) for _ in range(n)]
    obs, _ = venv.reset(seed=20)
    for i, env in enumerate(singles):
        o, _ = env.reset(seed=20 + i)  # same context; batched and single convolutions differ by float rounding
        if obs_mode == "latent":
            assert np.allclose(obs[i], o, atol=1e-5)
        else:
            assert np.abs(obs[i].astype(int) - o.astype(int)).max() <= 1
    rng = np.random.default_rng(0)
    for _ in range(6):
        actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        obs, reward, *_ = venv.step(actions)
        for i, env in enumerate(singles):
            o, r, *_ = env.step(actions[i])
            if obs_mode == "latent":
                assert np.allclose(obs[i], o, atol=1e-5)
            else:
                assert np.abs(obs[i].astype(int) - o.astype(int)).max() <= 1
            assert r == pytest.approx(reward[i], abs=1e-5)


def test_next_step_autoreset(model):
    venv = ImaginedVectorEnv(model, num_envs=2, horizon=3)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    venv.reset(seed=0)
    a = np.zeros((2, 2), np.float32)
    for t in range(3):
        _, _, terminated, truncated, _ = venv.step(a)
    assert truncated.all() and not terminated.any()
    # the step after the end resets: reward 0, no flags, counters back to 0, a fresh context
    fresh = ImaginedVectorEnv(model, num_envs=2, horizon=3)
    fresh.reset(seed=0)
    venv_rng_copy = [np.random.Generator(type(r.bit_generator)()) for r in venv._rngs]
    for copy, r in zip(venv_rng_copy, venv._rngs):
        copy.bit_generator.state = r.bit_generator.state
    obs, reward, terminated, truncated, _ = venv.step(np.ones((2, 2), np.float32))
    assert np.array_equal(reward, [0.0, 0.0]) and not terminated.any() and not truncated.any()
    assert np.array_equal(venv.core.steps, [0, 0])
    fresh.core.reset([0, 1], venv_rng_copy)
    assert np.allclose(obs, fresh.core.observe(), atol=1e-6)
    _, _, _, truncated, _ = venv.step(a)
    assert np.array_equal(venv.core.steps, [1, 1]) and not truncated.any()


def test_same_step_autoreset_and_partial_resets(model):
    venv = ImaginedVectorEnv(model, num_envs=3, horizon=2, autoreset_mode="SameStep")
    venv.reset(seed=0)
    venv.core.steps[1] = 1  # env 1 ends one step before the others: only it is reset
    a = np.zeros((3, 2), np.float32)
    before = venv.core.observe()
    obs, _, _, truncated, info = venv.step(a)
    assert np.array_equal(truncated, [False, True, False])
    assert np.array_equal(info["_final_obs"], [False, True, False]) and info["final_obs"][1].shape == obs[1].shape
    assert np.array_equal(venv.core.steps, [1, 0, 1])
    assert not np.allclose(info["final_obs"][1], obs[1])  # the returned observation is the new episode's
    assert not np.allclose(before[0], obs[0])
    obs, _, _, truncated, info = venv.step(a)
    assert np.array_equal(truncated, [True, False, True]) and info["final_info"]["is_success"].shape == (3,)


def test_sb3_vecenv_adapter(model):
    venv = make_sb3_vec_env(model, num_envs=4, horizon=2)
    assert isinstance(venv, SB3VecEnv) and venv.num_envs == 4
    venv.seed(7)
    obs = venv.reset()
    assert obs.shape == (4, *venv.observation_space.shape)
    venv.step(np.zeros((4, 2), np.float32))
    obs, reward, done, infos = venv.step(np.zeros((4, 2), np.float32))
    assert done.all() and reward.dtype == np.float32
    for info in infos:
        assert info["TimeLimit.truncated"] and info["terminal_observation"].shape == obs.shape[1:]
    assert venv.get_attr("num_envs") == [4] * 4 and venv.env_is_wrapped(gym.Wrapper) == [False] * 4
    venv.close()


# ---------------------------------------------------------------------------------------------
# the real env seen through the model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("history,obs_mode", [("episode", "latent"), ("context", "latent"), ("episode", "readout")])
def test_latent_wrapper_on_the_real_env(model, history, obs_mode):
    real = make_task("reach", obs_type="pixels_proprio")
    env = LatentObservation(real, model, history=history, obs_mode=obs_mode)
    imagined = ImaginedEnv(model, obs_mode=obs_mode)
    assert env.observation_space == imagined.observation_space
    obs, info = env.reset(seed=5)
    assert env.observation_space.contains(obs) and "real_obs" in info
    # the reset latent is exactly what the imagined env computes from the same real frame
    first = info["real_obs"]
    ctx = {"frames": first["pixels"][None], "proprio": first["proprio"][None]}
    o_imag, _ = imagined.reset(options={"context": ctx})
    assert np.allclose(obs, o_imag, atol=1e-6)
    frames, proprio = [first["pixels"]], [first["proprio"]]
    for t in range(4):
        obs, reward, terminated, truncated, info = env.step(np.array([2.0, -0.5]))  # clipped, as the env does
        assert env.observation_space.contains(obs) and isinstance(reward, float)
        frames.append(info["real_obs"]["pixels"])
        proprio.append(info["real_obs"]["proprio"])
    assert np.array_equal(env._actions[-1], [1.0, -0.5])
    # the state encodes the padded start and every real frame so far, or only the last context frames
    length = env.context + 4 if history == "episode" else env.context
    actions = np.tile(np.array([1.0, -0.5], np.float32), (4, 1))
    window = pad_window(np.stack(frames), actions, np.stack(proprio), 4, length, model.action_dim)
    with torch.no_grad():
        state = model.encode(*batch_windows([window]))
        want = (model.features(state) if obs_mode == "latent" else model.readout(state))[0].numpy()
    assert np.allclose(obs, want, atol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan, 0.0]))
    # the checkers once: they are slow on a real env behind an encoder
    if history == "episode" and obs_mode == "latent":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sb3_check_env(env, warn=False)
            check_env(env)


# ---------------------------------------------------------------------------------------------
# SB3 in imagination
# ---------------------------------------------------------------------------------------------


def _imagined_return(model, act, episodes: int = 16, seed: int = 123) -> float:
    venv = ImaginedVectorEnv(model, num_envs=episodes, horizon=20, autoreset_mode="Disabled", split="all")
    obs, _ = venv.reset(seed=seed)
    total = np.zeros(episodes)
    for _ in range(20):
        obs, reward, *_ = venv.step(act(obs))
        total += reward
    return float(total.mean())


def test_short_sb3_run_beats_random_in_imagination(model):
    from stable_baselines3 import SAC

    torch.set_num_threads(1)
    venv = make_sb3_vec_env(model, num_envs=8, horizon=20, split="all", start="any")
    venv.seed(0)
    # a fixed small entropy bonus: this untrained model pays ~0.3 per step, which auto-tuning (starting at 1) drowns
    agent = SAC("MlpPolicy", venv, learning_starts=400, batch_size=128, gradient_steps=2, gamma=0.9, ent_coef=0.01,
                policy_kwargs={"net_arch": [64, 64]}, seed=0, device="cpu")
    agent.learn(3000)
    rng = np.random.default_rng(0)
    random_ret = _imagined_return(model, lambda o: rng.uniform(-1, 1, size=(o.shape[0], 2)))
    policy_ret = _imagined_return(model, lambda o: agent.predict(o, deterministic=True)[0])
    spread = abs(random_ret) * 0.1 + 0.1
    assert policy_ret > random_ret + spread, (policy_ret, random_ret)


@pytest.mark.slow
def test_policy_command_writes_policy_json_and_loadable_model(recurrent_run, tmp_path):
    from embodied.cli import main
    from embodied.policies.sb3_zip import load_sb3_zip

    out = tmp_path / "pol"
    assert main(["policy", "train", "--task", "reach", "--model", str(recurrent_run), "--steps", "300",
                 "--eval-episodes", "2", "--videos", "1", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "policy.json").read_text())
    for key in ("real_success_rate", "real_return_mean", "imagined_return_mean", "env_steps_imagined", "wall_s"):
        assert result[key] is not None, key
    assert result["env_steps_imagined"] >= 300 and result["env_steps_real"] == 0
    assert result["video"] and os.path.exists(result["video"])
    agent = load_sb3_zip(out / "policy.zip", "sac")
    assert agent.observation_space.shape == ImaginedEnv(str(recurrent_run), obs_mode="readout").observation_space.shape
    assert result["observations"] == "readout"

    out = tmp_path / "random"
    assert main(["policy", "train", "--task", "reach", "--baseline", "random", "--eval-episodes", "2",
                 "--videos", "0", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "policy.json").read_text())
    assert result["trained_in"] == "nothing" and 0.0 <= result["real_success_rate"] <= 1.0


def test_policy_command_errors_are_one_line(tmp_path, capsys):
    from embodied.cli import main

    assert main(["policy", "train", "--task", "reach", "--out", str(tmp_path / "x"), "--no-progress"]) != 0
    assert "--model" in capsys.readouterr().err


def _policy_config(argv):
    from embodied.cli import build_parser
    from embodied.commands.policy import config_from_args

    return config_from_args(build_parser("policy").parse_args(["policy", "train", *argv]))


def test_policy_config_file_states_the_defaults():
    from pathlib import Path

    from embodied.policies.config import PolicyConfig

    yaml_file = Path(__file__).resolve().parents[1] / "configs" / "policy.yaml"
    assert _policy_config(["--config", str(yaml_file), "--model", "x"]) == PolicyConfig(model="x")


def test_sb3_hyper_parameters_come_from_the_config(model):
    from embodied.policies.agents import make_agent

    venv = make_sb3_vec_env(model, num_envs=4, horizon=2)
    # the defaults: SAC with one update per 2 transitions, a buffer of the whole budget
    cfg = _policy_config(["--model", "x", "--steps", "3000"])
    sac = make_agent("sac", venv, cfg.steps, 0, cfg.sac, cfg.ppo)
    assert (sac.learning_rate, sac.gamma, sac.batch_size, sac.buffer_size, sac.learning_starts, sac.gradient_steps,
            sac.policy_kwargs["net_arch"]) == (3e-4, 0.98, 256, 3000, 300, 2, [256, 256])
    ppo = make_agent("ppo", venv, cfg.steps, 0, cfg.sac, cfg.ppo)
    assert (ppo.n_steps, ppo.batch_size, ppo.n_epochs, ppo.gae_lambda, ppo.ent_coef,
            ppo.policy_kwargs["activation_fn"]) == (512, 256, 10, 0.95, 0.0, torch.nn.Tanh)
    # flags and key=value overrides
    cfg = _policy_config(["--model", "x", "--lr", "1e-3", "--gamma", "0.9", "sac.batch_size=64",
                          "sac.net_arch=[32]", "ppo.activation=relu", "ppo.rollout=64"])
    sac = make_agent("sac", venv, cfg.steps, 0, cfg.sac, cfg.ppo)
    assert (sac.learning_rate, sac.gamma, sac.batch_size, sac.policy_kwargs["net_arch"]) == (1e-3, 0.9, 64, [32])
    ppo = make_agent("ppo", venv, cfg.steps, 0, cfg.sac, cfg.ppo)
    assert (ppo.learning_rate, ppo.n_steps, ppo.policy_kwargs["activation_fn"]) == (1e-3, 16, torch.nn.ReLU)
    venv.close()


def test_policy_config_errors_are_one_line(tmp_path, capsys):
    from embodied.cli import main

    assert main(["policy", "train", "--baseline", "random", "sac.batch=3"]) == 2
    assert "did you mean sac.batch_size" in capsys.readouterr().err
    assert main(["policy", "train", "--model", "x", "obs=pixels"]) == 2
    assert "must be one of auto, latent, readout" in capsys.readouterr().err
