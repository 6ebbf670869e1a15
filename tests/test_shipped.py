"""Shipped checkpoints (embodied/shipped.py): ship a run, list it, load it by name wherever a run folder goes.

The fast tests ship a tiny trained run (configs/debug.yaml on a 5-episode Push dataset, ~10 s) into a
temporary shipped folder named by EMBODIED_SHIPPED_DIR. ``test_real_shipped_checkpoint_reproduces`` is
parametrized over the checkpoints really shipped in embodied/shipped/ (none yet: it collects nothing until
some are added): each must reproduce its recorded held-out PSNR on freshly collected episodes within
PSNR_TOLERANCE_DB, and its recorded planning success on the first PLAN_EPISODES of its recorded seeds within
PLAN_TOLERANCE.
"""
import json
import os
import shlex
import shutil
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest
import torch

from embodied import shipped
from embodied.cli import main
from embodied.collect import collect
from embodied.config import load_config
from embodied.data import manifest_fingerprint
from embodied.dataset import Dataset
from embodied.errors import UserError
from embodied.load import load_model
from embodied.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model.deter=32", "model.stoch=8", "train.threads=1", "train.batch=2", "train.seq_len=6",
        "train.eval_windows=2", "train.videos=0"]
TINY_PLAN = ["--task", "push", "--planner", "cem", "--episodes", "1", "--max-steps", "6", "--horizon", "3",
             "--samples", "8", "--iterations", "1", "--videos", "0", "--no-progress"]
NAME = "tiny"

PSNR_TOLERANCE_DB = 1.5      # fresh episodes of the task vs the held-out PSNR@1 / @8 in shipped.json
PLAN_EPISODES = 3            # real MPC episodes re-planned per shipped checkpoint, on its recorded seeds
PLAN_TOLERANCE = 1 / 3 + 1e-9  # success may drop by one episode of three (floating-point paths differ by machine)
PACKAGE_SHIPPED = Path(shipped.__file__).resolve().parent / "shipped"  # the package's own, whatever the env says


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny Push run with a plan of its own, the oracle's plan on the same seed and a validation."""
    base = tmp_path_factory.mktemp("ship")
    collect("push", 5, base / "data", policy="mixed", workers=1, progress=False)
    run = base / "run"
    cfg = load_config([os.path.join(ROOT, "configs/push_recurrent.yaml"), os.path.join(ROOT, "configs/debug.yaml")],
                      [f"data={base / 'data'}", f"out={run}", *TINY])
    train(cfg, command=f"embodied train --config configs/push_recurrent.yaml --config configs/debug.yaml "
                       f"data={base / 'data'} out={run}", progress=False)
    assert main(["plan", *TINY_PLAN, "--model", str(run), "--out", str(base / "plan_model")]) == 0
    assert main(["plan", *TINY_PLAN, "--model", "mujoco", "--out", str(base / "plan_mujoco")]) == 0
    assert main(["validate", "--task", "push", "--model", str(run), "--preset", "quick", "--probes",
                 "controllability", "--no-media", "--out", str(base / "validation")]) == 0
    return base


@pytest.fixture(scope="module")
def shipped_root(trained, tmp_path_factory):
    """The tiny run shipped as "tiny" into a temporary folder that EMBODIED_SHIPPED_DIR names."""
    root = tmp_path_factory.mktemp("shipped")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(shipped.ENV, str(root))
        shipped.ship(trained / "run", NAME, trained / "plan_model" / "plan.json", trained / "plan_mujoco",
                     trained / "validation" / "validation.json")
        yield root


def test_checkpoints_lists_the_shipped_model_with_its_metrics(shipped_root, trained, capsys):
    assert main(["checkpoints", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["root"] == str(shipped_root)
    (entry,) = listing["checkpoints"]
    metrics = json.loads((trained / "run" / "metrics.json").read_text())
    plan = json.loads((trained / "plan_model" / "plan.json").read_text())
    oracle = json.loads((trained / "plan_mujoco" / "plan.json").read_text())
    validation = json.loads((trained / "validation" / "validation.json").read_text())
    assert entry["name"] == NAME and entry["task"] == "push" and entry["arch"] == "recurrent"
    assert entry["step"] == 6 and entry["path"] == str(shipped_root / NAME)
    assert entry["command"].startswith("embodied train --config configs/push_recurrent.yaml")
    assert entry["data"]["fingerprint"] == manifest_fingerprint(trained / "data")
    assert entry["data"]["fingerprint"].startswith("sha256:") and entry["data"]["episodes"] == 5
    heldout = entry["metrics"]["heldout"]
    assert heldout["heldout.psnr_h8"] == pytest.approx(metrics["heldout.psnr_h8"])
    assert heldout == {k: v for k, v in metrics.items() if k.startswith("heldout.")}
    planning = entry["metrics"]["planning"]
    assert planning["model"]["success_rate"] == plan["success_rate"]
    assert planning["oracle"]["success_rate"] == oracle["success_rate"]
    assert planning["model"]["command"] == plan["command"] and planning["oracle"]["command"] == oracle["command"]
    assert planning["model"]["seeds"] == "0-0" and len(planning["model"]["per_episode_success"]) == 1
    probes = entry["metrics"]["probes"]
    assert probes["scores"] == {"controllability": validation["scores"]["controllability"]["model"]}
    assert probes["command"] == validation["command"] and probes["preset"] == "quick"

    assert main(["checkpoints"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["name", "task", "arch", "step"]
    assert table[1].split()[:4] == [NAME, "push", "recurrent", "6"] and str(shipped_root / NAME) in table[1]


def test_none_shipped_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(shipped.ENV, str(tmp_path / "empty"))
    assert main(["checkpoints"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("none shipped") and len(out.splitlines()) == 1
    assert main(["checkpoints", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoints"] == []


def test_shipped_folder_holds_only_what_loading_needs(shipped_root, trained):
    folder = shipped_root / NAME
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 3 and names[0] == "config.json" and names[2] == "shipped.json"
    assert names[1].startswith("model.00000006.") and names[1].endswith(".safetensors")
    cfg = json.loads((folder / "config.json").read_text())
    assert list(cfg["files"]) == ["model.safetensors"]  # no optimizer state, no training state
    original = json.loads((trained / "run" / "config.json").read_text())
    weights = trained / "run" / original["files"]["model.safetensors"]["path"]
    assert (folder / names[1]).read_bytes() == weights.read_bytes()
    assert not [p for p in shipped_root.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_load_model_by_name(shipped_root, trained):
    model = load_model(NAME, "push")
    assert model.run_dir == str(shipped_root / NAME)
    reference = load_model(str(trained / "run"), "push")
    for (k, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), k
    assert shipped.shipped_path(NAME) == shipped_root / NAME and shipped.shipped_path("nosuch") is None
    assert shipped.shipped_for("embodied/Push-v0")["name"] == NAME and shipped.shipped_for("reach") is None


def test_a_path_wins_over_a_name(shipped_root, trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained / "run", tmp_path / NAME)
    assert load_model(NAME, "push").run_dir == NAME  # the folder here, not the shipped one
    shutil.rmtree(tmp_path / NAME)
    (tmp_path / NAME).mkdir()  # a path that is no run folder still wins: its own one-line error
    with pytest.raises(UserError, match="no config.json"):
        load_model(NAME, "push")


def test_unknown_name_lists_the_shipped_names(shipped_root):
    with pytest.raises(UserError, match=r"'nosuch': no such run folder or shipped checkpoint.*\(tiny;"):
        load_model("nosuch", "push")


def test_plan_with_a_shipped_name(shipped_root, tmp_path):
    assert main(["plan", *TINY_PLAN, "--model", NAME, "--out", str(tmp_path / "plan")]) == 0
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["model"] == str((shipped_root / NAME).resolve()) and plan["episodes"] == 1
    assert "--model tiny" in plan["command"]


def test_ship_refuses_what_it_cannot_vouch_for(shipped_root, trained, tmp_path):
    run = trained / "run"
    with pytest.raises(UserError, match="already shipped"):
        shipped.ship(run, NAME)
    with pytest.raises(UserError, match="shipped name"):
        shipped.ship(run, "mujoco")
    with pytest.raises(UserError, match="shipped name"):
        shipped.ship(run, "../escape")
    other = json.loads((trained / "plan_model" / "plan.json").read_text()) | {"model": str(tmp_path / "another_run")}
    (tmp_path / "plan.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match="plans with model"):
        shipped.ship(run, "other", tmp_path / "plan.json")
    oracle = json.loads((trained / "plan_mujoco" / "plan.json").read_text()) | {"seed": 5}
    (tmp_path / "oracle.json").write_text(json.dumps(oracle))
    with pytest.raises(UserError, match="differ in seed"):
        shipped.ship(run, "other", trained / "plan_model" / "plan.json", tmp_path / "oracle.json")
    with pytest.raises(UserError, match="--data"):
        shipped.ship(run, "other", data=tmp_path / "no_dataset")
    assert sorted(p.name for p in shipped_root.iterdir()) == [NAME]  # nothing half-shipped
    # --force replaces; the command-line entry point says so in one line
    assert shipped.main([str(run), NAME, "--force", "--root", str(tmp_path / "elsewhere")]) == 0
    assert shipped.main([str(run), NAME, "--root", str(tmp_path / "elsewhere")]) == 2
    assert shipped.main([str(run), NAME, "--force", "--root", str(tmp_path / "elsewhere")]) == 0
    entry = json.loads((tmp_path / "elsewhere" / NAME / "shipped.json").read_text())
    assert entry["metrics"]["planning"] is None and entry["metrics"]["probes"] is None


def test_demo_plans_with_the_shipped_model_beside_the_oracle_and_a_fresh_model(shipped_root, trained, tmp_path,
                                                                                  monkeypatch, capsys):
    """The demo's logic at a tiny scale; the data and the fresh model are already there (stages are skipped when
    their output exists), so it plans, validates and summarises."""
    from embodied.commands import demo

    tiny = {"episodes": 5, "configs": [os.path.join(ROOT, "configs/debug.yaml")], "train": {"recurrent": TINY},
            "steps": 6, "steps_beside_shipped": 6, "plan_episodes": 1, "shipped_plan_episodes": 1,
            "plan": TINY_PLAN[6:], "probes": "quick", "validate": ["--probes", "controllability", "--no-media"]}
    monkeypatch.setitem(demo.SCALES, "tiny", tiny)
    out = tmp_path / "demo"
    shutil.copytree(trained / "data", out / "data")
    shutil.copytree(trained / "run", out / "push_recurrent_fresh")
    assert main(["demo", "--scale", "tiny", "--arch", "recurrent", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lane = (out / "fresh.log").read_text()  # the fresh model's lane ran in a process of its own
    assert "skipping" in lane and "[demo] train:" in lane  # collect and train were done already
    assert "[demo] plan (fresh model)" in lane and (out / "plan_fresh" / "plan.json").is_file()
    assert "SHIPPED model 'tiny'" in text and "FRESH model (recurrent, 6 steps" in text
    assert "CEM, shipped model 'tiny'" in text and "CEM, MuJoCo oracle (same seeds)" in text
    summary = json.loads((out / "demo.json").read_text())
    assert summary["shipped"]["name"] == NAME and summary["validated"] == "shipped"
    assert set(summary["plans"]) == {"shipped", "oracle", "fresh"}
    assert summary["plans"]["shipped"]["model"] == str((shipped_root / NAME).resolve())
    assert summary["plans"]["shipped"]["seed"] == summary["plans"]["oracle"]["seed"]
    assert (out / "shipped" / NAME / "validation" / "report.html").is_file()
    # --shipped none: the demo as before, on the fresh model only (unknown names are one line)
    assert main(["demo", "--scale", "tiny", "--arch", "recurrent", "--shipped", "nosuch", "--out", str(out)]) == 2
    assert "no such shipped checkpoint (shipped: tiny)" in capsys.readouterr().err


# --- the checkpoints really shipped in embodied/shipped/ -----------------------------------------------------------

REAL = shipped.list_shipped(PACKAGE_SHIPPED)


def _real_param(entry):
    slow = entry.get("arch") == "transformer"  # its planning runs ~500 ms/action: over a minute for 3 episodes
    return pytest.param(entry, id=entry["name"], marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("entry", [_real_param(e) for e in REAL])
def test_real_shipped_checkpoint_reproduces(entry, tmp_path, monkeypatch):
    """A shipped checkpoint loads by name, predicts fresh episodes of its task as well as shipped.json says
    (PSNR@1 and @8 within PSNR_TOLERANCE_DB) and plans as well on the first seeds it was measured on."""
    assert "error" not in entry, entry.get("error")
    monkeypatch.setenv(shipped.ENV, str(PACKAGE_SHIPPED))  # names resolve in the package's folder, as for a user
    task, name = entry["task"], entry["name"]
    model = load_model(name, task)
    assert model.run_dir == str(PACKAGE_SHIPPED / name)
    collect(task, 8, tmp_path / "fresh", policy="mixed", workers=1, seed=1_000_000, progress=False)
    ds = Dataset(tmp_path / "fresh", task=task)
    from embodied.evaluate import evaluate

    got = evaluate(model, ds.episodes, ds.manifest.get("objects", []), horizons=(1, 8), n_windows=64, seed=0)
    recorded = entry["metrics"]["heldout"]
    for h in (1, 8):
        key = f"heldout.psnr_h{h}"
        assert abs(got[key] - recorded[key]) <= PSNR_TOLERANCE_DB, (key, got[key], recorded[key])

    plan = (entry["metrics"].get("planning") or {}).get("model")
    if not plan:
        return
    argv = shlex.split(plan["command"])[1:]  # embodied plan ...: the same planner settings and seeds
    if "--record" in argv:  # never add episodes to the dataset the measurement recorded into
        i = argv.index("--record")
        del argv[i:i + 2]
    flags = {"--model": name, "--episodes": str(PLAN_EPISODES), "--out": str(tmp_path / "plan"), "--videos": "0"}
    for i, token in enumerate(argv):
        if token in flags and i + 1 < len(argv):
            argv[i + 1] = flags.pop(token)
    argv += [a for k, v in flags.items() for a in (k, v)]
    argv += [] if "--no-progress" in argv else ["--no-progress"]
    assert main(argv) == 0
    result = json.loads((tmp_path / "plan" / "plan.json").read_text())
    expected = float(np.mean(plan["per_episode_success"][:PLAN_EPISODES])) if plan["per_episode_success"] \
        else plan["success_rate"]
    assert result["success_rate"] >= expected - PLAN_TOLERANCE, (result["success_rate"], expected)
