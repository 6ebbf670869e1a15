"""A world model around another one: the recipes for action-free data and the action-blind baseline.

:class:`DelegatingWorldModel` holds an inner model (``self.world``) and delegates the whole interface to
it; a subclass only says how a real action becomes the inner model's action input
(:meth:`DelegatingWorldModel.world_actions`). :class:`WrappedWorldModel` builds the inner model from the
``world`` model config and trains (the action-free recipes). Planners, the imagined env, policies and
probes see a model that takes real actions.
"""
from __future__ import annotations

from dataclasses import asdict

import torch

from embodied.models.base import Abilities, State, WorldModel


class DelegatingWorldModel(WorldModel):
    """Any world model ``self.world`` with the whole interface delegated to it; every action passes through
    :meth:`world_actions` first (and encode's context actions through :meth:`context_actions`)."""

    def __init__(self, world: WorldModel):
        super().__init__()
        self.world = world
        self.task, self.image_size = world.task, world.image_size
        self.proprio_dim, self.context = world.proprio_dim, world.context
        self.action_dim = int(world.action_dim)

    @property
    def abilities(self) -> Abilities:
        return self.world.abilities

    @property
    def max_context(self) -> int:
        return self.world.max_context

    @property
    def object_names(self) -> list[str]:
        return list(getattr(self.world, "object_names", []))

    def world_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Real actions (..., A) as the inner model's action input (..., A')."""
        return actions

    def context_actions(self, frames: torch.Tensor, actions: torch.Tensor | None) -> torch.Tensor | None:
        """The inner model's action input between real context ``frames`` (B,T,...) (default: mapped ``actions``)."""
        if actions is None:
            return None
        return self.world_actions(torch.as_tensor(actions).float().reshape(frames.shape[0], -1, self.action_dim))

    # -- the interface, delegated ----------------------------------------------------------------
    def encode(self, frames, actions=None, proprio=None, sim_state=None) -> State:
        return self.world.encode(frames, self.context_actions(frames, actions), proprio, sim_state)

    def step(self, state: State, action: torch.Tensor) -> State:
        return self.world.step(state, self.world_actions(torch.as_tensor(action).float()))

    @torch.no_grad()
    def rollout(self, state: State, actions: torch.Tensor) -> tuple[State, torch.Tensor]:
        return self.world.rollout(state, self.world_actions(torch.as_tensor(actions).float()))

    def update(self, state: State, action: torch.Tensor, frames: torch.Tensor, proprio=None) -> State:
        return self.world.update(state, self.world_actions(torch.as_tensor(action).float()), frames, proprio)

    def decode(self, state: State) -> torch.Tensor:
        return self.world.decode(state)

    def features(self, state: State) -> torch.Tensor:
        return self.world.features(state)

    def reward(self, state: State) -> torch.Tensor:
        return self.world.reward(state)

    def success(self, state: State) -> torch.Tensor:
        return self.world.success(state)

    def goal_distance(self, state: State, goal: State) -> torch.Tensor:
        return self.world.goal_distance(state, goal)

    def proprio(self, state: State) -> torch.Tensor:
        return self.world.proprio(state)

    def objects(self, state: State) -> torch.Tensor:
        return self.world.objects(state)

    def readout(self, state: State) -> torch.Tensor:
        return self.world.readout(state)


class WrappedWorldModel(DelegatingWorldModel):
    """A trainable wrapper: the inner model is built from the ``world`` model config with ``world_action_dim``
    action inputs; real actions (``spec["action_dim"]``) pass through :meth:`world_actions`."""

    arch = ""

    def __init__(self, cfg, spec: dict, world_action_dim: int):
        from embodied.models import build_model  # the registry imports this module

        super().__init__(build_model(dict(cfg.world), {**spec, "action_dim": world_action_dim}))
        self.cfg = cfg
        self.spec = dict(spec)
        self.action_dim = int(spec["action_dim"])

    @property
    def config(self) -> dict:
        """JSON-able dict that rebuilds this model with ``build_model(model.config, model.spec)``."""
        return {"arch": self.arch, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.cfg).items()}}

    def fit_data(self, batch: dict) -> None:
        self.world.fit_data(batch)

    def forward(self, batch: dict, step: int = 0):
        return self.loss(batch, step)
