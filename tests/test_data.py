"""Episode datasets: collect -> load round trip, resume without duplicates, bad input."""
import json

import numpy as np
import pytest

from embodied.cli import main as cli
from embodied.collect import collect, record_episode
from embodied.data import Dataset, WindowSampler, episode_files, read_episode
from embodied.errors import UserError
from embodied.envs import make_task


@pytest.fixture(scope="module")
def push_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("push")
    collect("push", 4, out, policy="mixed", workers=1, progress=False)
    return out


def test_collect_round_trip_matches_a_fresh_replay(push_data):
    ds = Dataset(push_data, task="push")
    assert len(ds.episodes) == 4 and ds.heldout and ds.train
    ep = ds.episodes[0]
    env = make_task("push", obs_type="pixels_proprio")
    arrays, meta = record_episode(env, ep.seed, "mixed")
    assert meta["task"] == "push"
    np.testing.assert_array_equal(arrays["observation.image"], ep.frames.numpy())
    np.testing.assert_array_equal(arrays["action"], ep.actions.numpy())
    np.testing.assert_array_equal(arrays["sim_state"], ep.sim_states)
    assert ep.frames.shape == (len(ep) + 1, 64, 64, 3) and ep.frames.dtype.is_floating_point is False
    # stored states restore the env exactly: same frame from the same state
    env.set_state(ep.sim_states[10])
    np.testing.assert_array_equal(env.render_frame(), ep.frames[10].numpy())


def test_manifest_describes_the_dataset(push_data):
    m = json.loads((push_data / "manifest.json").read_text())
    assert m["task"] == "push" and m["episodes_total"] == 4 and m["action_dim"] == 2 and m["proprio_dim"] == 4
    assert sum(m["policies"].values()) == 4
    assert [o["name"] for o in m["objects"]] == ["pusher", "block", "goal"]


def test_windows_have_consistent_shapes_and_come_from_episodes(push_data):
    ds = Dataset(push_data)
    batch = WindowSampler(ds.train, 8).sample(5, np.random.default_rng(0))
    assert batch["frames"].shape == (5, 8, 64, 64, 3)
    assert batch["proprio"].shape == (5, 8, 4) and batch["actions"].shape == (5, 7, 2) and batch["rewards"].shape == (5, 7)
    # each window is a contiguous slice of some training episode
    f0 = batch["frames"][0]
    assert any(any(bool((ep.frames[t:t + 8] == f0).all()) for t in range(len(ep) - 6)) for ep in ds.train)
    # object tracks come along in the manifest's order, as planar positions of the same frames
    sampler = WindowSampler(ds.train, 8)
    assert sampler.object_names == ["pusher", "block", "goal"]
    batch = sampler.sample(5, np.random.default_rng(0))
    assert batch["objects"].shape == (5, 8, 3, 2)
    ep = next(e for e in ds.train for t in range(len(e) - 6) if bool((e.frames[t:t + 8] == batch["frames"][0]).all()))
    t = next(t for t in range(len(ep) - 6) if bool((ep.frames[t:t + 8] == batch["frames"][0]).all()))
    np.testing.assert_allclose(batch["objects"][0, :, 1], ep.objects["block"][t:t + 8, :2], rtol=1e-6)


def test_distributed_shards_are_disjoint(push_data):
    ds = Dataset(push_data)
    a, b = WindowSampler(ds.episodes, 8, 0, 2), WindowSampler(ds.episodes, 8, 1, 2)
    assert {e.seed for e in a.episodes}.isdisjoint({e.seed for e in b.episodes})


def test_rerun_adds_new_seeds_and_keeps_old_files(tmp_path):
    collect("reach", 2, tmp_path, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in episode_files(tmp_path)}
    collect("reach", 2, tmp_path, workers=1, progress=False)
    after = episode_files(tmp_path)
    assert len(after) == 4
    assert all(before[name] == p.read_bytes() for p in after if (name := p.name) in before)
    seeds = [int(read_episode(p)[1]["seed"]) for p in after]
    assert len(set(seeds)) == 4


def test_collect_into_another_tasks_dataset_is_refused(push_data):
    with pytest.raises(UserError, match="task 'push', not 'reach'"):
        collect("reach", 1, push_data, workers=1, progress=False)


def test_loading_for_the_wrong_task_names_both(push_data):
    with pytest.raises(UserError, match="for task 'push', not 'occlusion'"):
        Dataset(push_data, task="occlusion")


def test_empty_folder_gives_one_line_error(tmp_path):
    with pytest.raises(UserError, match="no manifest.json"):
        Dataset(tmp_path)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert cli(["collect", "--task", "push", "--episodes", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--episodes must be at least 1" in err


def test_truncated_and_corrupt_files_are_named(tmp_path):
    collect("push", 2, tmp_path, workers=1, progress=False)
    first, second = episode_files(tmp_path)
    first.write_bytes(first.read_bytes()[:1000])
    with pytest.raises(UserError, match=f"{first.name}: truncated or corrupt"):
        Dataset(tmp_path)
    first.unlink()
    raw = bytearray(second.read_bytes())
    raw[-100] ^= 0xFF  # flip bits in the array data, header intact
    second.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=f"{second.name}: checksum mismatch"):
        read_episode(second)


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task 'pushh'"):
        make_task("pushh")


def test_gymnasium_mujoco_env_can_be_collected(tmp_path):
    collect("Reacher-v5", 1, tmp_path, policy="random", workers=1, progress=False)
    ds = Dataset(tmp_path, task="Reacher-v5")
    assert ds.episodes[0].frames.shape[1:] == (64, 64, 3)
