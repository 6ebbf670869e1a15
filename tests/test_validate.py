"""Validation probes, baselines, validation.json, report.html (and a headless Chromium load), compare.

The probes are checked against models whose right answers are known: the MuJoCo
oracle (must score 100), the oracle with every action zeroed and copy-last-frame
(must score about 0), and an oracle whose actions are halved (in between).
Every probe must *separate* the baselines from the truth on its raw metrics,
not only on the 0-100 scale (which puts the best baseline at 0 by construction).
"""
import json
import os
import re
import shutil
import subprocess

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest
import torch

from embodied.envs.registry import TASKS, task_class
from embodied.load import load_model
from embodied.models.base import WorldModel
from embodied.models.baselines import ActionBlind, CopyLastFrame
from embodied.validate.harness import PROBES, WHO, Harness, Settings
from embodied.validate.runner import probes_to_run, run_probes, validate
from embodied.validate.scoring import probe_score

ORACLE_TASKS = ("push", "occlusion")


@pytest.fixture(scope="module")
def oracle_runs(tmp_path_factory):
    """validate() of the MuJoCo oracle on Push and Occlusion (quick settings), with report and media."""
    out = {}
    for task in ORACLE_TASKS:
        d = tmp_path_factory.mktemp(f"val_{task}")
        out[task] = (d, validate(task, "oracle", d, quick=True, progress=None))
    return out


@pytest.fixture(scope="module")
def blind_results():
    """Every probe with the action-zeroed oracle as the model under test (no report)."""
    return {task: run_probes(task, load_model("blind_oracle", task), Settings(quick=True), progress=None)[0]
            for task in ORACLE_TASKS}


# ---- baselines ---------------------------------------------------------------------------------

class _Spy(WorldModel):
    """Records the actions (and what encode is given); its state is a counter of steps."""

    action_dim = 2
    context = 3

    def __init__(self):
        super().__init__()
        self.seen, self.encoded = [], []

    def encode(self, frames, actions, proprio=None, sim_state=None):
        self.seen.append(actions.clone())
        self.encoded.append({"frames": frames, "actions": actions, "proprio": proprio, "sim_state": sim_state})
        return {"x": torch.zeros(frames.shape[0], 1)}

    def step(self, state, action):
        self.seen.append(action.clone())
        return {"x": state["x"] + action.sum(-1, keepdim=True)}

    def decode(self, state):
        return torch.zeros(state["x"].shape[0], 8, 8, 3, dtype=torch.uint8)

    def reward(self, state):
        return state["x"][:, 0]

    def features(self, state):
        return state["x"]


def test_copy_last_frame_repeats_the_last_real_frame():
    frames = torch.randint(0, 255, (3, 4, 16, 16, 3), dtype=torch.uint8)
    m = CopyLastFrame("push", 2)
    state = m.encode(frames, torch.ones(3, 3, 2))
    for _ in range(5):
        state = m.step(state, torch.ones(3, 2))
    assert torch.equal(m.decode(state), frames[:, -1])
    final, rewards = m.rollout(state, torch.randn(3, 6, 2))
    assert rewards.shape == (3, 6) and torch.all(rewards == 0)


def test_action_blind_zeroes_every_action_it_sees():
    spy = _Spy()
    blind = ActionBlind(spy)
    state = blind.encode(torch.zeros(2, 4, 8, 8, 3, dtype=torch.uint8), torch.ones(2, 3, 2))
    state = blind.step(state, torch.ones(2, 2))
    _, rewards = blind.rollout(state, torch.ones(2, 5, 2))
    assert all(torch.count_nonzero(a) == 0 for a in spy.seen) and len(spy.seen) == 7
    assert torch.all(rewards == 0)
    assert blind.action_dim == 2 and not blind.abilities.simulator_state


def test_the_harness_encodes_the_real_context_and_gives_sim_state_only_to_the_oracle():
    spy = _Spy()
    h = Harness("push", spy, Settings(quick=True))
    try:
        starts = h.starts("fidelity", 2)
        h.initial_state("model", starts)
        got = spy.encoded[-1]
        assert got["sim_state"] is None  # a learned model never receives the simulator state
        assert torch.equal(got["frames"], torch.from_numpy(np.stack([s.frames[-3:] for s in starts])))
        assert torch.equal(got["actions"], torch.from_numpy(np.stack([s.actions[-2:] for s in starts])))
        assert torch.equal(got["proprio"], torch.from_numpy(np.stack([s.proprio[-3:] for s in starts])))
        oracle = h.initial_state("mujoco", starts)
        assert torch.equal(oracle["sim"], torch.from_numpy(np.stack([s.sim for s in starts])))
        live = h.env.get_state()
        h.predict("mujoco", starts, np.ones((2, 3, 2), np.float32))
        assert np.array_equal(h.env.get_state(), live)  # the oracle simulates in its own copy, not the live env
    finally:
        h.close()


# ---- scoring -----------------------------------------------------------------------------------

def test_scoring_scales_between_best_baseline_and_truth_and_flags_degenerate_probes():
    errors = {"e": {"model": 5.0, "copy_last": 10.0, "action_blind": 12.0, "mujoco": 0.0}}
    s = probe_score(errors, {"e": 0.1})
    assert s["score"] == {"action_blind": 0.0, "copy_last": 0.0, "model": 50.0, "mujoco": 100.0}
    assert s["reference"] == "copy_last" and s["separates"]
    worse = probe_score({"e": {"model": 30.0, "copy_last": 10.0, "action_blind": 12.0, "mujoco": 0.0}})
    assert worse["score"]["model"] == 0.0  # clipped
    flat = probe_score({"e": {"model": 1.0, "copy_last": 1.0, "action_blind": 1.0, "mujoco": 1.0}})
    assert not flat["separates"] and flat["score"]["mujoco"] is None


def test_action_sensitivity_pools_starts_so_a_start_with_no_real_difference_cannot_dominate():
    from embodied.validate.controllability import sensitivity_error

    truth = np.array([[0.05, 0.05], [0.04, 0.06], [1e-5, 1e-5]])        # start 3: both real branches alike
    assert sensitivity_error(truth, truth) == 0.0
    assert sensitivity_error(np.zeros_like(truth), truth) == pytest.approx(1.0)   # ignores its actions
    doubled = sensitivity_error(2 * truth, truth)
    assert doubled == pytest.approx(1.0)                                          # over-reacts 2x: error 1
    stray = truth.copy()
    stray[2] = 0.03                                                              # reacts where reality did not
    err = sensitivity_error(stray, truth)
    assert err == pytest.approx(0.06 / truth.sum(), rel=1e-3) and err < 1.0  # counted, not divided by 2e-5


# ---- probes: the oracle scores 100, baselines and the action-blind oracle about 0 --------------

@pytest.mark.parametrize("task", ORACLE_TASKS)
def test_every_applicable_probe_separates_baselines_from_mujoco(oracle_runs, task):
    _, v = oracle_runs[task]
    assert set(v["probes"]) == set(task_class(task).probes)  # the probes the task declares
    for probe, r in v["probes"].items():
        assert r["separates"] and r["separation"] >= 0.3, (probe, r["separation"])
        assert r["score"]["mujoco"] == 100.0, probe
        assert r["score"]["model"] >= 99.0, probe            # the oracle as the model under test
        assert r["score"]["copy_last"] <= 5.0, probe
        assert r["score"]["action_blind"] <= 5.0, probe


@pytest.mark.parametrize("task", ORACLE_TASKS)
def test_action_blind_oracle_scores_about_zero(blind_results, task):
    for probe, r in blind_results[task].items():
        assert r["separates"], probe
        assert r["score"]["model"] <= 5.0, (probe, r["score"])
        assert r["score"]["mujoco"] == 100.0


def test_raw_metrics_separate_the_truth_from_both_baselines(oracle_runs):
    push = oracle_runs["push"][1]["probes"]
    occ = oracle_runs["occlusion"][1]["probes"]
    for probes in (push, occ):
        f = probes["fidelity"]["metrics"]
        assert f["mujoco"]["psnr_db"] == 60.0 and f["mujoco"]["ssim"] == 1.0
        assert max(f["copy_last"]["psnr_db"], f["action_blind"]["psnr_db"]) < 35.0
        c = probes["controllability"]["metrics"]
        assert c["mujoco"]["actuated_px_error"] < 1.0
        assert min(c["copy_last"]["actuated_px_error"], c["action_blind"]["actuated_px_error"]) > 3.0
        assert c["mujoco"]["action_sensitivity"] == pytest.approx(1.0)
        assert c["copy_last"]["action_sensitivity"] == 0.0 and c["action_blind"]["action_sensitivity"] == 0.0
        k = probes["causality"]["metrics"]
        assert k["mujoco"]["moved_accuracy"] == 1.0 and k["mujoco"]["null_motion_px_error"] < 0.5
        assert k["copy_last"]["moved_accuracy"] == 0.5 and k["action_blind"]["moved_accuracy"] == 0.5
        p = probes["planning_fidelity"]["metrics"]
        assert p["mujoco"]["spearman"] > 0.99 and p["mujoco"]["top1_regret"] < 0.01
        assert abs(p["copy_last"]["spearman"]) < 0.01 and abs(p["action_blind"]["spearman"]) < 0.01
    pe = occ["persistence"]["metrics"]
    assert occ["persistence"]["settings"]["events_by_object"]["ball"] > 0
    assert occ["persistence"]["settings"]["events_by_object"]["pusher"] > 0
    assert occ["persistence"]["settings"]["long_steps"] >= 100
    assert pe["mujoco"]["reappear_px_error"] < 1.0 and pe["mujoco"]["presence"] == 1.0
    assert pe["mujoco"]["reappear_time_error"] == 0.0 and abs(pe["mujoco"]["freeze_ratio"] - 1) < 0.15
    assert pe["mujoco"]["still_drift_px"] < 0.5
    for b in ("copy_last", "action_blind"):
        assert pe[b]["reappear_px_error"] > 5.0 and pe[b]["freeze_ratio"] < 0.5
    assert pe["copy_last"]["long_rollout_px_error"] > 5.0


class _HalfActions(ActionBlind):
    """The oracle with its actions halved: a model that is partly right."""

    def step(self, state, action):
        return self.world.step(state, 0.5 * torch.as_tensor(action))


def test_a_partly_right_model_scores_in_between():
    oracle = load_model("oracle", "push")
    res, _ = run_probes("push", _HalfActions(oracle), Settings(quick=True), ["controllability"], progress=None)
    score = res["controllability"]["score"]["model"]
    assert 10.0 < score < 90.0, score


# ---- validation.json and report.html -------------------------------------------------------------

@pytest.mark.parametrize("task", ORACLE_TASKS)
def test_validation_json_layout(oracle_runs, task):
    d, _ = oracle_runs[task]
    def strict(const):
        raise AssertionError(f"validation.json holds {const}, which strict JSON parsers reject")

    v = json.loads((d / "validation.json").read_text(), parse_constant=strict)
    assert v["task"] == task and v["format"] == "embodied-validation/1"
    for probe in task_class(task).probes:
        r = v["probes"][probe]
        assert set(r["score"]) == set(WHO)
        assert all(isinstance(r["score"][w], (int, float)) and 0 <= r["score"][w] <= 100 for w in WHO)
        assert set(r["metrics"]) == set(WHO) and r["metrics"]["model"]
        assert v["scores"][probe] == r["score"]
    assert not list(d.glob(".*.tmp"))  # written atomically, no leftovers


def _report_refs(d):
    page = (d / "report.html").read_text()
    return page, re.findall(r"""(?:src|href)=['"]([^'"#]+)['"]""", page)


@pytest.mark.parametrize("task", ORACLE_TASKS)
def test_report_references_files_that_exist_and_no_network(oracle_runs, task):
    d, v = oracle_runs[task]
    page, refs = _report_refs(d)
    assert not re.search(r"(?:src|href)=['\"](?:https?:)?//", page), \
        "the report must not load anything from the network"
    assert refs and all((d / r).is_file() for r in refs), [r for r in refs if not (d / r).is_file()]
    pngs = [r for r in refs if r.endswith(".png")]
    gifs = [r for r in refs if r.endswith(".gif")]
    for probe in v["probes"]:
        assert any(r.startswith(f"plots/{probe}_") for r in pngs), probe
        assert any(r.startswith(f"media/{probe}_best") for r in gifs), probe
        assert any(r.startswith(f"media/{probe}_worst") for r in gifs), probe
    import imageio.v3 as iio

    gif = iio.imread(d / gifs[0], index=None)
    assert gif.ndim == 4 and gif.shape[0] > 1  # animated: real | imagined | difference over the horizon


CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var out = [];
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    out.push([im.getAttribute('src'), im.complete && im.naturalWidth > 0]);
  }
  var pre = document.createElement('pre'); pre.id = 'image-check';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="headless browser check needs Chromium: apt-get install -y chromium")
def test_report_loads_in_headless_chromium(oracle_runs, tmp_path):
    """Open report.html from file:// with no server and no network; every plot and GIF must load."""
    d, _ = oracle_runs["occlusion"]
    page = (d / "report.html").read_text()
    check = d / "_browser_check.html"  # the report plus a script that lists its images and whether they loaded
    check.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
           "--dump-dom", check.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    check.unlink()
    dom = proc.stdout
    m = re.search(r'<pre id="image-check">(.*?)</pre>', dom, re.S)
    assert m, f"Chromium did not run the page (rc {proc.returncode}): {proc.stderr[-500:]}"
    images = json.loads(m.group(1).replace("&quot;", '"'))
    assert any(src.endswith(".png") for src, _ in images) and any(src.endswith(".gif") for src, _ in images)
    broken = [src for src, ok in images if not ok]
    assert not broken, f"images that did not load in Chromium: {broken}"
    assert "<table id=\"scores\">" in dom


# ---- compare and the command line ---------------------------------------------------------------

def test_compare_cli_side_by_side(tmp_path, capsys):
    from embodied.cli import main

    rc = main(["compare", "oracle", "blind_oracle", "probes=[controllability,planning_fidelity]", "--task", "push",
               "--out", str(tmp_path), "--quick", "--no-media"])  # models and key=value overrides mix
    assert rc == 0
    summary = json.loads((tmp_path / "compare.json").read_text())
    assert summary["models"] == {"oracle": "oracle", "blind_oracle": "blind_oracle"}
    assert summary["command"].endswith("--quick --seed 0 --probes controllability,planning_fidelity --no-media")
    assert summary["scores"]["controllability"]["oracle"] == 100.0
    assert summary["scores"]["controllability"]["blind_oracle"] <= 5.0
    assert summary["scores"]["planning_fidelity"]["oracle"] == 100.0
    assert (tmp_path / "compare.html").is_file() and (tmp_path / "oracle" / "validation.json").is_file()
    page = (tmp_path / "compare.html").read_text()
    assert all((tmp_path / r).is_file() for r in re.findall(r"src='([^']+)'", page))
    assert "compare.html" in capsys.readouterr().out


def test_validate_cli_rejects_bad_input(tmp_path, capsys):
    from embodied.cli import main

    assert main(["validate", "--task", "push", "--model", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["validate", "--task", "push", "--model", "oracle", "--out", str(tmp_path),
                 "--probes", "vibes"]) == 2
    assert "unknown probe" in capsys.readouterr().err
    assert main(["validate", "model=oracle", f"out={tmp_path}", "probes=[persistence]"]) == 2  # push has no occluder
    assert "do not apply" in capsys.readouterr().err
    assert main(["validate", "--model", "oracle", f"out={tmp_path}", "probez=[fidelity]"]) == 2
    assert "did you mean probes" in capsys.readouterr().err
    assert main(["validate", "--model", "oracle"]) == 2
    assert "'out' is missing" in capsys.readouterr().err
    assert main(["compare", "--task", "push", "--out", str(tmp_path)]) == 2
    assert "'models' is missing" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing ran


def test_validate_cli_takes_a_config_file_flags_and_overrides(tmp_path, capsys):
    from embodied.cli import main

    cfg = tmp_path / "val.yaml"
    cfg.write_text(f"task: reach\nmodel: copy_last\nout: {tmp_path / 'val'}\nprobes: [fidelity]\nseed: 1\n")
    assert main(["validate", "--config", str(cfg), "--preset", "quick", "--no-media", "seed=2"]) == 0
    v = json.loads((tmp_path / "val" / "validation.json").read_text())
    assert v["task"] == "reach" and list(v["probes"]) == ["fidelity"]
    assert v["settings"] == {"quick": True, "seed": 2}   # key=value beats the file, the flag sets quick
    assert v["command"].startswith("embodied validate --task reach --model copy_last")
    assert "--seed 2 --probes fidelity --no-media" in v["command"]
    assert v["probes"]["fidelity"]["score"]["model"] == 0.0  # copy-last is the baseline itself
    assert "validation.json" in capsys.readouterr().out


def test_every_task_declares_known_probes_with_its_own_objects():
    used = set()
    for name, cls in TASKS.items():
        names = {o.name for o in cls.objects}
        assert probes_to_run(cls.probes) == [p for p in PROBES if p in cls.probes], name
        used |= set(cls.probes)
        if "causality" in cls.probes:
            c = cls.probes["causality"]
            assert {c["object"], c["pusher"], *c.get("keep_clear", ())} <= names, name
        if "persistence" in cls.probes:
            p = cls.probes["persistence"]
            assert {*p["movers"], p["still"]} <= names and cls.occluder_half_width > 0, name
            assert any(o.actuated for o in cls.objects if o.name in p["movers"]), name
    assert used == set(PROBES)  # every probe applies to some task
    assert "persistence" in TASKS["occlusion"].probes and "causality" in TASKS["push"].probes


def test_probes_to_run_keeps_the_requested_order_and_rejects_what_does_not_apply():
    occlusion = task_class("occlusion").probes
    assert probes_to_run(occlusion, ["causality", "fidelity"]) == ["causality", "fidelity"]
    assert probes_to_run(task_class("Reacher-v5").probes) == ["fidelity", "controllability"]
    with pytest.raises(ValueError, match="do not apply"):
        probes_to_run(task_class("reach").probes, ["causality"])
    with pytest.raises(ValueError, match="unknown probe"):
        probes_to_run(occlusion, ["vibes"])
