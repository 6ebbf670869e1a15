"""Ranking policies in imagination (`embodied policy rank`, embodied.policies.rank).

The statistics on rankings whose answers are known by hand, the bootstrap's intervals (seeded, around the
estimate), policy names, and the command end to end: random and the noisy expert (and an SB3 snapshot) run in
MuJoCo and in a tiny reach model's imagination from the same start states; rank.json, scatter.png, rank.html.
"""
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from embodied.errors import UserError
from embodied.policies.policy_spec import parse_policies, parse_policy
from embodied.policies.rank import success_from_objects
from embodied.policies.rank_stats import (bootstrap_ci, pairwise_agreement, pearson, ranking_stats, spearman,
                                          top1_agreement)

ROOT = Path(__file__).resolve().parents[1]


# ---- the statistics ---------------------------------------------------------------------------------------------

def test_correlations_on_known_rankings():
    real = [0.1, 0.4, 0.5, 0.9]
    assert spearman(real, [1, 2, 3, 4]) == pytest.approx(1.0)
    assert spearman(real, [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman(real, np.exp(np.array(real) * 10)) == pytest.approx(1.0)  # any monotone map: rank 1 ...
    assert pearson(real, np.exp(np.array(real) * 10)) < 0.95                  # ... but not linear
    assert pearson(real, [2 * r + 1 for r in real]) == pytest.approx(1.0)
    assert pearson(real, [1, 3, 2, 4]) == pytest.approx(np.corrcoef(real, [1, 3, 2, 4])[0, 1])
    assert spearman(real, [1, 3, 2, 4]) == pytest.approx(0.8)  # one swapped neighbour pair: 1 - 6*2/(4*15)
    assert np.isnan(spearman([0.5, 0.5, 0.5], [1, 2, 3])) and np.isnan(pearson([1, 2, 3], [7, 7, 7]))
    with pytest.raises(ValueError, match="one of each per policy"):
        spearman([1, 2], [1, 2, 3])


def test_pairwise_and_top1_agreement_by_hand():
    # 6 pairs; imagination swaps only the middle two
    assert pairwise_agreement([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(5 / 6)
    assert pairwise_agreement([1, 2, 3, 4], [4, 3, 2, 1]) == 0.0
    # a pair tied in reality is skipped; a pair tied in imagination counts one half
    assert pairwise_agreement([1, 1, 2], [3, 1, 2]) == pytest.approx(0.5)   # (0,2) wrong, (1,2) right
    assert pairwise_agreement([1, 2, 3], [5, 5, 6]) == pytest.approx((0.5 + 1 + 1) / 3)
    assert np.isnan(pairwise_agreement([1, 1], [1, 2]))
    assert top1_agreement([0.1, 0.9, 0.5], [0.2, 0.8, 0.3]) == 1.0
    assert top1_agreement([0.1, 0.9, 0.5], [0.2, 0.3, 0.8]) == 0.0
    assert top1_agreement([0.1, 0.9, 0.5], [0.8, 0.8, 0.3]) == 0.5          # a tie at the top: half right
    assert top1_agreement([0.9, 0.9, 0.5], [0.8, 0.1, 0.3]) == 1.0          # a real tie: either is best


def test_bootstrap_intervals_are_seeded_and_hold_the_estimate():
    rng = np.random.default_rng(0)
    quality = np.linspace(0, 1, 6)[:, None]
    real = quality + 0.3 * rng.standard_normal((6, 30))
    imagined = 0.5 * quality + 0.3 * rng.standard_normal((6, 30))
    for name, fn in (("spearman", spearman), ("pearson", pearson), ("pairwise", pairwise_agreement),
                     ("top1", top1_agreement)):
        point = fn(real.mean(1), imagined.mean(1))
        lo, hi = bootstrap_ci(real, imagined, fn, samples=300, seed=1)
        assert lo <= point <= hi, (name, lo, point, hi)
        assert (lo, hi) == bootstrap_ci(real, imagined, fn, samples=300, seed=1)  # the same seed, the same interval
    assert bootstrap_ci(real, imagined, spearman, 300, seed=2) != bootstrap_ci(real, imagined, spearman, 300, seed=1)
    narrow = bootstrap_ci(real, imagined, spearman, 300, level=0.5)
    wide = bootstrap_ci(real, imagined, spearman, 300, level=0.99)
    assert wide[0] <= narrow[0] and narrow[1] <= wide[1]
    stats = ranking_stats(real, imagined, samples=100)
    assert set(stats) == {"spearman", "pearson", "top1", "pairwise"}
    assert stats["spearman"]["ci"][0] <= stats["spearman"]["value"] <= stats["spearman"]["ci"][1]
    flat = ranking_stats(np.zeros((3, 4)), imagined[:3, :4], samples=50)  # every real value tied: undefined
    assert flat["spearman"] == {"value": None, "ci": [None, None]} and flat["pairwise"]["value"] is None


def test_policy_names(tmp_path):
    assert parse_policy("random").kind == "random"
    s = parse_policy("scripted:0.3")
    assert (s.kind, s.noise, s.label) == ("scripted", 0.3, "scripted:0.3")
    assert parse_policy("scripted").noise == 0.0
    assert [p.label for p in parse_policies(["random", "random", "scripted:0"])] == ["random", "random#2", "scripted:0"]
    for bad, message in (("scripted:-1", "must be a number >= 0"), ("scripted:lots", "must be a number"),
                         (str(tmp_path / "missing"), "no such folder"), (str(tmp_path), "no policy.zip")):
        with pytest.raises(UserError, match=message):
            parse_policy(bad)
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    (run / "snapshots" / "policy_400_steps.zip").write_bytes(b"")
    (run / "policy.json").write_text(json.dumps({"algo": "sac", "observations": "readout", "model": "m",
                                                 "config": {"obs": "readout", "history": "context"}}))
    snap = parse_policy(str(run / "snapshots" / "policy_400_steps.zip"))
    assert (snap.label, snap.kind, snap.algo, snap.obs, snap.history) == ("run@400", "sb3", "sac", "readout", "context")
    (run / "policy.json").write_text(json.dumps({"algo": "sac", "observations": "state"}))
    with pytest.raises(UserError, match="true simulator state"):
        parse_policy(str(run / "snapshots" / "policy_400_steps.zip"))


def test_imagined_success_from_object_positions():
    from embodied.envs.registry import make_task

    push = make_task("push", obs_type="state")
    assert success_from_objects(push, {"pusher": [0.2, 0.2], "block": [0.0, 0.0], "goal": [0.01, 0.0]}) is True
    assert success_from_objects(push, {"pusher": [0.2, 0.2], "block": [0.0, 0.0], "goal": [0.2, 0.0]}) is False
    assert success_from_objects(push, {"block": [0.0, 0.0]}) is None  # the rule would read more than it is given


# ---- the command end to end -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reach_run(tmp_path_factory):
    """A tiny reach model trained for a few steps on a few collected episodes (a real run folder)."""
    from embodied.collect import collect
    from embodied.config import load_config
    from embodied.train import train

    root = tmp_path_factory.mktemp("rank")
    collect("reach", 4, root / "data", workers=1, progress=False)
    before = torch.get_num_threads()
    cfg = load_config([ROOT / "configs/reach_recurrent.yaml", ROOT / "configs/debug.yaml"],
                      [f"data={root / 'data'}", f"out={root / 'run'}", "model.deter=32", "model.stoch=8",
                       "model.object_weight=10", "train.threads=1", "train.batch=2", "train.seq_len=6",
                       "train.eval_windows=2", "train.videos=0", "train.steps=3"])
    train(cfg, progress=False)
    torch.set_num_threads(before)
    return root / "run"


def _sac_snapshots(run_dir, folder: Path) -> list[str]:
    """A few SAC steps in imagination with `--save-every`: the snapshots along training, listed in policy.json."""
    from embodied.cli import main

    assert main(["policy", "train", "--task", "reach", "--model", str(run_dir), "--steps", "48", "--save-every", "24",
                 "--num-envs", "4", "--eval-episodes", "1", "--videos", "0", "--horizon", "4", "--out", str(folder),
                 "--no-progress", "sac.batch_size=16", "sac.net_arch=[16]", "sac.learning_starts=8"]) == 0
    snapshots = json.loads((folder / "policy.json").read_text())["snapshots"]
    assert [Path(s).name for s in snapshots] == ["policy_24_steps.zip", "policy_48_steps.zip"]
    assert all(Path(s).is_file() for s in snapshots)
    return snapshots


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def test_policy_rank_end_to_end(reach_run, tmp_path, capsys):
    from embodied.cli import main

    snapshot = _sac_snapshots(reach_run, tmp_path / "sac")[0]
    capsys.readouterr()
    out = tmp_path / "rank"
    assert main(["policy", "rank", "--task", "reach", "--model", str(reach_run), "--episodes", "2", "--horizon", "15",
                 "--bootstrap", "50", "--out", str(out), "--no-progress",
                 "--policies", "random", "scripted:0", "scripted:0.6", snapshot]) == 0
    assert "reach: 4 policies x 2 episodes" in capsys.readouterr().out
    r = json.loads((out / "rank.json").read_text())
    assert r["format"] == "embodied-rank/1" and r["task"] == "reach" and r["episodes"] == 2 and r["steps"] == 15
    assert [p["label"] for p in r["policies"]] == ["random", "scripted:0", "scripted:0.6", "sac@24"]
    assert r["policies"][3]["policy"]["algo"] == "sac" and r["policies"][3]["policy"]["obs"] == "readout"
    assert r["seeds"] == [10000, 10001] and r["factors"] == {} and r["imagined_success_from"] == "model"
    for p in r["policies"]:
        for world in ("real", "imagined"):
            assert 0.0 <= p[world]["success_rate"] <= 1.0 and np.isfinite(p[world]["return_mean"])
            assert [e["seed"] for e in p["per_episode"][world]] == r["seeds"]  # the same start states
            assert all(e["steps"] == 15 for e in p["per_episode"][world])
    expert, noisy, rand = (next(p for p in r["policies"] if p["label"] == k) for k in ("scripted:0", "scripted:0.6",
                                                                                       "random"))
    assert expert["real"]["return_mean"] > rand["real"]["return_mean"]  # the real task knows the expert is better
    assert noisy["policy"]["noise"] == 0.6
    for metric in ("success", "return"):
        assert set(r["statistics"][metric]) == {"spearman", "pearson", "top1", "pairwise"}
        for s in r["statistics"][metric].values():
            assert set(s) == {"value", "ci"} and len(s["ci"]) == 2
    assert r["command"].startswith("embodied policy rank --task reach") and r["bootstrap"]["samples"] == 50
    png = (out / "scatter.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = _Page()
    page.feed((out / "rank.html").read_text())
    assert "table" in page.tags and page.images == ["scatter.png"] and (out / page.images[0]).exists()
    text = " ".join(page.text)
    assert all(label in text for label in ("random", "scripted:0.6", "sac@24", "spearman", "pairwise"))
