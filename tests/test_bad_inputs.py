"""A battery of bad inputs and faults across every subcommand and the Python API.

Each case is one row of a table. A command-line case runs ``embodied.cli.main``
in-process and must exit 2 with ONE line on stderr (argparse's usage lines
aside) that names the bad input and says how to fix it, never a traceback;
an API case must raise the documented exception with a one-line message
that names the input. Every case also checks that nothing on disk was lost:
the shared fixtures (a dataset, a run, earlier results, bad datasets and
runs) are byte for byte what they were before. A few cases run as real
processes to prove "no traceback" at the process level.

The fixtures are tiny (a four-episode reach dataset, a randomly initialised
recurrent model) and made once per module. ``OWNER`` in each row names the
part of the code that holds the check (see the issue's note).
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import errno
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import embodied.envs  # noqa: F401  (registers embodied/Imagined-v0)
from embodied.config import load_config
from embodied.envs.registry import make_task

ROOT = Path(__file__).resolve().parents[1]
CFG = f"--config {ROOT}/configs/reach_recurrent.yaml --config {ROOT}/configs/debug.yaml"
TRAIN = f"train {CFG} data={{data}} out={{new}} train.threads=1"
PLAN = "plan --task reach --model mujoco --episodes 1 --max-steps 2 --samples 8 --iterations 1 --videos 0"
POLICY = "policy train --task reach --model {run} --steps 8 --num-envs 1 --eval-episodes 1 --videos 0 --no-progress"
VALIDATE = "validate --task reach --model mujoco --quick --no-media --probes fidelity"
IMAGINED = "embodied/Imagined-v0"
# a message says how to fix the input: one of these words
FIX = re.compile(r"\b(must|pass|use|set|choose|delete|re-?run|re-?train|fix|give|remove|add|lower|make|restore|"
                 r"resume|leave|change|free|pick|try|expected|needs?|rename|did you mean|one of|valid|create|"
                 r"train one|collect)\b", re.IGNORECASE)
TINY_MODEL = {"arch": "recurrent", "channels": 8, "embed_dim": 32, "deter": 32, "stoch": 8, "hidden": 32,
              "proprio_embed": 8}

# ---------------------------------------------------------------------------------------------
# the command-line cases: (id, owner, argv with {placeholders}, what the message must name)
# a name is a string or a tuple of alternatives; names are matched case-insensitively
# ---------------------------------------------------------------------------------------------
CLI = [
    # collect
    ("collect-size-0", "collect", "collect --task reach --episodes 1 --size 0 --out {new}", ["size"]),
    ("collect-seed-negative", "collect", "collect --task reach --episodes 1 --seed -5 --out {new}", ["seed"]),
    ("collect-workers-0", "collect", "collect --task reach --episodes 1 --workers 0 --out {new}", ["workers"]),
    ("collect-episodes-0", "collect", "collect --task reach --episodes 0 --out {new}", ["episodes"]),
    ("collect-out-is-a-file", "collect", "collect --task reach --episodes 1 --out {file}", ["{file}"]),
    ("collect-out-read-only", "collect", "collect --task reach --episodes 1 --out {ro}/data", ["{ro}"]),
    ("collect-unknown-task", "collect", "collect --task nosuch --episodes 1 --out {new}", ["nosuch"]),
    ("collect-other-task-into-dataset", "collect", "collect --task push --episodes 1 --out {data}",
     [("reach", "push")]),
    ("collect-bad-size-into-dataset", "collect", "collect --task reach --episodes 1 --size 0 --out {data}", ["size"]),
    # train: numbers, types and keys of the config
    ("train-threads-negative", "inputs", TRAIN + " train.threads=-1", ["train.threads"]),
    ("train-seq-len-1", "inputs", TRAIN + " train.seq_len=1", ["train.seq_len"]),
    ("train-seed-negative", "inputs", TRAIN + " train.seed=-5", ["train.seed"]),
    ("train-warmup-negative", "inputs", TRAIN + " train.warmup=-1", ["train.warmup"]),
    ("train-lr-nan", "inputs", TRAIN + " train.lr=.nan", ["train.lr"]),
    ("train-lr-zero", "inputs", TRAIN + " train.lr=0", ["train.lr"]),
    ("train-steps-text", "inputs", TRAIN + " train.steps=many", ["train.steps"]),
    ("train-unknown-key", "inputs", TRAIN + " train.stepz=5", ["train.stepz"]),
    ("train-min-lr-ratio-2", "inputs", TRAIN + " train.min_lr_ratio=2", ["train.min_lr_ratio"]),
    ("data-max-episodes-negative", "inputs", TRAIN + " data.max_episodes=-1", ["data.max_episodes"]),
    ("data-max-episodes-0", "inputs", TRAIN + " data.max_episodes=0", ["data.max_episodes"]),
    ("data-heldout-1.5", "inputs", TRAIN + " data.heldout_fraction=1.5", ["data.heldout_fraction"]),
    ("model-hidden-0", "inputs", TRAIN + " model.hidden=0", ["model.hidden"]),
    ("model-deter-negative", "inputs", TRAIN + " model.deter=-3", ["model.deter"]),
    ("model-hidden-text", "inputs", TRAIN + " model.hidden=wide", ["model.hidden"]),
    ("model-unknown-key", "inputs", TRAIN + " model.hiden=5", ["model.hiden"]),
    ("model-unknown-arch", "inputs", TRAIN + " model.arch=lstm", ["lstm"]),
    ("model-dropout-2", "inputs", TRAIN + " model.proprio_dropout=2", ["model.proprio_dropout"]),
    ("model-window-1", "inputs", TRAIN + " model.arch=transformer model.window=1", ["model.window"]),
    ("model-heads-do-not-divide", "inputs", TRAIN + " model.arch=transformer model.d_model=30", ["model.d_model"]),
    ("model-slots-position-input", "inputs", f"train --config {ROOT}/configs/reach_slots.yaml data={{data}} "
     "out={new} model.position_input=walls", ["model.position_input"]),
    ("model-slots-shapes-without-solid", "inputs", f"train --config {ROOT}/configs/reach_slots.yaml data={{data}} "
     "out={new} model.shapes=true", ["model.solid"]),
    ("config-missing-file", "inputs", "train --config {missing}.yaml data={data} out={new}", ["{missing}.yaml"]),
    ("config-not-yaml", "inputs", "train --config {badyaml} data={data} out={new}", ["{badyaml}"]),
    ("train-data-missing", "collect", f"train {CFG} data={{missing}} out={{new}}", ["{missing}"]),
    ("train-out-is-a-file", "inputs", f"train {CFG} data={{data}} out={{file}}", ["{file}"]),
    ("train-out-read-only", "inputs", f"train {CFG} data={{data}} out={{ro}}/run", ["{ro}"]),
    ("train-into-existing-run", "lead", f"train {CFG} data={{data}} out={{run}}", ["--resume"]),
    ("train-resume-bad-config-keeps-run", "inputs", f"train {CFG} --resume data={{data}} out={{run}} train.seq_len=1",
     ["train.seq_len"]),
    ("train-resume-corrupt-checkpoint", "lead", f"train {CFG} --resume data={{data}} out={{run_corrupt_config}}",
     ["config.json"]),
    # train: datasets that are not what their manifest says
    ("dataset-manifest-is-a-list", "collect", TRAIN.replace("{data}", "{bad_manifest_list}"), ["manifest.json"]),
    ("dataset-manifest-without-episodes", "collect", TRAIN.replace("{data}", "{bad_manifest_no_episodes}"),
     ["manifest.json", "episodes"]),
    ("dataset-manifest-not-json", "collect", TRAIN.replace("{data}", "{bad_manifest_not_json}"), ["manifest.json"]),
    ("dataset-manifest-spec-mismatch", "collect", TRAIN.replace("{data}", "{bad_manifest_action_dim}"),
     ["action"]),
    ("dataset-frames-32x32", "collect", TRAIN.replace("{data}", "{bad_frames_32}"),
     ["ep_000001", ("observation.image", "image", "frame")]),
    ("dataset-actions-3-wide", "collect", TRAIN.replace("{data}", "{bad_actions_3_wide}"), ["ep_000001", "action"]),
    ("dataset-action-key-missing", "collect", TRAIN.replace("{data}", "{bad_no_action}"), ["ep_000001", "action"]),
    ("dataset-51-frames-30-actions", "collect", TRAIN.replace("{data}", "{bad_frames_vs_actions}"),
     ["ep_000001", "action"]),
    ("dataset-float-images", "collect", TRAIN.replace("{data}", "{bad_float_images}"),
     ["ep_000001", ("observation.image", "image", "uint8")]),
    ("dataset-nan-actions", "collect", TRAIN.replace("{data}", "{bad_nan_actions}"),
     ["ep_000001", "action", ("nan", "finite")]),
    ("dataset-episode-truncated", "collect", TRAIN.replace("{data}", "{bad_episode_truncated}"), ["ep_000001"]),
    # plan
    ("plan-horizon-negative", "inputs", PLAN + " --horizon -1 --out {new}", ["horizon"]),
    ("plan-horizon-too-large", "inputs", PLAN + " --horizon 1000000000 --out {new}", ["horizon"]),
    ("plan-samples-0", "inputs", PLAN.replace("--samples 8", "--samples 0") + " --out {new}", ["samples"]),
    ("plan-episodes-0", "inputs", PLAN.replace("--episodes 1", "--episodes 0") + " --out {new}", ["episodes"]),
    ("plan-seed-negative", "inputs", PLAN + " --seed -5 --out {new}", ["seed"]),
    ("plan-torch-threads-negative", "inputs", PLAN + " --torch-threads -1 --out {new}", ["threads"]),
    ("plan-replan-every-0", "inputs", PLAN + " --replan-every 0 --out {new}", ["replan_every"]),
    ("plan-max-steps-0", "inputs", PLAN.replace("--max-steps 2", "--max-steps 0") + " --out {new}", ["max_steps"]),
    ("plan-control-hz-negative", "inputs", PLAN + " --control-hz -1 --out {new}", ["control_hz"]),
    ("plan-temperature-0", "inputs", PLAN + " --out {new} planner.temperature=0", ["temperature"]),
    ("plan-unknown-key", "inputs", PLAN + " --out {new} planner.horizn=3", ["planner.horizn"]),
    ("plan-unknown-planner", "inputs", PLAN + " --planner nosuch --out {new}", ["nosuch"]),
    ("plan-unknown-task", "inputs", PLAN.replace("reach", "nosuch") + " --out {new}", ["nosuch"]),
    ("plan-out-is-a-file", "inputs", PLAN + " --out {file}", ["{file}"]),
    ("plan-out-read-only", "inputs", PLAN + " --out {ro}/plan", ["{ro}"]),
    ("plan-record-is-a-file", "inputs", PLAN + " --out {new} --record {file}", ["{file}"]),
    ("plan-bad-input-keeps-results", "inputs", PLAN + " --horizon -1 --out {prior}", ["horizon"]),
    ("plan-model-missing", "inputs", PLAN.replace("mujoco", "{missing}") + " --out {new}", ["{missing}"]),
    ("plan-checkpoint-of-other-task", "lead", PLAN.replace("reach --model mujoco", "push --model {run}")
     + " --out {new}", ["reach", "push"]),
    ("plan-corrupt-checkpoint-config", "lead", PLAN.replace("mujoco", "{run_corrupt_config}") + " --out {new}",
     ["config.json"]),
    ("plan-oracle-cannot-score-pusher", "gym", PLAN.replace("reach", "Pusher-v5") + " --out {new}", ["Pusher-v5"]),
    ("plan-truncated-weights", "lead", PLAN.replace("mujoco", "{run_truncated_weights}") + " --out {new}",
     [("model", "safetensors")]),
    # policy
    ("policy-steps-negative", "inputs", POLICY.replace("--steps 8", "--steps -1") + " --out {new}", ["steps"]),
    ("policy-horizon-negative", "inputs", POLICY + " --horizon -1 --out {new}", ["horizon"]),
    ("policy-num-envs-0", "inputs", POLICY.replace("--num-envs 1", "--num-envs 0") + " --out {new}", ["num_envs"]),
    ("policy-seed-negative", "inputs", POLICY + " --seed -5 --out {new}", ["seed"]),
    ("policy-lr-0", "inputs", POLICY + " --lr 0 --out {new}", ["learning_rate"]),
    ("policy-gamma-2", "inputs", POLICY + " --gamma 2 --out {new}", ["gamma"]),
    ("policy-reward-scale-nan", "inputs", POLICY + " --reward-scale nan --out {new}", ["reward_scale"]),
    ("policy-batch-size-0", "inputs", POLICY + " --out {new} sac.batch_size=0", ["sac.batch_size"]),
    ("policy-no-model", "inputs", POLICY.replace("--model {run} ", "") + " --out {new}", ["--model"]),
    ("policy-model-missing", "inputs", POLICY.replace("{run}", "{missing}") + " --out {new}", ["{missing}"]),
    ("policy-checkpoint-of-other-task", "lead", POLICY.replace("reach", "push") + " --out {new}", ["reach", "push"]),
    ("policy-out-is-a-file", "inputs", POLICY + " --out {file}", ["{file}"]),
    # validate and compare
    ("validate-seed-negative", "inputs", VALIDATE + " --seed -5 --out {new}", ["seed"]),
    ("validate-unknown-probe", "inputs", VALIDATE.replace("fidelity", "nosuch") + " --out {new}", ["nosuch"]),
    ("validate-probe-not-for-task", "inputs", VALIDATE.replace("fidelity", "persistence") + " --out {new}",
     ["persistence"]),
    ("validate-model-missing", "inputs", VALIDATE.replace("mujoco", "{missing}") + " --out {new}", ["{missing}"]),
    ("validate-checkpoint-of-other-task", "lead", VALIDATE.replace("reach --model mujoco", "push --model {run}")
     + " --out {new}", ["reach", "push"]),
    ("validate-out-is-a-file", "inputs", VALIDATE + " --out {file}", ["{file}"]),
    ("compare-second-model-missing", "inputs", "compare {run} {missing} --task reach --quick --out {new}",
     ["{missing}"]),
    ("compare-second-model-other-task", "inputs", "compare mujoco {run} --task push --quick --out {new}",
     ["reach", "push"]),
    ("compare-out-is-a-file", "inputs", "compare mujoco --task reach --quick --out {file}", ["{file}"]),
    ("compare-no-models", "inputs", "compare --task reach --quick --out {new}", ["models"]),
    # bench and demo
    ("bench-workers-0", "inputs", "bench --quick --workers 0 --out {new}", ["workers"]),
    ("bench-threads-negative", "inputs", "bench --quick --threads -1 --out {new}", ["threads"]),
    ("bench-unknown-task", "inputs", "bench --quick --task nosuch --out {new}", ["nosuch"]),
    ("bench-out-is-a-file", "inputs", "bench --quick --out {file}", ["{file}"]),
    ("demo-out-is-a-file", "inputs", "demo --task reach --out {file}", ["{file}"]),
    ("demo-unknown-task", "inputs", "demo --task nosuch --out {new}", ["nosuch"]),
]

# command lines that must succeed (a sensible outcome, not an error)
SENSIBLE = [
    ("plan-gymnasium-pusher", "gym", ("plan --task Pusher-v5 --model copy_last --episodes 1 --max-steps 2 --samples 8 "
                                      "--iterations 1 --horizon 3 --videos 0 --no-progress --out {new}")),
]

# a manifest that disagrees with the episode files beside it (a killed collect, a deleted file) is reconciled:
# train says so in one line naming manifest.json and uses every episode the folder holds, no file is lost
# (id, owner, dataset placeholder, episode files left)
RECONCILED = [
    ("dataset-manifest-lists-fewer-episodes", "collect", "bad_manifest_fewer", 4),
    ("dataset-episode-file-missing", "collect", "bad_episode_missing", 3),
]


# ---------------------------------------------------------------------------------------------
# the Python API cases: (id, owner, call(world), exception type, what the message must name)
# ---------------------------------------------------------------------------------------------
def _reset_with(world, **context):
    env = gym.make(IMAGINED, model=world["run"])
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    env.reset(seed=0, options={"context": {"frames": frames, **context}})


def _set_state(value_of):
    env = make_task("reach")
    env.reset(seed=0)
    try:
        env.set_state(value_of(np.asarray(env.get_state(), dtype=np.float64)))
    finally:
        env.close()


def _build(**cfg):
    from embodied.models import build_model

    return build_model({**TINY_MODEL, **cfg}, {"task": "reach", "image_size": 64, "action_dim": 2, "proprio_dim": 5})


def _step_task(action):
    env = make_task("reach")
    env.reset(seed=0)
    try:
        env.step(action)
    finally:
        env.close()


def _load_config(*overrides):
    return load_config([ROOT / "configs/reach_recurrent.yaml"], ["data=d", "out=o", *overrides])


def _load_model(spec, task="reach"):
    from embodied.load import load_model

    return load_model(spec, task)


def _dataset(path):
    from embodied.dataset import Dataset

    return Dataset(path)


def _latent_wrapper(world, size):
    from embodied.envs.imagined import LatentObservation

    LatentObservation(make_task("reach", obs_type="pixels_proprio", width=size, height=size), world["run"])


def _imagined_step(world, action):
    env = gym.make(IMAGINED, model=world["run"])
    env.reset(seed=0)
    env.step(action)


API = [
    ("make-reach-width-0", "gym", lambda w: gym.make("embodied/Reach-v0", width=0), ValueError, ["width"]),
    ("make-push-height-negative", "gym", lambda w: gym.make("embodied/Push-v0", height=-8), ValueError, ["height"]),
    ("make-task-gymnasium-width-0", "gym", lambda w: make_task("Reacher-v5", width=0), ValueError, ["width"]),
    ("set-state-nan", "gym", lambda w: _set_state(lambda s: np.full_like(s, np.nan)), ValueError,
     [("nan", "finite")]),
    ("set-state-wrong-length", "gym", lambda w: _set_state(lambda s: s[:3]), ValueError, ["state"]),
    ("task-step-nan-action", "gym", lambda w: _step_task(np.array([np.nan, 0.0])), ValueError, ["nan"]),
    ("imagined-horizon-negative", "inputs", lambda w: gym.make(IMAGINED, model=w["run"], horizon=-1), ValueError,
     ["horizon"]),
    ("imagined-horizon-text", "inputs", lambda w: gym.make(IMAGINED, model=w["run"], horizon="ten"), ValueError,
     ["horizon"]),
    ("imagined-num-envs-0", "inputs", lambda w: gym.make_vec(IMAGINED, num_envs=0,
                                                             vectorization_mode="vector_entry_point",
                                                             model=w["run"]), ValueError, ["num_envs"]),
    ("imagined-max-episodes-negative", "inputs", lambda w: gym.make(IMAGINED, model=w["run"], max_episodes=-1),
     ValueError, ["max_episodes"]),
    ("imagined-obs-mode-unknown", "inputs", lambda w: gym.make(IMAGINED, model=w["run"], obs_mode="rgb"),
     ValueError, ["rgb"]),
    ("imagined-context-frames-32x32", "inputs", lambda w: _reset_with(w, frames=np.zeros((2, 32, 32, 3), np.uint8)),
     ValueError, ["frames", "64"]),
    ("imagined-context-4-channels", "inputs", lambda w: _reset_with(w, frames=np.zeros((2, 64, 64, 4), np.uint8)),
     ValueError, ["frames", "3"]),
    ("imagined-context-float-frames", "inputs", lambda w: _reset_with(w, frames=np.zeros((2, 64, 64, 3))),
     ValueError, ["frames", "uint8"]),
    ("imagined-context-proprio-width", "inputs", lambda w: _reset_with(w, proprio=np.zeros((2, 8), np.float32)),
     ValueError, ["proprio", "5"]),
    ("imagined-context-actions-width", "inputs", lambda w: _reset_with(w, actions=np.zeros((1, 5), np.float32)),
     ValueError, ["actions", "2"]),
    ("imagined-context-nan-actions", "inputs", lambda w: _reset_with(w, actions=np.full((1, 2), np.nan, np.float32)),
     ValueError, ["actions", "finite"]),
    ("imagined-live-env-32x32", "inputs", lambda w: gym.make(IMAGINED, model=w["run"], env=make_task(
        "reach", obs_type="pixels_proprio", width=32, height=32)), ValueError, ["width=64"]),
    ("imagined-step-wrong-shape", "inputs", lambda w: _imagined_step(w, np.zeros(5)), ValueError, ["shape"]),
    ("imagined-step-nan", "inputs", lambda w: _imagined_step(w, np.array([np.nan, 0.0])), ValueError, ["nan"]),
    ("imagined-model-missing", "inputs", lambda w: gym.make(IMAGINED, model=w["missing"]), ValueError,
     ["{missing}"]),
    ("imagined-checkpoint-of-other-task", "lead", lambda w: gym.make(IMAGINED, model=w["run"], task="push"),
     ValueError, ["reach", "push"]),
    ("imagined-dataset-of-32x32-frames", "inputs", lambda w: gym.make(IMAGINED, model=w["run"],
                                                                     dataset=w["data32"]).reset(seed=0),
     ValueError, ["{data32}", "32x32", "64x64"]),
    ("latent-wrapper-32x32-env", "inputs", lambda w: _latent_wrapper(w, 32), ValueError, ["width=64"]),
    ("load-model-missing", "inputs", lambda w: _load_model(w["missing"]), ValueError, ["{missing}"]),
    ("load-model-other-task", "lead", lambda w: _load_model(w["run"], "push"), ValueError, ["reach", "push"]),
    ("load-model-corrupt-config", "lead", lambda w: _load_model(w["run_corrupt_config"]), ValueError,
     ["config.json"]),
    ("load-config-missing-file", "inputs", lambda w: load_config(w["missing"] + ".yaml"), ValueError,
     ["{missing}.yaml"]),
    ("load-config-unknown-key", "inputs", lambda w: _load_config("train.stpes=3"), ValueError, ["train.stpes"]),
    ("load-config-threads-negative", "inputs", lambda w: _load_config("train.threads=-1"), ValueError,
     ["train.threads"]),
    ("load-config-seq-len-1", "inputs", lambda w: _load_config("train.seq_len=1"), ValueError, ["train.seq_len"]),
    ("build-model-hidden-0", "inputs", lambda w: _build(hidden=0), ValueError, ["model.hidden"]),
    ("build-model-stoch-text", "inputs", lambda w: _build(stoch="many"), ValueError, ["model.stoch"]),
    ("build-model-unknown-key", "inputs", lambda w: _build(hiden=3), ValueError, ["model.hiden"]),
    ("dataset-api-manifest-is-a-list", "collect", lambda w: _dataset(w["bad_manifest_list"]), ValueError,
     ["manifest.json"]),
    ("dataset-api-nan-actions", "collect", lambda w: _dataset(w["bad_nan_actions"]), ValueError,
     ["ep_000001", "action"]),
]


# ---------------------------------------------------------------------------------------------
# fixtures: a tiny world, made once; bad datasets and runs made on first use
# ---------------------------------------------------------------------------------------------
def _episode(folder: Path, name: str = "ep_000001.safetensors"):
    from embodied.data import read_episode

    path = folder / "episodes" / name
    arrays, meta = read_episode(path)
    return path, arrays, {k: v for k, v in meta.items() if k not in ("crc32", "format")}


def _rewrite_episode(folder: Path, change) -> None:
    from embodied.data import write_episode

    path, arrays, meta = _episode(folder)
    change(arrays)
    write_episode(path, arrays, meta)


def _edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(change(manifest)))


def _cut_actions(a):
    for key in ("action", "reward", "terminated"):
        a[key] = a[key][:30]


def _nan_action(a):
    a["action"][5, 0] = np.nan


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BAD_DATASETS = {
    "manifest_list": lambda d: (d / "manifest.json").write_text("[1, 2, 3]\n"),
    "manifest_no_episodes": lambda d: _edit_manifest(d, lambda m: {k: v for k, v in m.items() if k != "episodes"}),
    "manifest_not_json": lambda d: (d / "manifest.json").write_text("{not json"),
    "manifest_action_dim": lambda d: _edit_manifest(d, lambda m: {**m, "action_dim": 3}),
    "frames_32": lambda d: _rewrite_episode(d, lambda a: a.update({"observation.image": np.ascontiguousarray(
        a["observation.image"][:, ::2, ::2])})),
    "actions_3_wide": lambda d: _rewrite_episode(d, lambda a: a.update({"action": np.concatenate(
        [a["action"], np.zeros_like(a["action"][:, :1])], 1)})),
    "no_action": lambda d: _rewrite_episode(d, lambda a: a.pop("action")),
    "frames_vs_actions": lambda d: _rewrite_episode(d, _cut_actions),
    "float_images": lambda d: _rewrite_episode(d, lambda a: a.update({"observation.image": (
        a["observation.image"] / 255.0).astype(np.float32)})),
    "nan_actions": lambda d: _rewrite_episode(d, _nan_action),
    "episode_missing": lambda d: (d / "episodes" / "ep_000001.safetensors").unlink(),
    "manifest_fewer": lambda d: _edit_manifest(d, lambda m: {**m, "episodes": m["episodes"][:3], "episodes_total": 3}),
    "episode_truncated": lambda d: _truncate(d / "episodes" / "ep_000001.safetensors"),
}


def _weights(run: Path) -> Path:
    return max(run.rglob("model*.safetensors"), key=lambda p: p.stat().st_mtime)


BAD_RUNS = {
    "corrupt_config": lambda r: (r / "config.json").write_text("{not json"),
    "truncated_weights": lambda r: _truncate(_weights(r)),
}


class World(Mapping):
    """Paths of the shared fixtures by placeholder name; ``bad_*`` datasets and ``run_*`` runs are made on first use."""

    def __init__(self, root: Path, data: Path, run: Path):
        self.root, self.paths = root, {"data": data, "run": run}
        (root / "afile").write_text("not a folder\n")
        (root / "bad.yaml").write_text("train: [unclosed\n")
        prior = root / "prior"
        prior.mkdir(exist_ok=True)
        (prior / "plan.json").write_text(json.dumps({"previous": "results"}))
        self.paths |= {"file": root / "afile", "badyaml": root / "bad.yaml", "prior": prior,
                       "missing": root / "nothing_here", "ro": readonly_folder(root)}

    def __getitem__(self, key: str) -> str:
        if key not in self.paths:
            kind, _, name = key.partition("_")
            if kind == "bad" and name in BAD_DATASETS:
                self.paths[key] = self._copy(self.paths["data"], key, BAD_DATASETS[name])
            elif kind == "run" and name in BAD_RUNS:
                self.paths[key] = self._copy(self.paths["run"], key, BAD_RUNS[name])
            elif key == "data32":  # a sound dataset of the model's task at another image size
                from embodied.collect import collect

                collect("reach", 1, self.root / key, workers=1, size=32, progress=False)
                self.paths[key] = self.root / key
            else:
                raise KeyError(key)
        return str(self.paths[key])

    def _copy(self, src: Path, key: str, change) -> Path:
        dst = self.root / "bad" / key
        shutil.copytree(src, dst)
        change(dst)
        return dst

    def __iter__(self):
        return iter(self.paths)

    def __len__(self):
        return len(self.paths)


def readonly_folder(root: Path) -> Path | None:
    """A folder nobody may write: mode 555, or (for root, whom modes do not stop) a path under /sys; else None."""
    ro = root / "readonly"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)
    if not _writable(ro):
        return ro
    return None if _writable(Path("/sys")) else Path("/sys/embodied-readonly")


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
        (folder / ".probe").unlink()
        return True
    except OSError:
        return False


def make_world(root: Path) -> World:
    """The dataset (four reach episodes) and run (a tiny random recurrent model) every case starts from."""
    from embodied import checkpoint
    from embodied.collect import collect
    from embodied.data import read_manifest
    from embodied.models import build_model

    data, run = root / "data", root / "run"
    collect("reach", 4, data, workers=1, progress=False)
    man = read_manifest(data)
    spec = {k: man[k] for k in ("task", "image_size", "action_dim", "proprio_dim", "objects")}
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, spec)
    checkpoint.save(run, model, spec=spec, train_config={"task": "reach", "data": {"path": str(data)}})
    return World(root, data, run)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bad_inputs")
    w = make_world(root)
    (root / "out" / "cwd").mkdir(parents=True)
    yield w
    (root / "readonly").chmod(0o755)
    torch.set_num_threads(before)


def snapshot(root: Path) -> dict:
    """Size and mtime of every file under ``root`` except the fresh outputs in ``root/out``."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).parts[0] != "out"}


def assert_kept(before: dict, after: dict) -> None:
    """Every file that was there before is still there, unchanged (fixtures made on first use may appear)."""
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"files changed or lost: {changed}"


def message_of(stderr: str) -> list[str]:
    """The lines of stderr that are not argparse's usage text."""
    lines, usage = [], False
    for line in stderr.splitlines():
        usage = line.startswith("usage:") or (usage and line.startswith(" "))
        if line.strip() and not usage:
            lines.append(line)
    return lines


def check_message(text: str, names, world) -> None:
    assert "Traceback" not in text, text
    assert "\n" not in text.strip(), f"not one line: {text!r}"
    for name in names:
        options = name if isinstance(name, tuple) else (name,)
        options = [o.format_map(world).lower() for o in options]
        assert any(o in text.lower() for o in options), f"message does not name {options}: {text!r}"
    assert FIX.search(text), f"message does not say how to fix it: {text!r}"


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    from embodied.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    return code, capsys.readouterr().err


def argv_of(template: str, world: World, case_id: str) -> list[str]:
    return template.format_map(_Fresh(world, case_id)).split()


class _Fresh(dict):
    """The world's paths plus ``new``: a fresh output folder for this case."""

    def __init__(self, world: World, case_id: str):
        super().__init__()
        self.world, self.new = world, str(world.root / "out" / case_id)

    def __missing__(self, key):
        return self.new if key == "new" else self.world[key]


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case_id, owner, template, names", CLI, ids=[c[0] for c in CLI])
def test_cli(world, case_id, owner, template, names, capsys, monkeypatch):
    if "{ro}" in template and world.paths["ro"] is None:
        pytest.skip("no read-only folder on this machine")
    monkeypatch.chdir(world.root / "out" / "cwd")  # default output folders land here, never in the repository
    argv = argv_of(template, world, case_id)
    before = snapshot(world.root)
    code, err = run_cli(argv, capsys)
    lines = message_of(err)
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith(f"embodied {argv[0]}: error: ")
    check_message(lines[0], names, world)
    assert_kept(before, snapshot(world.root))


@pytest.mark.parametrize("case_id, owner, template", SENSIBLE, ids=[c[0] for c in SENSIBLE])
def test_cli_sensible(world, case_id, owner, template, capsys, monkeypatch):
    monkeypatch.chdir(world.root / "out" / "cwd")
    code, err = run_cli(argv_of(template, world, case_id), capsys)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err


@pytest.mark.parametrize("case_id, owner, dataset, files", RECONCILED, ids=[c[0] for c in RECONCILED])
def test_cli_reconciles_dataset(world, case_id, owner, dataset, files, capsys, monkeypatch):
    from embodied.data import episode_files, read_manifest

    monkeypatch.chdir(world.root / "out" / "cwd")
    folder = Path(world[dataset])
    episodes = {p.name: p.read_bytes() for p in episode_files(folder)}
    argv = argv_of(TRAIN.replace("{data}", "{" + dataset + "}") + " --no-progress", world, case_id)
    code, err = run_cli(argv, capsys)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err and "manifest.json" in err
    assert {p.name: p.read_bytes() for p in episode_files(folder)} == episodes and len(episodes) == files
    assert sorted(Path(r["file"]).name for r in read_manifest(folder)["episodes"]) == sorted(episodes)


@pytest.mark.parametrize("case_id, owner, call, error, names", API, ids=[c[0] for c in API])
def test_api(world, case_id, owner, call, error, names):
    before = snapshot(world.root)
    with pytest.raises(error) as info:
        call(world)
    check_message(str(info.value), names, world)
    assert_kept(before, snapshot(world.root))


def test_disk_full_while_writing_results_keeps_the_previous_ones(world, capsys, monkeypatch):
    """A write that fails after the work (ENOSPC on plan.json) is one line, and the previous plan.json survives."""
    import builtins

    import embodied.io

    real_open = builtins.open

    def full_disk(path, *args, **kwargs):
        if Path(path).name.startswith(".plan.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(embodied.io, "open", full_disk, raising=False)
    monkeypatch.chdir(world.root / "out" / "cwd")
    previous = (Path(world["prior"]) / "plan.json").read_bytes()
    code, err = run_cli(argv_of(PLAN + " --no-progress --out {prior}", world, "disk-full"), capsys)
    lines = message_of(err)
    assert code == 2 and len(lines) == 1, err[-2000:]
    check_message(lines[0], ["plan.json", "space"], world)
    assert (Path(world["prior"]) / "plan.json").read_bytes() == previous
    assert not list(Path(world["prior"]).glob(".plan.json*")), "a temporary file was left behind"


def test_compare_checks_every_model_before_probing(world, capsys, monkeypatch):
    """A bad second model fails before the first one is validated: nothing is written."""
    monkeypatch.chdir(world.root / "out" / "cwd")
    out = world.root / "out" / "compare-early"
    code, err = run_cli(["compare", world["run"], world["missing"], "--task", "reach", "--quick", "--out", str(out)],
                        capsys)
    assert code == 2 and world["missing"] in err
    assert not out.exists(), "compare probed a model before checking them all"


def test_plan_checks_out_before_planning(world, capsys, monkeypatch):
    """plan --out FILE fails before any episode is planned (no progress bar, no model loaded)."""
    import embodied.commands.plan as plan_command

    def no_mpc(*args, **kwargs):
        raise AssertionError("planning started before --out was checked")

    monkeypatch.setattr(plan_command, "run_mpc", no_mpc)
    monkeypatch.chdir(world.root / "out" / "cwd")
    code, err = run_cli(argv_of(PLAN + " --out {file}", world, "plan-file"), capsys)
    assert code == 2 and world["file"] in err


# a few cases as real processes: no traceback at the process level either
PROCESS_CASES = ["train-threads-negative", "plan-out-is-a-file", "dataset-manifest-is-a-list"]


@pytest.mark.parametrize("case_id", PROCESS_CASES)
def test_process_exits_2_with_one_line(world, case_id):
    template = next(c[2] for c in CLI if c[0] == case_id)
    names = next(c[3] for c in CLI if c[0] == case_id)
    env = {**os.environ, "MUJOCO_GL": "egl", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "embodied.cli", *argv_of(template, world, case_id + "-process")],
                          cwd=world.root / "out" / "cwd", env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    lines = message_of(proc.stderr)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr
    check_message(lines[0], names, world)

