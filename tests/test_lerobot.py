"""`embodied import` / `embodied export`: LeRobot datasets (format v2.1) to and from ours.

The fixtures in tests/data/lerobot_small were written by the real `lerobot` library (0.3.3, LeRobotDataset
v2.1; see make_fixture.py there): the same two episodes (6 and 5 frames of 16x16) once with the frames as
PNG in the parquet files and once as AV1 videos. ``fixture_episodes`` rebuilds what was written.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embodied.cli import main
from embodied.collect import collect
from embodied.data import episode_files, read_episode
from embodied.dataset import Dataset

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/data/lerobot_small"
KEYS = ("observation.image", "observation.state", "action", "reward", "terminated")
TRAIN = ["--config", str(ROOT / "configs/reach_recurrent.yaml"), "--config", str(ROOT / "configs/debug.yaml"),
         "model.deter=32", "model.stoch=8", "train.threads=1", "train.batch=2", "train.seq_len=4",
         "train.eval_windows=2", "train.videos=0", "train.steps=3", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def push_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("push")
    collect("push", 3, out, policy="mixed", workers=1, progress=False)
    return out


def fixture_episodes() -> list[dict]:
    """The episodes make_fixture.py gave lerobot, as our episode arrays (n frames, n - 1 steps)."""
    rng = np.random.default_rng(0)
    episodes = []
    for ep, n in enumerate([6, 5]):
        frames, states, actions, rewards = [], [], [], []
        for t in range(n):
            img = np.zeros((16, 16, 3), np.uint8)
            img[..., 0] = 16 * t + 40 * ep
            img[t:t + 4, 2 * t:2 * t + 4] = (0, 0, 255)
            img[8:12, 8:12, 1] = rng.integers(0, 256, (4, 4), dtype=np.uint8)
            frames.append(img)
            states.append(np.array([0.1 * t, -0.05 * t + ep, 0.5], np.float32))
            actions.append(rng.uniform(-1, 1, 2).astype(np.float32))
            rewards.append(np.float32(-0.1 * (n - t)))
        episodes.append({"observation.image": np.stack(frames), "observation.state": np.stack(states),
                         "action": np.stack(actions)[:-1], "reward": np.array(rewards[:-1], np.float32),
                         "terminated": np.zeros(n - 1, np.uint8)})
    return episodes


def cli(*args) -> int:
    return main([str(a) for a in args])


def copy_fixture(tmp_path, kind="parquet_images") -> Path:
    dst = tmp_path / "lerobot_copy"
    shutil.copytree(FIXTURE / kind, dst)
    return dst


def edit_info(root: Path, change) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


def rewrite_column(file: Path, key: str, values) -> None:
    table = pq.read_table(file)
    column = table.column(key)
    new = pa.array(values.tolist(), type=column.type) if isinstance(values, np.ndarray) else values
    pq.write_table(table.set_column(table.schema.get_field_index(key), table.schema.field(key), new), file)


# ---------------------------------------------------------------------------------------------- round trip

def test_round_trip_through_lerobot_is_exact(push_data, tmp_path, capsys):
    lr, back = tmp_path / "lerobot", tmp_path / "back"
    assert cli("export", "--data", push_data, "--out", lr, "--fps", 20, "--no-progress") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episodes"] == 3 and summary["format"] == "lerobot v2.1"

    info = json.loads((lr / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1" and info["fps"] == 20 and info["total_episodes"] == 3
    assert info["features"]["observation.image"] == {"dtype": "image", "shape": [64, 64, 3],
                                                     "names": ["height", "width", "channels"]}
    assert [json.loads(line)["episode_index"] for line in (lr / "meta/episodes.jsonl").read_text().splitlines()] \
        == [0, 1, 2]
    assert len((lr / "meta/episodes_stats.jsonl").read_text().splitlines()) == 3
    table = pq.read_table(lr / "data/chunk-000/episode_000000.parquet")
    ours, _ = read_episode(episode_files(push_data)[0])
    T = len(ours["action"])
    assert table.num_rows == T + 1
    assert info["total_frames"] == sum(len(read_episode(f)[0]["observation.image"]) for f in episode_files(push_data))
    assert set(table.column_names) == set(info["features"])
    done, reward = table.column("next.done").to_pylist(), table.column("next.reward").to_pylist()
    assert done[-1] is True and reward[-1] == 0.0  # the last frame: no step is taken from it
    assert np.array_equal(np.asarray(table.column("action").to_pylist()[-1]), ours["action"][-1])  # repeated
    assert np.allclose(table.column("timestamp").to_pylist(), np.arange(T + 1) / 20)
    assert b"huggingface" in table.schema.metadata  # what lerobot's loader reads the feature types from
    assert not list(tmp_path.glob(".*partial*"))

    assert cli("import", "--lerobot", lr, "--out", back, "--no-progress") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == "push" and summary["episodes"] == 3 and not summary["actions_normalized"]
    for a, b in zip(episode_files(push_data), episode_files(back), strict=True):
        assert a.name == b.name  # seeds kept, so the train/held-out split is kept too
        x, mx = read_episode(a)
        y, my = read_episode(b)
        for key in KEYS:
            assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), (a.name, key)
        assert mx["success"] == my["success"]
        assert y["sim_state"].shape == (len(y["observation.image"]), 0)  # no simulator behind LeRobot data
        assert not [k for k in y if k.startswith("objects.")]
    m, n = (json.loads((d / "manifest.json").read_text()) for d in (push_data, back))
    assert {k: n[k] for k in ("task", "image_size", "action_dim", "proprio_dim")} == \
        {k: m[k] for k in ("task", "image_size", "action_dim", "proprio_dim")}
    assert n["objects"] == [] and n["fps"] == 20 and n["success_rate"] == m["success_rate"]
    ds = Dataset(back)
    assert len(ds.episodes) == 3 and ds.task == "push"


# ---------------------------------------------------------------------------------------------- real lerobot data

def test_import_of_a_dataset_written_by_lerobot(tmp_path, capsys):
    out = tmp_path / "toy"
    assert cli("import", "--lerobot", FIXTURE / "parquet_images", "--out", out, "--no-progress") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == "toy_arm" and summary["images"] == "parquet" and summary["steps"] == 9
    expected = fixture_episodes()
    files = episode_files(out)
    assert [f.name for f in files] == ["ep_000000.safetensors", "ep_000001.safetensors"]
    for file, want in zip(files, expected, strict=True):
        got, meta = read_episode(file)
        for key in KEYS:
            assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key
        assert meta["task"] == "toy_arm" and meta["policy"] == "lerobot"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_size"] == [16, 16, 3] and manifest["action_dim"] == 2 and manifest["proprio_dim"] == 3
    assert manifest["fps"] == 10 and manifest["source"]["format"] == "lerobot v2.1"


def test_import_of_lerobot_videos(tmp_path):
    """AV1 videos (lerobot's default) decode with imageio-ffmpeg's ffmpeg; the codec is lossy, the rest exact."""
    out = tmp_path / "toy"
    assert cli("import", "--lerobot", FIXTURE / "av1_video", "--out", out, "--task", "toy", "--no-progress") == 0
    for file, want in zip(episode_files(out), fixture_episodes(), strict=True):
        got, meta = read_episode(file)
        assert meta["task"] == "toy" and got["observation.image"].shape == want["observation.image"].shape
        error = np.abs(got["observation.image"].astype(int) - want["observation.image"]).mean()
        assert error < 12, error
        for key in KEYS[1:]:
            assert np.array_equal(got[key], want[key]), key


def test_actions_outside_the_box_are_scaled_and_exported_back(tmp_path):
    src = copy_fixture(tmp_path)
    raw = {}
    for ep in (0, 1):
        file = src / f"data/chunk-000/episode_{ep:06d}.parquet"
        a = np.asarray(pq.read_table(file).column("action").to_pylist(), np.float32)
        raw[ep] = (a * np.float32(30) + np.float32(100)).astype(np.float32)  # e.g. joint targets in degrees
        rewrite_column(file, "action", raw[ep])
    out, again = tmp_path / "ours", tmp_path / "again"
    assert cli("import", "--lerobot", src, "--out", out, "--no-progress") == 0
    norm = json.loads((out / "manifest.json").read_text())["action_normalization"]
    every = np.concatenate([read_episode(f)[0]["action"] for f in episode_files(out)])
    assert np.abs(every).max() <= 1.0 and np.allclose(every.min(0), -1) and np.allclose(every.max(0), 1)
    assert len(norm["low"]) == 2
    assert cli("export", "--data", out, "--out", again, "--no-progress") == 0
    for ep in (0, 1):
        back = np.asarray(pq.read_table(again / f"data/chunk-000/episode_{ep:06d}.parquet")
                          .column("action").to_pylist(), np.float32)
        assert np.allclose(back[:-1], raw[ep][:-1], atol=1e-4)  # the last row's action is not kept by an import


def test_an_imported_dataset_trains(tmp_path):
    """No simulator state, no object tracks, a task of its own: `embodied train` takes it as it is."""
    data, run = tmp_path / "toy", tmp_path / "run"
    assert cli("import", "--lerobot", FIXTURE / "parquet_images", "--out", data, "--no-progress") == 0
    assert cli("train", *TRAIN, f"data={data}", f"out={run}", "task=toy_arm") == 0
    config = json.loads((run / "config.json").read_text())
    assert config["step"] == 3 and config["task"] == "toy_arm"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["final"] and np.isfinite(metrics["train.loss"])


# ---------------------------------------------------------------------------------------------- bad input

def _no_info(src):
    (src / "meta/info.json").unlink()


def _drop_action(src):
    edit_info(src, lambda i: i["features"].pop("action"))


def _size_12(src):
    edit_info(src, lambda i: i["features"]["observation.image"].update(shape=[12, 12, 3]))


def _not_square(src):
    edit_info(src, lambda i: i["features"]["observation.image"].update(shape=[16, 32, 3]))


def _v3(src):
    edit_info(src, lambda i: i.update(codebase_version="v3.0"))


def _state_width(src):
    edit_info(src, lambda i: i["features"]["observation.state"].update(shape=[4]))


def _no_data_file(src):
    (src / "data/chunk-000/episode_000001.parquet").unlink()


def _nan_state(src):
    file = src / "data/chunk-000/episode_000000.parquet"
    state = np.asarray(pq.read_table(file).column("observation.state").to_pylist(), np.float32)
    state[2, 1] = np.nan
    rewrite_column(file, "observation.state", state)


def _state_2d(src):
    edit_info(src, lambda i: i["features"]["observation.state"].update(shape=[3, 1]))


@pytest.mark.parametrize("damage, extra, names", [
    (_no_info, [], ["meta/info.json", "not a LeRobot dataset"]),
    (_drop_action, [], ["'action'", "feature"]),
    (None, ["--image-key", "observation.images.top"], ["observation.images.top", "--image-key"]),
    (_size_12, [], ["12x12", "4 x a power of two"]),
    (_not_square, [], ["16x32", "square"]),
    (_v3, [], ["v3.0", "v2.1"]),
    (_state_width, [], ["observation.state", "[4]"]),
    (_state_2d, [], ["observation.state", "vector"]),
    (_no_data_file, [], ["episode_000001.parquet", "missing"]),
    (_nan_state, [], ["observation.state", "NaN", "frame 2"]),
    (None, ["--task", "my robot!"], ["--task", "my robot!"]),
], ids=["no-info", "no-action", "image-key", "size-12", "not-square", "v3", "state-width", "state-2d",
        "no-data-file", "nan-state", "bad-task"])
def test_bad_lerobot_input_is_one_line(tmp_path, capsys, damage, extra, names):
    src = copy_fixture(tmp_path)
    if damage:
        damage(src)
    out = tmp_path / "out"
    assert cli("import", "--lerobot", src, "--out", out, "--no-progress", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))  # nothing half written


def test_bad_export_input_is_one_line(push_data, tmp_path, capsys):
    busy = tmp_path / "busy"
    (busy / "meta").mkdir(parents=True)
    cases = [(["--data", tmp_path / "nothing", "--out", tmp_path / "a"], ["nothing", "collect"]),
             (["--data", push_data, "--out", tmp_path / "b", "--fps", "0"], ["--fps"]),
             (["--data", push_data, "--out", busy], ["not empty", "new folder"])]
    for args, names in cases:
        assert cli("export", *args, "--no-progress") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert all(n in err for n in names), (names, err)
    assert [p.name for p in busy.iterdir()] == ["meta"] and not (tmp_path / "b").exists()
