"""The world-model interface every backend implements (learned models and the MuJoCo oracle).

A model state is a ``dict[str, torch.Tensor]`` whose tensors all share a leading
batch dimension B. Planners, the imagined env and the validation probes only
use the methods below, so a learned model and the MuJoCo oracle are
interchangeable behind them.

Shapes (B batch, T context length, H horizon, A action size, P proprio size):

* ``encode(frames (B,T,h,w,3) uint8, actions (B,T-1,A), proprio (B,T,P) | None) -> State``
  builds the state from real context; ``actions[:, t]`` is the action taken
  between ``frames[:, t]`` and ``frames[:, t+1]``.
* ``step(state, action (B,A)) -> State``: one imagined step.
* ``decode(state) -> (B,h,w,3) uint8``: pixels, only when someone looks.
* ``reward(state) -> (B,)``: predicted reward of arriving in ``state``.
* ``goal_distance(state, goal_state) -> (B,)``: distance in latent space.
* ``rollout(state, actions (B,H,A)) -> (final State, rewards (B,H))``: the
  batched core planners call; ``state`` may have batch 1 and is broadcast.
"""
from __future__ import annotations

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


class WorldModel(torch.nn.Module):
    """Base class: subclasses implement encode, step, decode, reward and goal_distance."""

    task: str = ""
    action_dim: int = 0
    is_oracle: bool = False

    def encode(self, frames: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor | None = None) -> State:
        raise NotImplementedError

    def step(self, state: State, action: torch.Tensor) -> State:
        raise NotImplementedError

    def decode(self, state: State) -> torch.Tensor:
        raise NotImplementedError

    def reward(self, state: State) -> torch.Tensor:
        raise NotImplementedError

    def goal_distance(self, state: State, goal: State) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def rollout(self, state: State, actions: torch.Tensor) -> tuple[State, torch.Tensor]:
        """Step every sequence in ``actions`` (B,H,A) from ``state``; returns final state and (B,H) rewards."""
        state = repeat_state(state, actions.shape[0])
        rewards = []
        for t in range(actions.shape[1]):
            state = self.step(state, actions[:, t])
            rewards.append(self.reward(state))
        return state, torch.stack(rewards, dim=1)
