"""Episode datasets: collect -> load round trip, resume without duplicates, bad input."""
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from embodied.cli import main as cli
from embodied.collect import collect, record_episode
from embodied.data import episode_files, episode_path, read_episode, write_episode
from embodied.dataset import Dataset, WindowSampler
from embodied.envs import make_task
from embodied.errors import UserError


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
    assert (batch["proprio"].shape == (5, 8, 4) and batch["actions"].shape == (5, 7, 2)
            and batch["rewards"].shape == (5, 7))
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


# --- validation: the manifest's structure, every episode against the manifest, one line naming file and field ---

def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def dataset(push_data, tmp_path):
    """A private copy of the push dataset to break."""
    root = tmp_path / "push"
    shutil.copytree(push_data, root)
    return root


def _refused(root, match, **kwargs):
    """Loading ``root`` fails with one line matching ``match``, and nothing on disk changed."""
    before = _snapshot(root)
    with pytest.raises(UserError, match=match) as err:
        Dataset(root, **kwargs)
    assert "\n" not in str(err.value)
    assert _snapshot(root) == before
    return str(err.value)


def _rewrite(path, change):
    """Rewrite one episode through ``change(arrays, meta)`` with a valid checksum: only the spec check can catch it."""
    arrays, meta = read_episode(path)
    meta = {k: v for k, v in meta.items() if k not in ("crc32", "format")}
    change(arrays, meta)
    write_episode(path, arrays, meta)


@pytest.mark.parametrize("text, field", [
    ("[1, 2, 3]", "holds a JSON list, not an object"),
    ('{"format": "embodied-episodes/1", "task": "push"}', "no 'image_size' field"),
    ("{bad json", "corrupt manifest"),
])
def test_a_malformed_manifest_is_refused_with_the_fix(dataset, text, field):
    (dataset / "manifest.json").write_text(text)
    msg = _refused(dataset, re.escape(field))
    assert "manifest.json: " in msg and f"embodied collect --task push --size 64 --episodes 1 --out {dataset}" in msg


@pytest.mark.parametrize("key, value, field", [
    ("episodes", None, "no 'episodes' field"),
    ("episodes", [{"file": "episodes/ep_000000.safetensors"}], "episodes[0] is"),
    ("action_dim", "two", "'action_dim' is two, not an integer"),
    ("image_size", [64, 64], "'image_size' is [64, 64], not [height, width, 3]"),
    ("objects", [1], "'objects' is not a list"),
])
def test_manifest_fields_are_checked(dataset, key, value, field):
    m = json.loads((dataset / "manifest.json").read_text())
    if value is None:
        del m[key]
    else:
        m[key] = value
    (dataset / "manifest.json").write_text(json.dumps(m))
    _refused(dataset, re.escape(f"manifest.json: {field}"))


def _crop(a, m):
    a["observation.image"] = np.ascontiguousarray(a["observation.image"][:, :32, :32])


def _wide(a, m):
    a["action"] = np.concatenate([a["action"], a["action"][:, :1]], 1)


def _no_action(a, m):
    del a["action"]


def _extra_frames(a, m):
    a["observation.image"] = np.concatenate([a["observation.image"], a["observation.image"][1:]])


def _fewer_actions(a, m):
    for k in ("action", "reward", "terminated"):
        a[k] = a[k][:-1]
    m["length"] = len(a["action"])


def _float_images(a, m):
    a["observation.image"] = a["observation.image"].astype(np.float32) / 255


def _nan_action(a, m):
    a["action"][5, 0] = np.nan


def _big_action(a, m):
    a["action"][3, 1] = 2.0


def _wrong_length(a, m):
    m["length"] = 7


def _no_track(a, m):
    del a["objects.block"]


def _other_task(a, m):
    m["task"] = "reach"


def _proprio_width(a, m):
    a["observation.state"] = a["observation.state"][:, :3].copy()


def _inf_reward(a, m):
    a["reward"][2] = np.inf


@pytest.mark.parametrize("change, field", [
    (_crop, "observation.image has shape ({t1}, 32, 32, 3), the manifest says image_size [64, 64, 3]"),
    (_wide, "action has 3 columns, the manifest says action_dim 2"),
    (_proprio_width, "observation.state has 3 columns, the manifest says proprio_dim 4"),
    (_no_action, "no 'action' array"),
    (_extra_frames, "observation.image has {t2} rows for {t} actions, expected {t1}, one per frame"),
    (_fewer_actions, "observation.image has {t1} rows for {t0} actions, expected {t}, one per frame"),
    (_float_images, "observation.image is float32, the dataset format stores uint8"),
    (_nan_action, "action is NaN or infinite at step 5"),
    (_inf_reward, "reward is NaN or infinite at step 2"),
    (_big_action, "action reaches 2, outside [-1, 1]"),
    (_wrong_length, "header length '7' disagrees with its {t} actions"),
    (_no_track, "object tracks ['goal', 'pusher'] differ from the manifest's objects ['block', 'goal', 'pusher']"),
    (_other_task, "episode is for task 'reach', the dataset is 'push'"),
])
def test_an_episode_that_disagrees_with_the_manifest_is_named(dataset, change, field):
    path = episode_files(dataset)[1]
    steps = int(read_episode(path)[1]["length"])
    _rewrite(path, change)
    field = field.format(t=steps, t0=steps - 1, t1=steps + 1, t2=2 * steps + 1)
    msg = _refused(dataset, re.escape(f"{path}: {field}"))
    assert msg.endswith("re-collect this episode or remove it")


def test_a_spec_edited_in_the_manifest_is_caught_at_the_first_episode(dataset):
    m = json.loads((dataset / "manifest.json").read_text())
    (dataset / "manifest.json").write_text(json.dumps(m | {"action_dim": 3}))
    _refused(dataset, re.escape(f"{episode_files(dataset)[0]}: action has 2 columns, the manifest says action_dim 3"))


def test_load_options_are_range_checked(push_data):
    with pytest.raises(ValueError, match="max_episodes=-1 is negative"):
        Dataset(push_data, max_episodes=-1)
    with pytest.raises(ValueError, match=r"heldout_fraction=1 is not in \[0, 1\)"):
        Dataset(push_data, heldout_fraction=1)
    with pytest.raises(ValueError, match="window length 1 is below 2 frames"):
        WindowSampler(Dataset(push_data).train, 1)


# --- a manifest that disagrees with its folder (a killed collect) is rebuilt from the episode headers ---

def test_episodes_the_manifest_does_not_list_are_reconciled(push_data, dataset, capsys):
    m = json.loads((dataset / "manifest.json").read_text())
    m["episodes"] = m["episodes"][:2]  # what a collect killed before its manifest rewrite leaves
    (dataset / "manifest.json").write_text(json.dumps(m))
    ds = Dataset(dataset)
    assert len(ds.episodes) == 4
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "listed 2 episodes, the folder holds 4 (2 not listed, 0 missing)" in err
    saved = json.loads((dataset / "manifest.json").read_text())
    assert saved["episodes_total"] == 4 and saved == json.loads((push_data / "manifest.json").read_text())
    Dataset(dataset)  # now they agree: nothing to say
    assert capsys.readouterr().err == ""


def test_a_removed_episode_is_dropped_from_the_manifest(dataset, capsys):
    episode_files(dataset)[0].unlink()
    assert len(Dataset(dataset).episodes) == 3
    assert "(0 not listed, 1 missing); rebuilt it" in capsys.readouterr().err
    assert json.loads((dataset / "manifest.json").read_text())["episodes_total"] == 3


def test_an_unlisted_broken_episode_is_refused_before_the_manifest_is_touched(dataset):
    extra = episode_path(dataset, 999)
    shutil.copy(episode_files(dataset)[0], extra)  # header seed 0 in a file named 999
    _refused(dataset, re.escape(f"{extra}: header seed 0 does not match the file name"))


def test_collect_of_another_frame_size_is_refused_before_any_work(dataset):
    before = _snapshot(dataset)
    with pytest.raises(UserError, match="holds 64x64 frames, not 32x32; pass --size 64"):
        collect("push", 1, dataset, workers=1, size=32, progress=False)
    assert _snapshot(dataset) == before


# --- the collect command's inputs ---

@pytest.mark.parametrize("flags, message", [
    (["--episodes", "0"], "--episodes must be at least 1, not 0"),
    (["--size", "0"], "--size must be 4 x a power of two from 16 to 512 (e.g. 64), not 0"),
    (["--size", "48"], "--size must be 4 x a power of two from 16 to 512 (e.g. 64), not 48"),
    (["--size", "100000"], "--size must be 4 x a power of two from 16 to 512 (e.g. 64), not 100000"),
    (["--seed", "-5"], "--seed must be 0 or more, not -5"),
    (["--workers", "0"], "--workers must be from 1 to"),
    (["--workers", "100000"], "--workers must be from 1 to"),
])
def test_collect_numbers_are_range_checked(tmp_path, capsys, flags, message):
    out = tmp_path / "data"
    assert cli(["collect", "--task", "push", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and not out.exists()


def test_collect_out_must_be_a_writable_folder(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    assert cli(["collect", "--episodes", "1", "--out", str(file)]) == 2
    assert f"--out {file} is a file, not a folder" in capsys.readouterr().err and file.read_text() == "keep me"
    assert cli(["collect", "--episodes", "1", "--out", str(file / "data")]) == 2
    assert f"is inside {file}, which is a file" in capsys.readouterr().err
    assert cli(["collect", "--episodes", "1", "--out", "/proc/embodied-data"]) == 2  # not even root writes there
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot write in /proc" in err


def test_a_full_disk_while_collecting_is_one_line_naming_the_episode(tmp_path, monkeypatch):
    import embodied.collect as collecting

    def full(path, arrays, meta):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(collecting, "record_episode", lambda env, seed, policy: ({}, {"length": 1}))
    monkeypatch.setattr(collecting, "write_episode", full)
    monkeypatch.setitem(collecting._WORKER, "env", None)
    with pytest.raises(UserError, match=re.escape(f"{episode_path(tmp_path, 3)}: No space left on device; free")):
        collecting._collect_one(str(tmp_path), 3, "random")


# --- a killed or stopped collect: no orphaned worker, and a re-run leaves a manifest that matches the folder ---

def _start_collect(out, episodes):
    cmd = [sys.executable, "-m", "embodied.cli", "collect", "--task", "reach", "--episodes", str(episodes),
           "--workers", "2", "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})


def _workers_once_an_episode_is_written(proc, out, have=0):
    deadline = time.monotonic() + 240
    while len(episode_files(out)) <= have:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.2)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) >= 2
    return workers


def _manifest_matches_folder(out):
    m = json.loads((out / "manifest.json").read_text())
    assert [r["file"] for r in m["episodes"]] == [f"episodes/{p.name}" for p in episode_files(out)]
    return m


@pytest.mark.slow
def test_stopped_and_killed_collects_leave_no_workers_and_a_rerun_completes(tmp_path):
    out = tmp_path / "data"
    # SIGTERM: queued jobs are dropped, workers stopped, the manifest lists the finished episodes
    proc = _start_collect(out, 200)
    workers = _workers_once_an_episode_is_written(proc, out)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130 and "interrupted" in proc.stderr.read()
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive
    first = len(_manifest_matches_folder(out)["episodes"])
    # SIGKILL: no chance to clean up; the workers die with their parent all the same
    proc = _start_collect(out, 200)
    workers = _workers_once_an_episode_is_written(proc, out, have=first)
    proc.kill()
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, f"orphaned workers: {[p.pid for p in alive]}"
    # a re-run into the same folder continues with new seeds and rewrites the manifest to match the folder
    held = len(episode_files(out))
    assert subprocess.run([sys.executable, "-m", "embodied.cli", "collect", "--task", "reach", "--episodes", "2",
                           "--workers", "2", "--out", str(out)], check=False, capture_output=True,
                          env=os.environ | {"OMP_NUM_THREADS": "1"}).returncode == 0
    m = _manifest_matches_folder(out)
    assert m["episodes_total"] == held + 2 and len(Dataset(out).episodes) == held + 2


def test_the_suggested_fix_rebuilds_a_broken_manifest(dataset):
    (dataset / "manifest.json").write_text("[1, 2, 3]")
    with pytest.raises(UserError) as err:
        Dataset(dataset)
    fix = re.search(r"`embodied (collect .*)`", str(err.value)).group(1).split()
    assert cli(fix) == 0
    assert len(Dataset(dataset).episodes) == 5
