"""Checkpoints are atomic as a whole: kill -9 at random points of many saves, and a full disk during a save.

After every fault the run folder still loads (model and optimizer state, one consistent step), and a failed
save says so in one line. The short variants run in CI; longer ones are marked slow.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from embodied import checkpoint
from embodied.errors import UserError
from embodied.models import build_model

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
SPEC = {"task": "reach", "image_size": [64, 64, 3], "action_dim": 2, "proprio_dim": 5, "objects": []}
MODEL = {"arch": "recurrent", "channels": 8, "embed_dim": 32, "proprio_embed": 8, "hidden": 64, "deter": 64,
         "stoch": 16}

# saves back to back, from the step after the last committed one; the weights change every step
WRITER = f"""
import torch
from embodied import checkpoint
from embodied.models import build_model
run = RUN_DIR
model = build_model({MODEL!r}, {SPEC!r})
opt = torch.optim.AdamW(model.parameters())
from pathlib import Path
step = checkpoint.read_config(run)["step"] if (Path(run) / "config.json").exists() else 0
while True:
    step += 1
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    checkpoint.save(run, model, opt, step, {{"mark": step}}, spec={SPEC!r})
"""


def _check_loads(run: Path) -> int:
    """The run folder holds one complete, consistent checkpoint; returns its step."""
    cfg = checkpoint.read_config(run)
    model = checkpoint.load(run, task="reach")
    step, extra = checkpoint.load_training_state(run, torch.optim.AdamW(model.parameters()))
    assert step == cfg["step"] == extra["mark"]
    return step


def _kill_during_saves(tmp_path: Path, kills: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    run = tmp_path / "run"
    steps = [0]
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", WRITER.replace("RUN_DIR", repr(str(run)))], cwd=ROOT, env=ENV,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while _committed(run) <= steps[-1] and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)  # until this writer has committed a save of its own
        time.sleep(rng.uniform(0.0, 0.4))  # saves run back to back: the kill lands at a random point of one
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
        steps.append(_check_loads(run))
    return steps[1:]


def _committed(run: Path) -> int:
    try:
        return json.loads((run / "config.json").read_text())["step"]
    except (OSError, ValueError):
        return 0


def test_kill_during_saves_always_leaves_a_loadable_checkpoint(tmp_path):
    steps = _kill_during_saves(tmp_path, kills=4, seed=0)
    assert steps == sorted(steps) and steps[-1] > steps[0]  # every restart resumed and made progress


@pytest.mark.slow
def test_kill_during_saves_many_times(tmp_path):
    steps = _kill_during_saves(tmp_path, kills=12, seed=1)
    assert steps == sorted(steps)


def _tiny_checkpoint_bytes(tmp_path: Path) -> int:
    probe = tmp_path / "probe"
    model = build_model(MODEL, SPEC)
    checkpoint.save(probe, model, torch.optim.AdamW(model.parameters()), 1, spec=SPEC)
    return sum(p.stat().st_size for p in probe.iterdir())


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    """A tmpfs with room for one checkpoint: the second save fails in one line, the first still loads."""
    size = _tiny_checkpoint_bytes(tmp_path)
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size * 1.5)}", "tmpfs", str(disk)],
                             capture_output=True).returncode == 0
    try:
        if mounted:
            run = disk / "run"
            model = build_model(MODEL, SPEC)
            opt = torch.optim.AdamW(model.parameters())
            checkpoint.save(run, model, opt, 1, {"mark": 1}, spec=SPEC)
            for step in (2, 3):
                with pytest.raises(UserError) as err:
                    checkpoint.save(run, model, opt, step, {"mark": step}, spec=SPEC)
                message = str(err.value)
                assert "\n" not in message and "step 1 is intact" in message and "free disk space" in message
                assert _check_loads(run) == 1
            names = json.loads((run / "config.json").read_text())["files"]
            assert sorted(p.name for p in run.iterdir()) == \
                sorted(["config.json"] + [f["path"] for f in names.values()])
        else:  # no permission to mount: the kernel's file-size limit makes the same write fail (EFBIG)
            run = tmp_path / "run"
            code = (f"import resource, signal, torch\nfrom embodied import checkpoint\nfrom embodied.models import "
                    f"build_model\nm = build_model({MODEL!r}, {SPEC!r}); o = torch.optim.AdamW(m.parameters())\n"
                    f"checkpoint.save({str(run)!r}, m, o, 1, {{'mark': 1}}, spec={SPEC!r})\n"
                    f"signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                    f"resource.setrlimit(resource.RLIMIT_FSIZE, ({size // 4}, {size // 4}))\n"
                    f"checkpoint.save({str(run)!r}, m, o, 2, {{'mark': 2}}, spec={SPEC!r})\n")
            r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
            assert r.returncode != 0 and "step 1 is intact" in r.stderr
            assert _check_loads(run) == 1
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)
