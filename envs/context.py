"""Context windows: the real frames, proprio and actions a world model is encoded from.

One copy of the padding rule every caller shares (the MPC loop, the imagined
env, the real-env wrapper, the validation probes, held-out evaluation): a
window that reaches back before the episode's first frame repeats that frame
with zero actions, a robot at rest.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch


def split_obs(obs) -> tuple[np.ndarray, np.ndarray | None]:
    """(pixels uint8 (H,W,3), proprio float32 or None) of a real observation (pixels or a dict)."""
    if isinstance(obs, dict):
        pixels = obs.get("pixels", obs.get("observation.image"))
        proprio = obs.get("proprio", obs.get("observation.state"))
    else:
        pixels, proprio = obs, None
    pixels = None if pixels is None else np.asarray(pixels)
    if pixels is None or pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError("a world model needs pixel observations: make the env with obs_type 'pixels' or "
                         "'pixels_proprio' (a dict with 'pixels' and 'proprio')")
    return pixels, None if proprio is None else np.asarray(proprio, dtype=np.float32)


def pad_window(frames, actions, proprio, end: int, context: int, action_dim: int):
    """The ``context`` frames ending at index ``end`` of an episode (repeating frame 0, zero actions, before it).

    frames (T+1,H,W,3), actions (T,A), proprio (T+1,P) or None -> (context,H,W,3), (context-1,A), (context,P).
    """
    idx = [max(0, i) for i in range(end - context + 1, end + 1)]
    f = np.asarray(frames[idx])
    p = None if proprio is None else np.asarray(proprio[idx], dtype=np.float32)
    a = np.zeros((context - 1, action_dim), dtype=np.float32)
    for j, i in enumerate(range(end - context + 1, end)):  # action between frame i and i+1
        if i >= 0:
            a[j] = np.asarray(actions[i], dtype=np.float32)
    return f, a, p


def batch_windows(windows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stack (frames, actions, proprio) windows into encode() inputs (B,T,H,W,3), (B,T-1,A), (B,T,P) or None."""
    frames = torch.from_numpy(np.stack([w[0] for w in windows]))
    actions = torch.from_numpy(np.stack([w[1] for w in windows]).astype(np.float32))
    proprio = None
    if all(w[2] is not None for w in windows):
        proprio = torch.from_numpy(np.stack([w[2] for w in windows]).astype(np.float32))
    return frames, actions, proprio


class ObsHistory:
    """The last ``context`` real observations of one episode and the actions between them.

    ``sim_state`` is the simulator state at the newest frame; the evaluator
    records it only for a model that declares ``abilities.simulator_state``
    (the MuJoCo oracle), so a learned model never receives it.
    """

    def __init__(self, context: int, action_dim: int):
        if context < 1:
            raise ValueError(f"model context={context} must be >= 1")
        self.context, self.action_dim = int(context), int(action_dim)
        self.frames: deque = deque(maxlen=self.context)
        self.proprio: deque = deque(maxlen=self.context)
        self.actions: deque = deque(maxlen=self.context)
        self.sim_state: np.ndarray | None = None

    def reset(self, obs, sim_state=None) -> None:
        """Start an episode from its first observation."""
        self.frames.clear(), self.proprio.clear(), self.actions.clear()
        self._append(obs, sim_state)

    def push(self, action, obs, sim_state=None) -> None:
        """Record the action taken and the observation it led to."""
        self.actions.append(np.asarray(action, dtype=np.float32).reshape(self.action_dim))
        self._append(obs, sim_state)

    def _append(self, obs, sim_state) -> None:
        pixels, proprio = split_obs(obs)
        self.frames.append(pixels)
        self.proprio.append(proprio)
        self.sim_state = None if sim_state is None else np.asarray(sim_state, dtype=np.float64)

    def window(self):
        """(frames (context,H,W,3), actions (context-1,A), proprio (context,P) or None), padded at the start."""
        n = len(self.frames)
        proprio = None if self.proprio[-1] is None else np.stack(self.proprio)
        actions = list(self.actions)[-(n - 1):] if n > 1 else []
        actions = np.stack(actions) if actions else np.zeros((0, self.action_dim), np.float32)
        return pad_window(np.stack(self.frames), actions, proprio, n - 1, self.context, self.action_dim)

    def encode_inputs(self) -> dict:
        """Keyword arguments of ``model.encode`` for this history (batch 1)."""
        frames, actions, proprio = batch_windows([self.window()])
        sim = None if self.sim_state is None else torch.from_numpy(self.sim_state)[None]
        return {"frames": frames, "actions": actions, "proprio": proprio, "sim_state": sim}
