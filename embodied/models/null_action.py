"""Pre-train on action-free episodes, then post-train with actions (as Cosmos does): a learned null action.

``NullActionWorldModel`` (arch ``null_action``) wraps any architecture. A
training window without actions (``embodied train`` with ``train.pretrain_steps``:
every episode, labelled or not, for the first steps) is fed one learned vector in
the action box, ``tanh(null)``, at every step: the inner model learns its
encoder, decoder, heads and the motion of the world under "some action", and the
null vector learns where that action input sits. Then the labelled windows (with
their actions) post-train the same weights. Every inner architecture takes raw
action vectors, so the null needs no change to any of them; at use the wrapper
passes real actions through unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from embodied.models.wrapped import WrappedWorldModel


@dataclass
class NullActionConfig:
    world: dict = field(default_factory=lambda: {"arch": "recurrent"})  # the inner model's config


class NullActionWorldModel(WrappedWorldModel):
    """The inner model with a learned null action for windows whose actions are unknown."""

    arch = "null_action"

    def __init__(self, cfg: NullActionConfig, spec: dict):
        super().__init__(cfg, spec, int(spec["action_dim"]))
        self.null = nn.Parameter(torch.zeros(self.action_dim))

    def loss(self, batch: dict, step: int = 0):
        """The inner model's loss; a batch without ``actions`` gets the null action at every step."""
        if "actions" not in batch:
            b, t = batch["frames"].shape[:2]
            batch = {**batch, "actions": torch.tanh(self.null).expand(b, t - 1, self.action_dim)}
        return self.world.loss(batch, step)
