"""The world-model interface every backend implements (learned models and the MuJoCo oracle).

A model state is a ``dict[str, torch.Tensor]`` whose tensors all share a leading
batch dimension B. Planners, the imagined env and the validation probes only
use the methods below, so a learned model and the MuJoCo oracle are
interchangeable behind them.

Shapes (B batch, T context length, H horizon, A action size, P proprio size):

* ``encode(frames (B,T,h,w,3) uint8, actions (B,T-1,A), proprio (B,T,P) | None,
  sim_state (B,S) | None) -> State`` builds the state from real context;
  ``actions[:, t]`` is the action taken between ``frames[:, t]`` and
  ``frames[:, t+1]``. ``sim_state`` (the simulator state at the last frame)
  is handed over only to a model that declares ``abilities.simulator_state``
  (the MuJoCo oracle), by the evaluator that owns the real env.
* ``step(state, action (B,A)) -> State``: one imagined step.
* ``decode(state) -> (B,h,w,3) uint8``: pixels, only when someone looks.
* ``features(state) -> (B,D)``: the state as one flat float vector.
* ``reward(state) -> (B,)``: predicted reward of arriving in ``state``.

Optional abilities are declared in :class:`Abilities` (``model.abilities``),
never guessed: a caller checks ``model.abilities.success`` before calling
``model.success(state)``; an ability a model does not declare raises.
* ``rollout(state, actions (B,H,A)) -> (final State, rewards (B,H))``: the
  batched core planners call; ``state`` may have batch 1 and is broadcast.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

State = dict[str, torch.Tensor]


def repeat_state(state: State, n: int) -> State:
    """Tile a batch-1 state to batch n (a batch-n state is returned unchanged)."""
    out = {}
    for k, v in state.items():
        if v.shape[0] == n:
            out[k] = v
        elif v.shape[0] == 1:
            out[k] = v.expand(n, *v.shape[1:]).contiguous()
        else:
            raise ValueError(f"cannot broadcast state {k!r} of batch {v.shape[0]} to batch {n}")
    return out


def index_state(state: State, idx) -> State:
    """Select batch elements of a state (idx: int, slice, or index tensor)."""
    if isinstance(idx, int):
        idx = slice(idx, idx + 1)
    return {k: v[idx] for k, v in state.items()}


def cat_states(states: list[State]) -> State:
    """Concatenate states along the batch dimension."""
    return {k: torch.cat([s[k] for s in states]) for k in states[0]}


def state_batch(state: State) -> int:
    """Batch size of a state."""
    return next(iter(state.values())).shape[0]


@dataclass(frozen=True)
class Abilities:
    """What a world model can do beyond ``encode``, ``step``, ``decode``, ``features`` and ``reward``."""

    success: bool = False          # success(state) -> (B,) bool: predicted task success
    goal_distance: bool = False    # goal_distance(state, goal) -> (B,): distance to an encoded goal
    proprio: bool = False          # proprio(state) -> (B,P): predicted robot proprioception
    objects: bool = False          # objects(state) -> (B,K,2): predicted planar object positions
    readout: bool = False          # readout(state) -> (B,D): normalised proprio and object read-outs
    simulator_state: bool = False  # encode() needs the true simulator state (only the MuJoCo oracle)
    update: bool = False           # update(state, action, frames, proprio): one filter step on a new real frame,
                                   # so a control loop need not re-encode its whole context window every action


class WorldModel(torch.nn.Module, ABC):
    """The interface: subclasses implement the abstract methods and the abilities they declare."""

    task: str = ""
    action_dim: int = 0
    image_size: int = 64
    proprio_dim: int = 0
    context: int = 1                # real frames encode() expects
    abilities: Abilities = Abilities()
    run_dir: str | None = None      # the run folder it was loaded from (embodied.load), which names its dataset

    @property
    def max_context(self) -> int:
        """The most real frames encode() makes use of (a transformer's attention window; else ``context``)."""
        return self.context

    @abstractmethod
    def encode(self, frames: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor | None = None,
               sim_state: torch.Tensor | None = None) -> State:
        """The model state (batch B) from real context frames, the actions between them and proprio."""

    @abstractmethod
    def step(self, state: State, action: torch.Tensor) -> State:
        """One imagined step of every batch element under ``action`` (B, A)."""

    @abstractmethod
    def decode(self, state: State) -> torch.Tensor:
        """Frames (B, H, W, 3) uint8 of a state."""

    @abstractmethod
    def features(self, state: State) -> torch.Tensor:
        """The state as one flat float vector per batch element (B, D): latent observations read it."""

    @abstractmethod
    def reward(self, state: State) -> torch.Tensor:
        """Predicted reward (B,) of arriving in ``state``."""

    def _missing(self, name: str):
        return NotImplementedError(f"{type(self).__name__} does not declare the {name!r} ability "
                                   f"(model.abilities.{name} is False)")

    def success(self, state: State) -> torch.Tensor:
        """Predicted task success (B,) bool; needs ``abilities.success``."""
        raise self._missing("success")

    def goal_distance(self, state: State, goal: State) -> torch.Tensor:
        """Distance (B,) from each state to ``goal`` (batch 1 or B); needs ``abilities.goal_distance``."""
        raise self._missing("goal_distance")

    def proprio(self, state: State) -> torch.Tensor:
        """Predicted proprio (B, P) in the dataset's units; needs ``abilities.proprio``."""
        raise self._missing("proprio")

    def objects(self, state: State) -> torch.Tensor:
        """Predicted planar object positions (B, K, 2); needs ``abilities.objects``."""
        raise self._missing("objects")

    def readout(self, state: State) -> torch.Tensor:
        """Normalised low-dimensional read-outs (B, D); needs ``abilities.readout``."""
        raise self._missing("readout")

    def update(self, state: State, action: torch.Tensor, frames: torch.Tensor,
               proprio: torch.Tensor | None = None) -> State:
        """The state after ``action`` (B, A) led to the real ``frames`` (B, H, W, 3) uint8 and ``proprio`` (B, P):
        one step of the filter ``encode`` runs over its window; needs ``abilities.update``."""
        raise self._missing("update")

    @torch.no_grad()
    def predict(self, frames_ctx: torch.Tensor, proprio_ctx: torch.Tensor | None, actions_ctx: torch.Tensor,
                future_actions: torch.Tensor) -> torch.Tensor:
        """Open-loop prediction from real context: (B,H,h,w,3) uint8 frames, one per future action."""
        state = self.encode(frames_ctx, actions_ctx, proprio_ctx)
        out = []
        for t in range(future_actions.shape[1]):
            state = self.step(state, future_actions[:, t])
            out.append(self.decode(state))
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def rollout(self, state: State, actions: torch.Tensor) -> tuple[State, torch.Tensor]:
        """Step every sequence in ``actions`` (B,H,A) from ``state``; returns final state and (B,H) rewards."""
        state = repeat_state(state, actions.shape[0])
        rewards = []
        for t in range(actions.shape[1]):
            state = self.step(state, actions[:, t])
            rewards.append(self.reward(state))
        return state, torch.stack(rewards, dim=1)
