"""SB3 zips load without unpickling (embodied.policies.sb3_zip): the same agent, and no code from the file."""
import base64
import json
import pickle
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from embodied.errors import UserError
from embodied.policies.agents import PPOSettings, make_agent
from embodied.policies.sb3_zip import load_sb3_zip


class LatentEnv(gym.Env):
    """The spaces `embodied policy train` gives an agent: an unbounded latent and the [-1, 1] action box."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (12,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, seed=None, options=None):
        return np.zeros(12, np.float32), {}

    def step(self, action):
        return np.zeros(12, np.float32), 0.0, False, False, {}


class Payload:
    """What a hostile zip could hold: unpickling it touches a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch):
    """Every test here fails if anything is unpickled."""
    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    import stable_baselines3.common.save_util as save_util

    monkeypatch.setattr(save_util.cloudpickle, "loads", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def _saved(tmp_path, algo, **ppo) -> tuple[Path, object]:
    agent = make_agent(algo, DummyVecEnv([LatentEnv]), 1000, seed=0, ppo=PPOSettings(rollout=64, **ppo))
    agent.learn(200)  # a trained agent also saves where training stopped (its last observations, episode logs)
    path = tmp_path / f"{algo}.zip"
    agent.save(path)
    return path, agent


def _rewrite(path: Path, out: Path, edit) -> Path:
    """A copy of the zip with its ``data`` JSON edited by ``edit(data)``."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            blob = src.read(item)
            if item.filename == "data":
                data = json.loads(blob)
                edit(data)
                blob = json.dumps(data).encode()
            dst.writestr(item, blob)
    return out


def _payload(tmp_path: Path) -> tuple[str, Path]:
    """A pickled payload as SB3 stores one (base64), and the file it creates if it is ever unpickled."""
    marker = tmp_path / "ran"
    return base64.b64encode(pickle.dumps(Payload(marker))).decode(), marker


def _with_gift(path: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the zip with one more pickled entry (a payload) that no SB3 agent has."""
    blob, marker = _payload(tmp_path)

    def add_entry(data):
        data["gift"] = {":type:": "<class 'object'>", ":serialized:": blob}

    return _rewrite(path, tmp_path / "gift.zip", add_entry), marker


@pytest.mark.parametrize("algo,ppo", [("sac", {}), ("ppo", {}), ("ppo", {"activation": "relu"})])
def test_a_saved_agent_acts_the_same_after_loading(tmp_path, algo, ppo):
    path, agent = _saved(tmp_path, algo, **ppo)
    loaded = load_sb3_zip(path, algo)
    obs = np.random.default_rng(0).normal(size=(16, 12)).astype(np.float32)
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])
    assert loaded.observation_space.shape == (12,) and loaded.action_space.low.tolist() == [-1.0, -1.0]
    if algo == "ppo":
        assert type(loaded.policy.mlp_extractor.policy_net[1]) is type(agent.policy.mlp_extractor.policy_net[1])
    for a, b in zip(loaded.policy.state_dict().values(), agent.policy.state_dict().values()):
        assert torch.equal(a, b)


def test_a_pickled_payload_is_never_run(tmp_path):
    """A zip whose observation space is a payload loads from the recorded shape, and the payload never runs;
    a pickled entry embodied does not know is refused in one line, still without running it."""
    path, _ = _saved(tmp_path, "sac")
    blob, marker = _payload(tmp_path)

    def swap_space(data):
        data["observation_space"][":serialized:"] = blob

    loaded = load_sb3_zip(_rewrite(path, tmp_path / "space.zip", swap_space))
    assert loaded.observation_space.shape == (12,) and not marker.exists()
    gift, _ = _with_gift(path, tmp_path)
    with pytest.raises(UserError, match="gift is a pickled .* does not unpickle"):
        load_sb3_zip(gift)
    assert not marker.exists()


def test_what_cannot_be_rebuilt_is_refused_in_one_line(tmp_path):
    path, _ = _saved(tmp_path, "sac")

    def custom_policy(data):
        data["policy_class"]["__init__"] = "<function MyPolicy.__init__ at 0x0>"

    def wide_actions(data):
        data["action_space"]["high"] = "[2. 2.]"

    with pytest.raises(UserError, match="not an SB3 SAC or PPO MlpPolicy zip"):
        load_sb3_zip(_rewrite(path, tmp_path / "custom.zip", custom_policy))
    with pytest.raises(UserError, match=r"not the \[-1, 1\] box"):
        load_sb3_zip(_rewrite(path, tmp_path / "wide.zip", wide_actions))
    with pytest.raises(UserError, match="not an SB3 PPO MlpPolicy zip"):
        load_sb3_zip(path, "ppo")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not an SB3 zip"):
        load_sb3_zip(tmp_path / "junk.zip")
    with zipfile.ZipFile(tmp_path / "list.zip", "w") as z:
        z.writestr("data", "[1, 2]")
    with pytest.raises(UserError, match="not an SB3 zip"):
        load_sb3_zip(tmp_path / "list.zip")


def test_planning_with_such_a_zip_as_prior_stops_in_one_line(tmp_path, capsys):
    """`embodied plan --prior` with a zip holding an unknown pickled entry: exit 2, one line naming the zip, the
    payload never run."""
    from embodied.cli import main

    gift, marker = _with_gift(_saved(tmp_path, "sac")[0], tmp_path)
    code = main(["plan", "--task", "reach", "--model", "reach", "--prior", str(gift), "--episodes", "1",
                 "--out", str(tmp_path / "plan"), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert str(gift) in lines[0] and "does not unpickle" in lines[0] and not marker.exists()
