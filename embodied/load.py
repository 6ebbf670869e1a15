"""A world model by the name a user types: a run folder, or one of the reference models.

``load_model("runs/push", task="push")`` rebuilds a trained model (the run
folder's checkpoint, refused with one line if it was trained for another
task); ``"mujoco"`` (or ``"oracle"``) is the simulator itself behind the model
interface, the yardstick; ``"copy_last"`` and ``"blind_oracle"`` (MuJoCo with
every action zeroed) are the baselines every probe must rank low.
"""
from __future__ import annotations

from pathlib import Path

from embodied.checkpoint import load
from embodied.envs.registry import canonical_task, make_task
from embodied.errors import UserError
from embodied.models.base import WorldModel
from embodied.models.baselines import ActionBlind, CopyLastFrame
from embodied.models.oracle import MujocoOracle

REFERENCE_MODELS = ("mujoco", "oracle", "copy_last", "blind_oracle")


def load_model(spec, task: str, image_size: int = 64) -> WorldModel:
    """A model object (returned as it is), a run folder, or a reference model's name, for ``task``."""
    if isinstance(spec, WorldModel):
        return spec
    name = str(spec)
    if name in ("mujoco", "oracle"):
        return MujocoOracle(task, image_size=image_size)
    if name == "blind_oracle":
        return ActionBlind(MujocoOracle(task, image_size=image_size))
    if name == "copy_last":
        env = make_task(task, width=image_size, height=image_size)
        model = CopyLastFrame(canonical_task(task), env.action_space.shape[0], image_size=image_size)
        env.close()
        return model
    run_dir = Path(name)
    if not run_dir.is_dir():
        raise UserError(f"--model {name!r}: no such run folder; pass a folder written by `embodied train` "
                        f"or one of {', '.join(REFERENCE_MODELS)}")
    model = load(run_dir, task=task)
    model.run_dir = str(run_dir)  # so an imagined env built from the object later finds the run's dataset
    return model
