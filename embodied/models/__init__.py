"""World-model registry: ``build_model(model_cfg, spec)`` for every learned architecture.

``model_cfg`` is a dict with ``arch`` (a key of :data:`MODELS`) and any fields
of that architecture's config dataclass (unknown keys are an error); ``spec``
is the dataset manifest's task description (``task``, ``image_size``,
``action_dim``, ``proprio_dim``, ``objects``). ``model.config`` is a JSON-able
dict that rebuilds the same model: ``build_model(model.config, model.spec)``.
The MuJoCo oracle (:mod:`embodied.models.oracle`) is built from a task name,
not from here; a trained model is loaded from its run folder with
:func:`embodied.checkpoint.load`.
"""
from __future__ import annotations

from embodied.models.base import Abilities, State, WorldModel, cat_states, index_state, repeat_state, state_batch
from embodied.models.latent_actions import LatentActionsModelConfig, LatentActionWorldModel
from embodied.models.learned import config_from_dict
from embodied.models.null_action import NullActionConfig, NullActionWorldModel
from embodied.models.recurrent import RecurrentConfig, RecurrentWorldModel
from embodied.models.slots import SlotsConfig, SlotsWorldModel
from embodied.models.transformer import TransformerConfig, TransformerWorldModel

MODELS = {
    "recurrent": (RecurrentWorldModel, RecurrentConfig),
    "transformer": (TransformerWorldModel, TransformerConfig),
    "slots": (SlotsWorldModel, SlotsConfig),
    # wrappers of any of the above, for action-free data (embodied.action_free): their `world` is the inner model
    "latent_actions": (LatentActionWorldModel, LatentActionsModelConfig),
    "null_action": (NullActionWorldModel, NullActionConfig),
}
WRAPPERS = ("latent_actions", "null_action")


def build_model(model_cfg: dict | None, spec: dict) -> WorldModel:
    """A freshly initialised world model of ``model_cfg['arch']`` (default ``recurrent``) for ``spec``."""
    model_cfg = dict(model_cfg or {})
    arch = model_cfg.pop("arch", "recurrent")
    if arch not in MODELS:
        raise ValueError(f"unknown model arch {arch!r}; choose one of {sorted(MODELS)}")
    for key in ("action_dim",):
        if key not in spec:
            raise ValueError(f"dataset spec has no {key!r}: pass the manifest of a dataset made by `embodied collect`")
    cls, cfg_cls = MODELS[arch]
    return cls(config_from_dict(cfg_cls, model_cfg), spec)


__all__ = ["MODELS", "WRAPPERS", "build_model",
           "Abilities", "State", "WorldModel", "repeat_state", "index_state", "cat_states",
           "state_batch", "RecurrentConfig", "RecurrentWorldModel", "TransformerConfig", "TransformerWorldModel",
           "SlotsConfig", "SlotsWorldModel"]

