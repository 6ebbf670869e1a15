"""Learning from episodes without actions: action-free data, labelled fractions, latent actions, pre/post-training.

Tiny datasets and tiny models: these check the machinery (what is stored, what each loss sees, that the
runs save, load, resume and plug into the imagined env), not the quality the label-efficiency curve measures.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from safetensors import safe_open
from safetensors.torch import load_file
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import embodied.envs  # noqa: F401  (registers embodied/Imagined-v0)
from embodied import checkpoint
from embodied.action_free import batches, model_config
from embodied.collect import collect
from embodied.config import PseudoLabelsConfig, load_config
from embodied.data import episode_files, labelled_subset, read_episode, read_episode_header, write_episode
from embodied.dataset import Dataset, WindowSampler
from embodied.envs.imagined import ImaginedEnv
from embodied.errors import UserError
from embodied.load import load_model
from embodied.models import build_model
from embodied.models.latent_actions import LABELLED, LatentActionWorldModel, latent_probe
from embodied.models.null_action import NullActionWorldModel
from embodied.pseudo_labels import LabelRefiner, build, fit, heldout_fit, label
from embodied.train import dataset_spec, lr_at, train

ROOT = Path(__file__).resolve().parents[1]
BASE = [str(ROOT / "configs/reach_recurrent.yaml"), str(ROOT / "configs/debug.yaml")]
TINY = ["model.deter=32", "model.stoch=8", "train.threads=1", "train.batch=2", "train.seq_len=6",
        "train.eval_windows=2", "train.videos=0"]
TINY_LAM = ["latent_actions.channels=8", "latent_actions.hidden=16"]
ENV = {**os.environ, "MUJOCO_GL": "egl", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
LABELLED_EPISODES, FREE_EPISODES = 5, 3

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*observation space (minimum|maximum) value is:UserWarning"),
              pytest.mark.filterwarnings("ignore:.*not having a spec:UserWarning"),
              pytest.mark.filterwarnings("ignore:.*different from the unwrapped version:UserWarning")]


def embodied(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "embodied.cli", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory):
    """Reach: 5 labelled episodes, then 3 action-free ones recorded by `embodied collect --no-actions`."""
    out = tmp_path_factory.mktemp("reach_mixed")
    collect("reach", LABELLED_EPISODES, out, workers=1, progress=False)
    r = embodied("collect", "--task", "reach", "--episodes", FREE_EPISODES, "--workers", 1, "--policy", "random",
                 "--no-actions", "--out", out)
    assert r.returncode == 0, r.stderr
    assert f"{LABELLED_EPISODES + FREE_EPISODES} episodes ({FREE_EPISODES} action-free)" in r.stdout
    return out


def config(data, out, *extra):
    return load_config(BASE, [f"data={data}", f"out={out}", *TINY, *extra])


# ---------------------------------------------------------------------------------------------- data

def test_collect_no_actions_stores_no_actions_and_action_losses_never_see_them(mixed_data):
    free = []
    for path in episode_files(mixed_data):
        meta, shapes = read_episode_header(path)
        if meta.get("actions") == "False":
            free.append(int(meta["seed"]))
            assert "action" not in shapes and shapes["observation.image"][0][0] == int(meta["length"]) + 1
        else:
            assert "action" in shapes and "actions" not in meta
    assert len(free) == FREE_EPISODES
    rows = json.loads((mixed_data / "manifest.json").read_text())["episodes"]
    assert sorted(r["seed"] for r in rows if r.get("actions") is False) == free

    ds = Dataset(mixed_data, task="reach")
    assert sorted(e.seed for e in ds.unlabelled) == free and all(e.actions is None for e in ds.unlabelled)
    assert all(e.labelled for e in ds.train + ds.heldout + ds.episodes)
    assert len(ds.episodes) == LABELLED_EPISODES

    # a sampler for an action loss skips the action-free episodes; given only those, it refuses
    everything = ds.train + ds.unlabelled
    sampler = WindowSampler(everything, 6)
    assert {e.seed for e in sampler.episodes} == {e.seed for e in ds.train}
    batch = sampler.sample(32, np.random.default_rng(0))
    assert batch["actions"].shape == (32, 5, 2) and torch.isfinite(batch["actions"]).all()
    with pytest.raises(UserError, match="none of the 3 episodes has actions") as err:
        WindowSampler(ds.unlabelled, 6)
    assert "\n" not in str(err.value)
    # a frames-only sampler takes every episode and hands out no actions at all
    frames = WindowSampler(everything, 6, actions=False)
    assert len(frames.episodes) == len(everything)
    assert "actions" not in frames.sample(4, np.random.default_rng(0))


def test_action_free_headers_are_checked_and_exports_refuse(mixed_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(mixed_data, data)
    labelled = next(p for p in episode_files(data) if read_episode_header(p)[0].get("actions") != "False")
    arrays, meta = read_episode(labelled)
    meta = {k: v for k, v in meta.items() if k not in ("crc32", "format")}
    write_episode(labelled, arrays, {**meta, "actions": False})  # says action-free, still holds actions
    with pytest.raises(UserError, match="header says actions False .* holds an 'action' array"):
        Dataset(data)
    write_episode(labelled, arrays, {**meta, "actions": "maybe"})
    with pytest.raises(UserError, match="header 'actions' is 'maybe', not True or False"):
        Dataset(data)
    write_episode(labelled, arrays, meta)
    r = embodied("export", "--data", data, "--out", tmp_path / "lerobot")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "3 episodes are action-free" in r.stderr, r.stderr

    only_free = tmp_path / "free"
    collect("reach", 1, only_free, workers=1, progress=False, actions=False)
    with pytest.raises(UserError, match="every episode is action-free"):
        Dataset(only_free)


def test_labelled_fraction_picks_the_same_seeded_subset_every_time(mixed_data):
    a = Dataset(mixed_data, labelled_fraction=0.5)
    b = Dataset(mixed_data, labelled_fraction=0.5)
    full = Dataset(mixed_data)
    assert [e.seed for e in a.train] == [e.seed for e in b.train]
    assert len(a.train) == round(0.5 * len(full.train)) and {e.seed for e in a.train} < {e.seed for e in full.train}
    assert [e.seed for e in a.heldout] == [e.seed for e in full.heldout]  # evaluation keeps its actions
    demoted = {e.seed for e in full.train} - {e.seed for e in a.train}
    assert demoted and demoted <= {e.seed for e in a.unlabelled}
    assert all(e.actions is None for e in a.unlabelled) and len(a.unlabelled) == FREE_EPISODES + len(demoted)
    assert full.train[0].actions is not None  # dropping actions copies the episode, never changes a loaded one
    # the subset is a function of (seeds, fraction, label_seed): exact sizes, nested fractions, another seed differs
    seeds = list(range(100, 300))
    picks = {f: labelled_subset(seeds, f, 0) for f in (0.05, 0.1, 0.25, 1.0)}
    assert [len(p) for p in picks.values()] == [10, 20, 50, 200]
    assert picks[0.05] < picks[0.1] < picks[0.25] < picks[1.0]
    assert labelled_subset(seeds, 0.1, 1) != picks[0.1] and labelled_subset(seeds, 0.1, 0) == picks[0.1]
    assert labelled_subset(seeds[:3], 0.01) and len(labelled_subset(seeds[:3], 0.01)) == 1  # at least one


def test_each_recipe_draws_what_its_losses_need(mixed_data):
    rng = np.random.default_rng
    cfg = config(mixed_data, "unused", "data.labelled_fraction=0.5", "train.pretrain_steps=3")
    ds = Dataset(mixed_data, labelled_fraction=0.5)
    draw, _ = batches(cfg, ds)
    assert "actions" not in draw(4, rng(0), 2) and draw(4, rng(0), 3)["actions"].shape == (4, 5, 2)
    assert model_config(cfg) == {"arch": "null_action", "world": cfg.model}
    cfg = config(mixed_data, "unused", "latent_actions.enabled=true", "latent_actions.steps=3")
    batch = batches(cfg, ds)[0](8, rng(0), 0)
    assert "actions" not in batch and batch[LABELLED + "actions"].shape == (2, 5, 2)
    assert model_config(cfg)["arch"] == "latent_actions" and model_config(cfg)["world"] == cfg.model
    draw, _ = batches(config(mixed_data, "unused"), ds)
    assert draw(4, rng(0), 0)["actions"].shape == (4, 5, 2)
    ds.train += [replace(e, actions=torch.zeros(len(e), 2), inferred=True) for e in ds.unlabelled]
    for share, zeroed in ((0.5, 4), (0.25, 6), (1.0, 0)):  # windows of inferred actions (zeros here) in 8
        cfg = config(mixed_data, "unused", "pseudo_labels.enabled=true", f"pseudo_labels.recorded_share={share}")
        actions = batches(cfg, ds)[0](8, rng(1), 0)["actions"]
        assert int((actions.abs().sum((1, 2)) == 0).sum()) == zeroed, share
    t = cfg.train  # the second phase restarts warm-up and cosine
    t2 = type(t)(**{**vars(t), "steps": 20, "warmup": 2})
    assert lr_at(10, t2, 10) == lr_at(0, t2, 10) == pytest.approx(t2.lr / 2) and lr_at(9, t2, 10) < lr_at(11, t2, 10)


# ---------------------------------------------------------------------------------------------- latent actions

def test_latent_action_codes_separate_the_real_actions(tmp_path):
    """A few dozen steps on frames alone: a linear probe from code to action beats the same probe on shuffled
    actions (a collapsed or action-blind code scores about 0 on both)."""
    data = tmp_path / "push"
    collect("push", 8, data, policy="random", workers=1, progress=False)
    ds = Dataset(data)
    torch.manual_seed(0)
    model = build_model({"arch": "latent_actions", "steps": 10**6, "channels": 8, "hidden": 32,
                         "world": {"arch": "recurrent", "channels": 8, "embed_dim": 16, "deter": 16, "stoch": 4,
                                   "hidden": 16}}, dataset_spec(ds.manifest))
    frames, labelled = WindowSampler(ds.train, 8, actions=False), WindowSampler(ds.train, 8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = latent_probe(model, ds.train, ds.heldout)
    for step in range(80):
        rng = np.random.default_rng(step)
        batch = frames.sample(8, rng) | {LABELLED + k: v for k, v in labelled.sample(2, rng).items()}
        loss, logs = model.loss(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert "lam" in logs and "map" in logs
    after = latent_probe(model, ds.train, ds.heldout)
    assert after["latent.probe_r2"] > 0.1, (before, after)
    assert after["latent.probe_r2"] > after["latent.probe_r2_shuffled"] + 0.1, after
    assert after["latent.probe_r2"] > before["latent.probe_r2"] + 0.1, (before, after)
    assert after["latent.code_std"] > 0.2  # not collapsed


def test_latent_action_run_loads_takes_real_actions_and_passes_the_env_checkers(mixed_data, tmp_path):
    out = tmp_path / "run"
    m = train(config(mixed_data, out, "latent_actions.enabled=true", "latent_actions.steps=3",
                     "latent_actions.code_dim=3", "data.labelled_fraction=0.5", *TINY_LAM), progress=False)
    assert m["recipe"] == "latent_actions" and m["data.unlabelled_episodes"] == FREE_EPISODES + 2
    for key in ("latent.probe_r2", "latent.probe_r2_shuffled", "latent.map_r2", "heldout.psnr_h1"):
        assert isinstance(m[key], float), key
    assert json.loads((out / "metrics.json").read_text())["latent.probe_r2"] == m["latent.probe_r2"]
    saved = checkpoint.read_config(out)
    assert saved["arch"] == "latent_actions" and saved["model"]["world"]["arch"] == "recurrent"
    assert "enabled" not in saved["model"] and not list(out.glob("*.pt")) and not list(out.glob("*.pkl"))
    with safe_open(str(checkpoint.file_path(out, saved, "model.safetensors")), "pt") as f:
        assert any(k.startswith("lam.") for k in f.keys()) and any(k.startswith("to_code.") for k in f.keys())

    model = load_model(out, "reach")
    assert isinstance(model, LatentActionWorldModel)
    assert model.action_dim == 2 and model.world.action_dim == 3  # real actions in, codes inside
    ep = Dataset(mixed_data).heldout[0]
    c = model.max_context
    state = model.encode(ep.frames[None, :c], ep.actions[None, :c - 1], ep.proprio[None, :c])
    a, b = model.step(state, torch.tensor([[1.0, -1.0]])), model.step(state, torch.tensor([[-1.0, 1.0]]))
    assert not torch.equal(model.features(a), model.features(b))  # the real action reaches the dynamics
    _, rewards = model.rollout(state, torch.zeros(3, 4, 2))
    assert rewards.shape == (3, 4)

    env = gym.make("embodied/Imagined-v0", model=model, render_mode="rgb_array")
    check_env(env.unwrapped)
    env.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(ImaginedEnv(model, obs_mode="latent", render_mode="rgb_array"), warn=False)


# ---------------------------------------------------------------------------------------------- pre/post-train

def _weights(run):
    from safetensors.torch import load_file

    return load_file(str(checkpoint.file_path(run, checkpoint.read_config(run), "model.safetensors")))


def test_pretrain_then_posttrain_resumes_after_sigkill(mixed_data, tmp_path):
    extra = ["train.steps=16", "train.pretrain_steps=8", "train.ckpt_every=2", "train.eval_every=1000",
             "data.labelled_fraction=0.5"]
    args = ["train", "--config", BASE[0], "--config", BASE[1], f"data={mixed_data}", *TINY, *extra, "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "embodied.cli", *args, f"out={killed}"], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (killed / "config.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    killed_at = checkpoint.read_config(killed)["step"]
    assert 2 <= killed_at < 16

    r = embodied(*args, f"out={killed}", "--resume")
    assert r.returncode == 0, r.stderr
    assert f"steps {killed_at}->16" in r.stderr and "(+5 without actions)" in r.stderr
    m = json.loads((killed / "metrics.json").read_text())
    assert m["final"] and m["train.resumed_from"] == killed_at and m["recipe"] == "pretrain"

    straight = tmp_path / "straight"
    train(config(mixed_data, straight, *extra), progress=False)
    a, b = _weights(killed), _weights(straight)
    assert a.keys() == b.keys() and "null" in a
    for k in a:  # same batches in both phases, same optimizer state: bit for bit
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert a["null"].abs().sum() > 0  # the null action was learned in pre-training
    model = load_model(straight, "reach")
    assert isinstance(model, NullActionWorldModel) and model.action_dim == 2


# ---------------------------------------------------------------------------------------------- pseudo-labels

def test_inverse_dynamics_learns_the_actions_from_frames(tmp_path):
    """A few hundred steps on five labelled episodes, frames alone: held-out R^2 of the inverse dynamics'
    actions well above 0, where the untrained net scores about 0 or below."""
    data = tmp_path / "push"
    collect("push", 8, data, policy="random", workers=1, progress=False)
    ds = Dataset(data, heldout_fraction=0.25)
    cfg = PseudoLabelsConfig(enabled=True, steps=250, batch=32, channels=8, hidden=32, proprio=False)
    spec = dataset_spec(ds.manifest)
    torch.manual_seed(0)
    untrained = heldout_fit(build(cfg, spec).eval(), ds.heldout)
    model, report = fit(cfg, spec, ds.train, ds.heldout, seed=0, progress=False)
    assert model.proprio is None and build(replace(cfg, proprio=True), spec).proprio is not None
    assert untrained["pseudo_labels.heldout_r2"] < 0.1, untrained
    assert report["pseudo_labels.heldout_r2"] > 0.5, report
    assert report["pseudo_labels.heldout_r2_dim0"] > 0.3 and report["pseudo_labels.heldout_r2_dim1"] > 0.3, report
    actions = label(model, ds.heldout[0])
    assert actions.shape == ds.heldout[0].actions.shape and bool((actions.abs() <= 1).all())


def test_pseudo_label_run_trains_on_every_episode_and_resumes_without_refitting(mixed_data, tmp_path, capsys):
    out = tmp_path / "run"
    extra = ["pseudo_labels.enabled=true", "pseudo_labels.steps=5", "pseudo_labels.channels=4",
             "pseudo_labels.hidden=8", "data.labelled_fraction=0.5", "train.steps=4", "train.ckpt_every=2"]
    m = train(config(mixed_data, out, *extra), progress=False)
    assert "fitting inverse dynamics on 2 labelled episodes to label 5 without actions" in capsys.readouterr().err
    assert m["recipe"] == "pseudo_labels" and m["data.unlabelled_episodes"] == FREE_EPISODES + 2
    assert m["data.labelled_episodes"] == 2 and isinstance(m["pseudo_labels.heldout_r2"], float)
    weights = (out / "inverse_dynamics.safetensors").read_bytes()
    assert json.loads((out / "inverse_dynamics.json").read_text())["pseudo_labels.labelled_episodes"] == 2
    assert checkpoint.read_config(out)["arch"] == "recurrent"  # a plain world model: no wrapper to load

    m = train(config(mixed_data, out, *extra[:-2], "train.steps=6", "train.ckpt_every=2"), resume=True,
              progress=False)
    assert "fitting" not in capsys.readouterr().err and m["train.resumed_from"] == 4
    assert (out / "inverse_dynamics.safetensors").read_bytes() == weights
    assert m["pseudo_labels.heldout_r2"] == json.loads((out / "inverse_dynamics.json").read_text())[
        "pseudo_labels.heldout_r2"]
    with pytest.raises(UserError, match="does not fit pseudo_labels.channels=6"):
        train(config(mixed_data, out, *extra[:-2], "pseudo_labels.channels=6", "train.steps=8"), resume=True,
              progress=False)
    labelled = tmp_path / "all_labelled"
    collect("reach", 2, labelled, workers=1, progress=False)
    with pytest.raises(UserError, match="nothing to label"):
        train(config(labelled, tmp_path / "run2", "pseudo_labels.enabled=true", "pseudo_labels.steps=2"),
              progress=False)


def test_refined_labels_move_are_checkpointed_and_resume(mixed_data, tmp_path):
    """pseudo_labels.refine_lr: the world model's loss moves the inferred actions in the second half of training
    (not before); each checkpoint holds them and their Adam moments, a resumed run refines them as the
    uninterrupted run does, bit for bit, and other episodes are refused."""
    out = tmp_path / "run"
    extra = ["pseudo_labels.enabled=true", "pseudo_labels.steps=5", "pseudo_labels.channels=4",
             "pseudo_labels.hidden=8", "data.labelled_fraction=0.5", "pseudo_labels.refine_lr=0.05",
             "train.ckpt_every=2"]
    train(config(mixed_data, out, *extra, "train.steps=4"), progress=False)  # refines from step 2
    ds = Dataset(mixed_data, labelled_fraction=0.5)
    idm = build(config(mixed_data, out, *extra).pseudo_labels, dataset_spec(ds.manifest)).eval()
    idm.load_state_dict(load_file(str(out / "inverse_dynamics.safetensors")))
    inferred = {str(e.seed): label(idm, e) for e in ds.unlabelled}
    saved = checkpoint.load_arrays(out)
    refined = {k: v for k, v in saved.items() if "." not in k}
    assert refined.keys() == inferred.keys() and len(refined) == FREE_EPISODES + 2
    moments = [k for k in refined if f"{k}.step" in saved]  # an episode no batch has reached yet has none
    assert moments and all(0 < float(saved[f"{k}.step"]) <= 2 for k in moments)
    assert all(saved[f"{k}.exp_avg"].shape == saved[f"{k}.exp_avg_sq"].shape == refined[k].shape for k in moments)
    moved = max(float((refined[k] - inferred[k]).abs().max()) for k in refined)
    assert 0.01 < moved <= 2 * 0.05 + 1e-3  # two Adam steps of at most ~lr each
    assert all(bool((a.abs() <= 1).all()) for a in refined.values())

    train(config(mixed_data, out, *extra, "train.steps=6"), resume=True, progress=False)  # refines steps 4, 5
    again = checkpoint.load_arrays(out)
    assert max(float((again[k] - refined[k]).abs().max()) for k in refined) <= 2 * 0.05 + 1e-3
    assert max(float((again[k] - inferred[k]).abs().max()) for k in refined) > moved  # went on from the checkpoint

    fewer = config(mixed_data, out, *extra, "train.steps=8", "data.max_episodes=7")
    with pytest.raises(UserError, match="refined actions .5 episodes. are not those of the 4 inferred now"):
        train(fewer, resume=True, progress=False)


class _Stopped(Exception):
    pass


def test_an_interrupted_refinement_resumes_bit_for_bit(mixed_data, tmp_path, monkeypatch):
    """A run stopped after its step-4 checkpoint and resumed ends with the refined actions and Adam moments of
    the run that was never stopped."""
    extra = ["pseudo_labels.enabled=true", "pseudo_labels.steps=5", "pseudo_labels.channels=4",
             "pseudo_labels.hidden=8", "data.labelled_fraction=0.5", "pseudo_labels.refine_lr=0.05",
             "train.ckpt_every=2", "train.steps=6"]  # refines from step 3
    whole = tmp_path / "uninterrupted"
    train(config(mixed_data, whole, *extra), progress=False)
    expected = checkpoint.load_arrays(whole)
    assert any(k.endswith(".exp_avg") for k in expected)

    out = tmp_path / "stopped"
    step = LabelRefiner.step

    def stop_at_4(self, i):
        if i == 4:
            raise _Stopped
        step(self, i)

    monkeypatch.setattr(LabelRefiner, "step", stop_at_4)
    with pytest.raises(_Stopped):
        train(config(mixed_data, out, *extra), progress=False)
    monkeypatch.setattr(LabelRefiner, "step", step)
    assert checkpoint.read_config(out)["step"] == 4
    train(config(mixed_data, out, *extra), resume=True, progress=False)
    resumed = checkpoint.load_arrays(out)
    assert resumed.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(v, resumed[k]), k


def test_refinement_with_several_processes_is_refused_before_any_fitting(mixed_data, tmp_path, monkeypatch):
    """Each torchrun rank would refine its own shard of the labels: one line, before minutes of inverse
    dynamics are spent (the process group itself is stood in for)."""
    monkeypatch.setattr("embodied.train._setup_distributed", lambda device: (0, 2, torch.device("cpu")))
    out = tmp_path / "run"
    with pytest.raises(UserError, match="refine_lr refines the inferred actions in one process") as err:
        train(config(mixed_data, out, "pseudo_labels.enabled=true", "pseudo_labels.steps=5",
                     "data.labelled_fraction=0.5", "train.batch=4"), progress=False)
    assert "\n" not in str(err.value) and not out.exists()


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("overrides, expected", [
    (["data.labelled_fraction=0"], "data.labelled_fraction = 0.0 .* must be more than 0 and at most 1"),
    (["data.labelled_fraction=1.5"], "data.labelled_fraction = 1.5 .* must be more than 0 and at most 1"),
    (["data.label_seed=-1"], "data.label_seed = -1 .* must be 0 or more"),
    (["train.pretrain_steps=6"], "train.pretrain_steps = 6 .* less than 6"),
    (["latent_actions.enabled=true"], "latent_actions.steps = 1000 .* less than 6"),
    (["latent_actions.enabled=true", "latent_actions.steps=2", "latent_actions.noise=-1"],
     "latent_actions.noise = -1.0 .* must be 0 or more"),
    (["latent_actions.enabled=true", "latent_actions.steps=2", "train.pretrain_steps=2"], "pick one"),
    (["pseudo_labels.enabled=true", "train.pretrain_steps=2"], "pick one"),
    (["pseudo_labels.enabled=true", "pseudo_labels.steps=0"], "pseudo_labels.steps = 0 .* at least 1"),
    (["pseudo_labels.enabled=true", "rounds.rounds=1"], "on-policy rounds"),
    (["latent_actions.enabled=true", "latent_actions.steps=2", "rounds.rounds=1"], "on-policy rounds"),
    (["latent_actions.nosie=0.1"], "unknown config key 'latent_actions.nosie'.*did you mean latent_actions.noise"),
    (["latent_actions.enabled=maybe"], "latent_actions.enabled = 'maybe' .* must be true/false"),
])
def test_bad_values_are_one_line_errors(overrides, expected):
    with pytest.raises(UserError, match=expected) as err:
        load_config(BASE, ["data=d", "out=o", *overrides])
    assert "\n" not in str(err.value)


def test_bad_values_exit_2_from_the_command(mixed_data, tmp_path):
    r = embodied("train", "--config", BASE[0], "--config", BASE[1], f"data={mixed_data}", f"out={tmp_path / 'a'}",
                 "data.labelled_fraction=2")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "data.labelled_fraction = 2" in r.stderr, r.stderr
    r = embodied("train", "--config", BASE[0], "--config", BASE[1], f"data={mixed_data}", f"out={tmp_path / 'b'}",
                 "model.arch=latent_actions")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "built by a recipe" in r.stderr, r.stderr
