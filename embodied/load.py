"""A world model by the name a user types: a run folder, or one of the reference models.

``load_model("runs/push", task="push")`` rebuilds a trained model (the run
folder's checkpoint, refused with one line if it was trained for another
task); ``"mujoco"`` (or ``"oracle"``) is the simulator itself behind the model
interface, the yardstick; ``"copy_last"`` and ``"blind_oracle"`` (MuJoCo with
every action zeroed) are the baselines every probe must rank low. The name of a
shipped checkpoint (``"push"``; see :mod:`embodied.shipped`, listed by
``embodied checkpoints``) loads it from its folder; an existing path always
wins over a name.
"""
from __future__ import annotations

from pathlib import Path

from embodied.checkpoint import load
from embodied.envs.registry import canonical_task, make_task
from embodied.errors import UserError
from embodied.models.base import WorldModel
from embodied.models.baselines import ActionBlind, CopyLastFrame
from embodied.models.oracle import MujocoOracle
from embodied.shipped import shipped_names, shipped_path

REFERENCE_MODELS = ("mujoco", "oracle", "copy_last", "blind_oracle")


def resolve_run_dir(spec):
    """Where the run folder ``spec`` names lives: the path itself when it exists, else the folder of the
    shipped checkpoint of that name, else ``spec`` unchanged (reference names and objects pass through)."""
    if isinstance(spec, WorldModel) or str(spec) in REFERENCE_MODELS or Path(str(spec)).exists():
        return spec
    folder = shipped_path(str(spec))
    return spec if folder is None else folder


def load_model(spec, task: str, image_size: int = 64, factors: dict | None = None) -> WorldModel:
    """A model object (returned as it is), a run folder, a shipped checkpoint's name or a reference model's
    name, for ``task``.

    ``factors`` (factors of variation of the task's scene) reach the MuJoCo oracle, the simulator itself,
    changed as the real task is; a learned model knows only what it was trained on.
    """
    if isinstance(spec, WorldModel):
        return spec
    name = str(spec)
    fov = {"factors": factors} if factors else {}
    if name in ("mujoco", "oracle"):
        return MujocoOracle(task, image_size=image_size, **fov)
    if name == "blind_oracle":
        return ActionBlind(MujocoOracle(task, image_size=image_size, **fov))
    if name == "copy_last":
        env = make_task(task, width=image_size, height=image_size)
        model = CopyLastFrame(canonical_task(task), env.action_space.shape[0], image_size=image_size)
        env.close()
        return model
    run_dir = Path(resolve_run_dir(name))
    if not run_dir.is_dir():
        shipped = ", ".join(shipped_names()) or "none shipped"
        raise UserError(f"--model {name!r}: no such run folder or shipped checkpoint; pass a folder written by "
                        f"`embodied train`, a shipped checkpoint's name ({shipped}; `embodied checkpoints` lists "
                        f"them) or one of {', '.join(REFERENCE_MODELS)}")
    model = load(run_dir, task=task)
    model.run_dir = str(run_dir)  # so an imagined env built from the object later finds the run's dataset
    return model
