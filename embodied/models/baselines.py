"""Baseline world models every validation probe must rank below the truth.

* :class:`CopyLastFrame`: the world never changes; its state is the last real
  frame, ``step`` returns it unchanged and ``decode`` shows it. Its predicted
  reward is a constant (zero), so it carries no ranking information for planning.
* :class:`ActionBlind`: wraps any model (a learned one or the MuJoCo oracle)
  and replaces every action it sees with zeros, in ``encode`` and in ``step``.
  A model that ignores its actions scores like its action-blind self, which is
  how "models that ignore actions" are caught instead of assumed away.

Both implement :class:`embodied.models.base.WorldModel`, so the probes, the
planners and the imagined env treat them like any other backend.
"""
from __future__ import annotations

import torch

from embodied.models.base import Abilities, State, WorldModel
from embodied.models.wrapped import DelegatingWorldModel


class CopyLastFrame(WorldModel):
    """Predicts that the next frame is the last real frame, forever."""

    abilities = Abilities(goal_distance=True)

    def __init__(self, task: str = "", action_dim: int = 0, context: int = 1, image_size: int = 64):
        super().__init__()
        self.task, self.action_dim, self.context = task, int(action_dim), int(context)
        self.image_size = int(image_size)

    def encode(self, frames: torch.Tensor, actions: torch.Tensor | None = None,
               proprio: torch.Tensor | None = None, sim_state: torch.Tensor | None = None) -> State:
        frames = torch.as_tensor(frames)
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames have shape {tuple(frames.shape)}, expected (B, T, H, W, 3) uint8")
        return {"frame": frames[:, -1].to(torch.uint8).clone()}

    def step(self, state: State, action: torch.Tensor) -> State:
        return {"frame": state["frame"]}

    def decode(self, state: State) -> torch.Tensor:
        return state["frame"]

    def features(self, state: State) -> torch.Tensor:
        return state["frame"].float().flatten(1) / 255.0

    def reward(self, state: State) -> torch.Tensor:
        return torch.zeros(state["frame"].shape[0])

    def goal_distance(self, state: State, goal: State) -> torch.Tensor:
        a = state["frame"].float()
        b = goal["frame"].float().expand_as(a)
        return (a - b).abs().flatten(1).mean(1)


class ActionBlind(DelegatingWorldModel):
    """Any world model with every action it sees replaced by zeros (encode, step, rollout and update)."""

    def world_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(actions)
