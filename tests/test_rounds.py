"""On-policy rounds in one command: record MPC episodes with the latest model, fine-tune, repeat; resumable."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embodied import checkpoint
from embodied.collect import collect
from embodied.config import load_config
from embodied.data import read_manifest
from embodied.config import RoundsConfig
from embodied.rounds import run_rounds

ROOT = Path(__file__).resolve().parents[1]
BASE = [str(ROOT / "configs/reach_recurrent.yaml"), str(ROOT / "configs/debug.yaml")]
TINY = ["model.deter=32", "model.stoch=8", "train.threads=1", "train.batch=2", "train.seq_len=6",
        "train.eval_windows=2", "train.videos=0", "train.steps=4", "train.eval_every=1000", "train.ckpt_every=2"]
ENV = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reach_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("reach")
    collect("reach", 4, out, policy="mixed", workers=1, progress=False)
    return out


def _rounds(episodes=2):
    return RoundsConfig(rounds=2, episodes=episodes, steps=2, seq_len=6)


@pytest.mark.slow
def test_rounds_record_train_and_keep_every_round(reach_data, tmp_path):
    cfg = load_config(BASE, [f"data={reach_data}", f"out={tmp_path / 'run'}", *TINY])
    summary = run_rounds(cfg, _rounds(), progress=False)
    assert [row["round"] for row in summary["rounds"]] == [1, 2]
    data = tmp_path / "run" / "rounds" / "data"
    manifest = read_manifest(data)
    assert manifest["episodes_total"] == 4 + 2 * 2  # the base dataset's episodes and both rounds' recordings
    assert sorted(r["seed"] for r in manifest["episodes"])[-4:] == [100000, 100001, 100002, 100003]
    assert read_manifest(reach_data)["episodes_total"] == 4  # the collected dataset is left as it was
    for r, steps in ((1, 6), (2, 8)):
        run = tmp_path / "run" / "rounds" / f"round_{r:02d}"
        assert checkpoint.read_config(run)["step"] == steps
        assert checkpoint.read_config(run)["run_config"]["data"]["path"] == str(data)
    assert summary["latest"].endswith("round_02")
    again = run_rounds(cfg, _rounds(), progress=False)  # everything done: nothing is redone
    assert again["rounds"] == summary["rounds"]


@pytest.mark.slow
def test_rounds_resume_after_kill(reach_data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--config", BASE[0], "--config", BASE[1], f"data={reach_data}", f"out={out}", *TINY,
            "--rounds", "2", "rounds.episodes=2", "rounds.steps=2", "rounds.seq_len=6", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "embodied.cli", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    data = out / "rounds" / "data" / "episodes"
    deadline = time.time() + 120
    while not (data / "ep_100000.safetensors").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # in round 1, after its first recorded episode
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    r = subprocess.run([sys.executable, "-m", "embodied.cli", *args], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 on-policy rounds" in r.stdout
    summary = json.loads((out / "rounds" / "rounds.json").read_text())
    assert [row["round"] for row in summary["rounds"]] == [1, 2]
    assert read_manifest(out / "rounds" / "data")["episodes_total"] == 8
    assert checkpoint.read_config(out / "rounds" / "round_02")["step"] == 8
