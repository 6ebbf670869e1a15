"""Training infrastructure: configs, checkpoints, `embodied train`, resume after SIGKILL, torchrun DDP."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from embodied import checkpoint
from embodied.collect import collect
from embodied.config import load_config
from embodied.dataset import Dataset, WindowSampler
from embodied.errors import UserError
from embodied.evaluate import evaluate, heldout_windows
from embodied.models import MODELS, build_model
from embodied.models.learned import config_from_dict
from embodied.train import dataset_spec, train

ROOT = Path(__file__).resolve().parents[1]
BASE = [str(ROOT / "configs/reach_recurrent.yaml"), str(ROOT / "configs/debug.yaml")]
# a tiny recurrent model: a training step takes tens of milliseconds on one core
TINY = ["model.deter=32", "model.stoch=8", "train.threads=1", "train.batch=2", "train.seq_len=6",
        "train.eval_windows=2", "train.videos=1"]
ENV = {**os.environ, "MUJOCO_GL": "egl", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reach_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("reach")
    collect("reach", 5, out, policy="mixed", workers=1, progress=False)
    return out


def config(data, out, *extra):
    return load_config(BASE, [f"data={data}", f"out={out}", *TINY, *extra])


def embodied(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "embodied.cli", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def tiny_model(data, seed=0):
    cfg = config(data, "unused")
    torch.manual_seed(seed)
    return build_model(cfg.model, dataset_spec(Dataset(data).manifest))


# ---------------------------------------------------------------------------------------------- config

def test_config_layers_files_and_typed_overrides(tmp_path):
    cfg = load_config(BASE, ["data=/d", "out=/o", "train.lr=1e-3", "train.eval_horizons=[1, 4]",
                             "model.deter=48", "data.max_episodes=3"])
    assert cfg.task == "reach" and cfg.data.path == "/d" and cfg.out == "/o"
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)   # "1e-3" is a string to YAML 1.1
    assert cfg.train.steps == 6 and cfg.train.eval_horizons == [1, 4]  # debug.yaml layered on top
    assert cfg.model == {"arch": "recurrent", "object_weight": 0.0, "reward_weight": 10.0, "hidden": 32, "deter": 48}
    assert cfg.data.max_episodes == 3 and cfg.data.heldout_fraction == 0.1
    for task in ("reach", "push", "occlusion"):
        for arch in ("recurrent", "transformer", "slots"):
            c = load_config([ROOT / f"configs/{task}_{arch}.yaml", ROOT / "configs/debug.yaml"])
            assert c.task == task and c.model["arch"] == arch and c.out == f"runs/{task}_{arch}"
            assert c.train.steps == 6 and c.model["hidden"] == 32
            config_from_dict(MODELS[arch][1], c.model)  # debug.yaml's model keys fit every architecture


@pytest.mark.parametrize("overrides, expected", [
    (["train.stpes=3"], "unknown config key 'train.stpes'.*did you mean train.steps"),
    (["optimiser=adam"], "unknown config key 'optimiser'"),
    (["train.batch=many"], "train.batch = 'many' .* must be an integer"),
    (["train.lr=fast"], "train.lr = 'fast' .* must be a number"),
    (["train.eval_horizons=8"], "train.eval_horizons = 8 .* must be a list of integers"),
    (["train.steps"], "override 'train.steps' is not key=value"),
    (["train.steps=0"], "train.steps = 0 .* must be at least 1"),
    (["train=5"], "train in .* must be a mapping"),
])
def test_bad_config_is_a_one_line_error(overrides, expected):
    with pytest.raises(UserError, match=expected) as err:
        load_config(BASE, overrides)
    assert "\n" not in str(err.value)


def test_missing_key_and_cli_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: reach\ndata: data/reach\nout: runs/x\nmodel: {arch: recurrent}\n"
                   "train: {steps: 3, batch: 2, lr: 1.0e-3}\n")
    with pytest.raises(UserError, match="config key 'train.seq_len' is missing .* train.seq_len=VALUE"):
        load_config(cfg)
    r = embodied("train", "--config", cfg, "train.seq_len=4", "train.batch=x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "train.batch = 'x'" in r.stderr and "must be an integer" in r.stderr


# ---------------------------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip_gives_identical_predictions(reach_data, tmp_path):
    ds = Dataset(reach_data, task="reach")
    spec = dataset_spec(ds.manifest)
    model = tiny_model(reach_data)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = WindowSampler(ds.train, 6).sample(2, np.random.default_rng(0))
    for step in range(2):  # so the optimizer has moments and the normalisers have statistics
        loss, _ = model.loss(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    checkpoint.save(tmp_path, model, opt, 1, spec=spec, train_config={"plugins": []})
    checkpoint.save(tmp_path, model, opt, 2, {"note": "x"}, spec=spec, train_config={"plugins": []})
    saved = json.loads((tmp_path / "config.json").read_text())
    # one checkpoint: config.json and the files it names, none of step 1's, no temp files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        sorted(["config.json"] + [f["path"] for f in saved["files"].values()])
    assert all(".00000002." in f["path"] for f in saved["files"].values())
    assert saved["task"] == "reach" and saved["spec"]["action_dim"] == 2 and saved["model"]["arch"] == "recurrent"

    loaded = checkpoint.load(tmp_path, task="reach", spec=spec)
    model.eval()
    windows, kept = heldout_windows(ds.heldout, model.context, (1, 8), 2)
    ep = ds.heldout[windows[0][0]]
    args = (ep.frames[None, :4], ep.proprio[None, :4], ep.actions[None, :3], ep.actions[None, 3:11])
    np.testing.assert_array_equal(model.predict(*args).numpy(), loaded.predict(*args).numpy())

    opt2 = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    step, extra = checkpoint.load_training_state(tmp_path, opt2)
    assert step == 2 and extra == {"note": "x"}
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for pid in s1:
        for k in s1[pid]:
            torch.testing.assert_close(s1[pid][k], s2[pid][k], rtol=0, atol=0)
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_bad_checkpoints_are_one_line_errors(reach_data, tmp_path):
    spec = dataset_spec(Dataset(reach_data).manifest)
    model = tiny_model(reach_data)
    run = tmp_path / "run"
    checkpoint.save(run, model, torch.optim.AdamW(model.parameters()), 0, spec=spec)
    cases = {}
    with pytest.raises(UserError) as err:
        checkpoint.load(run, task="push")
    cases["task"] = str(err.value)
    assert "'reach'" in cases["task"] and "'push'" in cases["task"]
    with pytest.raises(UserError) as err:
        checkpoint.load(run, spec={"task": "reach", "action_dim": 3, "image_size": [64, 64, 3]})
    cases["space"] = str(err.value)
    assert "action_dim 2" in cases["space"] and "action_dim 3" in cases["space"]
    with pytest.raises(UserError, match="no such run folder") as err:
        checkpoint.load(tmp_path / "nope")
    cases["missing"] = str(err.value)

    weights = checkpoint.file_path(run, checkpoint.read_config(run), "model.safetensors")
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match=r"model\.\d+\.[0-9a-f]+\.safetensors: truncated or corrupt") as err:
        checkpoint.load(run)
    cases["truncated"] = str(err.value)
    weights.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(UserError, match="truncated or corrupt") as err:
        checkpoint.load(run)
    cases["bitflip"] = str(err.value)
    weights.write_bytes(blob)
    checkpoint.load(run)  # intact again
    (run / "config.json").write_text((run / "config.json").read_text()[:40])
    with pytest.raises(UserError, match="corrupt checkpoint config") as err:
        checkpoint.load(run)
    cases["config"] = str(err.value)
    for name, msg in cases.items():
        assert "\n" not in msg, (name, msg)


# ---------------------------------------------------------------------------------------------- training

def test_train_writes_metrics_videos_tensorboard_and_checkpoint(reach_data, tmp_path):
    out = tmp_path / "run"
    m = train(config(reach_data, out, "train.eval_horizons=[1, 8, 32, 64]"), progress=False)
    for key in ("heldout.psnr_h8", "heldout.copy_last_psnr_h8", "heldout.body_err_h8", "heldout.copy_last_body_err_h8",
                "heldout.ssim_h1", "heldout.psnr_h32", "train.wall_s", "train.frames_per_s"):
        assert key in m and m[key] is not None, key
    assert "heldout.psnr_h64" not in m  # longer than the 50-step episodes allow: skipped
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["train.steps"] == 6 and on_disk["final"] and on_disk["heldout.psnr_h8"] == m["heldout.psnr_h8"]
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["step_0000003.mp4", "step_0000006.mp4"]
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert checkpoint.read_config(out)["step"] == 6
    assert checkpoint.load(out).context == 4
    # the copy-last baseline is exact at horizon 1 when nothing moves, and the metric code agrees with itself
    ds = Dataset(reach_data)
    again = evaluate(checkpoint.load(out), ds.heldout, ds.manifest["objects"], (1, 8, 32), 2)
    assert again["heldout.psnr_h8"] == pytest.approx(m["heldout.psnr_h8"])
    # a second run into the same folder without --resume is refused
    r = embodied("train", "--config", BASE[0], "--config", BASE[1], f"data={reach_data}", f"out={out}", *TINY)
    assert r.returncode == 2 and "already holds a checkpoint (step 6); pass --resume" in r.stderr


def _weights(run):
    from safetensors.torch import load_file

    return load_file(str(checkpoint.file_path(run, checkpoint.read_config(run), "model.safetensors")))


def test_resume_after_sigkill_matches_an_uninterrupted_run(reach_data, tmp_path):
    args = ["train", "--config", BASE[0], "--config", BASE[1], f"data={reach_data}", *TINY, "train.steps=24",
            "train.ckpt_every=4", "train.eval_every=1000", "train.videos=0", "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "embodied.cli", *args, f"out={killed}"], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not (killed / "config.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    killed_at = checkpoint.read_config(killed)["step"]
    assert 4 <= killed_at < 24

    r = embodied(*args, f"out={killed}", "--resume")
    assert r.returncode == 0, r.stderr
    assert f"steps {killed_at}->24" in r.stderr
    m = json.loads((killed / "metrics.json").read_text())
    assert m["train.steps"] == 24 and m["train.resumed_from"] == killed_at and m["final"]

    straight = tmp_path / "straight"
    train(config(reach_data, straight, "train.steps=24", "train.ckpt_every=4", "train.eval_every=1000",
                 "train.videos=0"), progress=False)
    a, b = _weights(killed), _weights(straight)
    assert a.keys() == b.keys()
    for k in a:  # same batches, same optimizer state: the resumed run is the uninterrupted one, bit for bit
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_a_run_started_in_process_records_its_own_command(reach_data, tmp_path):
    """`embodied demo` calls the command in-process: the run records the train command it was given, not the
    demo's command line."""
    from embodied.cli import main

    out = tmp_path / "in_process"
    argv = ["train", "--config", BASE[0], "--config", BASE[1], f"data={reach_data}", f"out={out}", *TINY,
            "--no-progress"]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["command"].split() == ["embodied", *argv]


def test_torchrun_two_cpu_processes(reach_data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "embodied.cli",
           "train", "--config", BASE[0], "--config", BASE[1], f"data={reach_data}", f"out={out}", *TINY,
           "train.batch=4", "--no-progress"]
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["train.steps"] == 6 and m["command"].startswith("torchrun --nproc_per_node=2")
    assert "heldout.psnr_h8" in m and checkpoint.load(out, task="reach").context == 4


PLUGIN = """
from embodied.models import MODELS
from embodied.models.recurrent import RecurrentConfig, RecurrentWorldModel


class MyModel(RecurrentWorldModel):
    arch = "my_rnn"


MODELS["my_rnn"] = (MyModel, RecurrentConfig)
"""


def test_plugins_register_user_architectures(reach_data, tmp_path, monkeypatch):
    from embodied.models import MODELS

    (tmp_path / "my_wm_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(MODELS, "my_rnn", None)  # removed again after the test
    with pytest.raises(UserError, match="plugin module 'no_such_plugin' cannot be imported"):
        train(config(reach_data, tmp_path / "bad", "plugins=[no_such_plugin]"), progress=False)
    out = tmp_path / "run"
    train(config(reach_data, out, "model.arch=my_rnn", "plugins=[my_wm_plugin]", "train.steps=2",
                 "train.eval_every=2", "train.videos=0"), progress=False)
    assert type(checkpoint.load(out)).__name__ == "MyModel"


def test_loading_a_checkpoint_never_imports_what_it_names(reach_data, tmp_path, monkeypatch):
    """A shared run folder whose config.json lists a plugin module beside it: loading must not run that module."""
    out = tmp_path / "run"
    train(config(reach_data, out, "train.steps=2", "train.eval_every=2", "train.videos=0"), progress=False)
    marker = tmp_path / "ran"
    (out / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    cfg = json.loads((out / "config.json").read_text())
    cfg["run_config"]["plugins"] = ["evil_plugin"]
    (out / "config.json").write_text(json.dumps(cfg))
    monkeypatch.syspath_prepend(str(out))
    checkpoint.load(out, task="reach")
    assert not marker.exists()
