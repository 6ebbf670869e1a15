"""SB3 zips loaded without unpickling anything in them.

A stable-baselines3 zip keeps its tensors in ``.pth`` files, which SB3 reads with
``torch.load(weights_only=True)``, and the rest in a JSON file, ``data``. Whatever in
``data`` is not plain JSON (the policy class, the observation and action spaces,
the buffer class, the learning-rate schedule, PPO's ``policy_kwargs`` with its
activation class) SB3 stores as a cloudpickle and unpickles on load: a zip from
anywhere could run code. :func:`load_sb3_zip` reads ``data`` as JSON, rebuilds
each such entry from what it knows (SB3's own ``MlpPolicy``, a box of the recorded
shape, ``[-1, 1]`` actions, a constant schedule, the activation by name; the state
training stopped in, such as the last observations, is left empty) and hands
all of them to SB3's ``load`` as ``custom_objects``, so SB3 never unpickles one. An
entry it cannot rebuild (a custom policy class, an unknown pickled object) is
refused in one line. The agent loaded this way acts and scores as saved; its
training schedules are constants (it is loaded to act, not to train on).
"""
from __future__ import annotations

import ast
import json
import re
import zipfile
from collections import deque
from pathlib import Path

import numpy as np

from embodied.errors import UserError
from embodied.policies.agents import ACTIVATIONS, ALGO_CLASSES, ALGOS

ACTIVATION_CLASSES = {cls.__name__: cls for cls in ACTIVATIONS.values()}  # the ones `policy train` uses, by name
SCHEDULES = ("lr_schedule", "learning_rate", "clip_range", "clip_range_vf")
TRAINING_STATE = ("_last_obs", "_last_original_obs", "_last_episode_starts")  # where training stopped: not to act
EPISODE_BUFFERS = ("ep_info_buffer", "ep_success_buffer")                     # recent episodes' logs


def read_data(path: Path) -> dict:
    """The zip's ``data`` entry as JSON, read without SB3; a one-line UserError when it is not there."""
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        data = f"{type(err).__name__}: {err}"
    if not isinstance(data, dict):
        raise UserError(f"policy {path}: not an SB3 zip ({str(data)[:200]}); pass a policy.zip or a snapshot "
                        "written by `embodied policy train`")
    return data


def _pickled(entry) -> bool:
    return isinstance(entry, dict) and ":serialized:" in entry


def _is_class(entry: dict, cls) -> bool:
    """Whether a pickled class entry is ``cls`` itself (its module, and its own ``__init__``)."""
    return entry.get("__module__") == cls.__module__ and f"{cls.__qualname__}.__init__ " in str(entry.get("__init__"))


def algo_of(data: dict) -> str | None:
    """sac or ppo: the algorithm whose ``MlpPolicy`` the zip's policy class is; None for any other class."""
    entry = data.get("policy_class")
    for algo in ALGOS:
        if _pickled(entry) and _is_class(entry, ALGO_CLASSES[algo].policy_aliases["MlpPolicy"]):
            return algo
    return None


def _numbers(text, what: str, path: Path) -> np.ndarray:
    try:
        return np.array([float(x) for x in str(text).strip("[]").split()])
    except ValueError:
        raise UserError(f"policy {path}: its {what} ({text!r}) cannot be read without unpickling") from None


def _box(entry: dict, name: str, path: Path):
    """A gymnasium Box of the recorded shape: observations unbounded, actions exactly the [-1, 1] box."""
    import gymnasium as gym

    try:
        shape = tuple(int(n) for n in json.loads(str(entry.get("_shape"))))
    except (ValueError, TypeError):
        raise UserError(f"policy {path}: its {name} has no readable shape; save it with SB3 and gymnasium "
                        "Box spaces") from None
    if "gymnasium.spaces.box.Box" not in str(entry.get(":type:")) or str(entry.get("dtype")) != "float32":
        raise UserError(f"policy {path}: its {name} is {entry.get(':type:')} ({entry.get('dtype')}); embodied "
                        "policies observe and act in float32 Box spaces")
    if name == "observation_space":
        return gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
    low, high = _numbers(entry.get("low"), "action low", path), _numbers(entry.get("high"), "action high", path)
    if not (low.size == high.size == int(np.prod(shape)) and np.all(low == -1) and np.all(high == 1)):
        raise UserError(f"policy {path}: its actions span {entry.get('low')}..{entry.get('high')}, not the [-1, 1] "
                        "box every embodied task acts in")
    return gym.spaces.Box(-1.0, 1.0, shape, np.float32)


def _schedule(entry: dict):
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule

    value = re.search(r"val=([-+0-9.eE]+)", str(entry.get("value_schedule", "")))
    return FloatSchedule(ConstantSchedule(float(value.group(1)) if value else 0.0))


def _policy_kwargs(entry: dict, path: Path) -> dict:
    """PPO's pickled policy_kwargs, from their readable text: ``net_arch`` and the activation by name."""
    out = {}
    for key, text in entry.items():
        if key.startswith(":"):
            continue
        if key == "net_arch":
            try:
                out[key] = ast.literal_eval(str(text))
            except (ValueError, SyntaxError):
                raise UserError(f"policy {path}: its net_arch {text!r} cannot be read without unpickling") from None
        elif key == "activation_fn" and (m := re.fullmatch(r"<class 'torch\.nn\.modules\.activation\.(\w+)'>",
                                                             str(text))) and m.group(1) in ACTIVATION_CLASSES:
            out[key] = ACTIVATION_CLASSES[m.group(1)]
        else:
            raise UserError(f"policy {path}: its policy_kwargs hold {key}={text!r}, which embodied does not rebuild "
                            "without unpickling; train the policy with `embodied policy train`")
    return out


def custom_objects(data: dict, algo: str, path: Path) -> dict:
    """A replacement for every pickled entry of ``data``; a one-line UserError for one it cannot rebuild."""
    from stable_baselines3.common.buffers import ReplayBuffer, RolloutBuffer
    from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

    policy = ALGO_CLASSES[algo].policy_aliases["MlpPolicy"]
    out = {}
    for key, entry in data.items():
        if not _pickled(entry):
            continue
        if key == "policy_class" and _is_class(entry, policy):
            out[key] = policy
        elif key in ("observation_space", "action_space"):
            out[key] = _box(entry, key, path)
        elif key in SCHEDULES:
            out[key] = _schedule(entry)
        elif key == "replay_buffer_class" and _is_class(entry, ReplayBuffer):
            out[key] = ReplayBuffer
        elif key == "rollout_buffer_class" and _is_class(entry, RolloutBuffer):
            out[key] = RolloutBuffer
        elif key in TRAINING_STATE:
            out[key] = None
        elif key in EPISODE_BUFFERS:
            out[key] = deque(maxlen=100)
        elif key == "train_freq":
            out[key] = TrainFreq(1, TrainFrequencyUnit.STEP)
        elif key == "policy_kwargs":
            out[key] = _policy_kwargs(entry, path)
        else:
            raise UserError(f"policy {path}: its {key} is a pickled {entry.get(':type:')}, which embodied does not "
                            f"unpickle (a zip could run code); pass an SB3 {algo.upper()} MlpPolicy zip such as "
                            "`embodied policy train` writes")
    return out


def load_sb3_zip(path, algo: str | None = None):
    """The SAC or PPO agent of an SB3 zip, on the CPU, without unpickling (see the module docstring).

    ``algo`` (sac | ppo, e.g. from the run's policy.json) must match the zip's policy class when given.
    """
    path = Path(path)
    data = read_data(path)
    found = algo_of(data)
    if found is None or (algo and algo != found):
        raise UserError(f"policy {path}: not an SB3 {algo.upper() if algo else 'SAC or PPO'} MlpPolicy zip; pass a "
                        "policy.zip or a snapshot written by `embodied policy train`")
    replacements = custom_objects(data, found, path)
    try:
        return ALGO_CLASSES[found].load(path, device="cpu", custom_objects=replacements)
    except (ValueError, KeyError, TypeError, AssertionError, RuntimeError, zipfile.BadZipFile) as err:
        raise UserError(f"policy {path}: the SB3 {found.upper()} zip does not load ({type(err).__name__}: {err}); "
                        "pass a policy.zip or a snapshot written by `embodied policy train`") from None
