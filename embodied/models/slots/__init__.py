"""Factored state: one slot per object, an interaction network between slots, sprites composed over the scene.

State: ``{"pos": (B,K,2), "vel": (B,K,2), "seen": (B,K)}``, the image-plane position
(x = column, y = row, in [-1, 1]) and per-step velocity of each of the K slots, and
whether the slot's object has been seen at all (a slot never seen has no belief: it is
not drawn and touches nothing). Slot k is always
the same object: slots are bound to the colours of a palette found in the
training data (:func:`find_palette`), nothing is written per task.

* **Perception** (``encode``): colour-keyed attention. Each slot attends to the
  pixels near its palette colour; the attention-weighted mean coordinate is the
  observed position and the attended mass over the object's usual size its
  visibility. A slot whose object is hidden (under an occluder, behind another
  object) or only partly seen keeps the position its dynamics predict: the
  filter mixes observation and prediction by visibility.
* **Dynamics** (``step``): each slot's own motion (an MLP of its position,
  velocity and identity, and of the action through a learned per-slot gate that
  a sparsity loss closes for slots the action does not drive), then an
  interaction network: pairs of slots within a learned contact range exchange
  messages (an edge MLP of relative position, distance, relative velocity and
  identities), summed per slot into a further change of velocity; position
  integrates velocity. So a slot the action does not drive moves only by its own
  velocity or through contact, and velocity in the state keeps a hidden object
  moving.
* **Rendering** (``decode``): a learned sprite (alpha mask) per slot, in its palette colour,
  placed at the slot's position and composed by a learned depth order over the
  background (the scene's median, found with the palette); a learned static front layer (the scene's occluders)
  covers what passes under it. The pixels of a slot are the model's belief
  about its object.
* **Heads**: reward and proprio read the slots' positions, velocities and
  pairwise distances; ``goal_distance`` compares slot positions.

Training (``loss``): the filter over ``context`` real frames, then an open-loop
rollout over the rest of the window: position error against the observed
positions wherever the object is fully seen, pixel error of the rendered
frames (filtered and open-loop), reward and proprio errors.
"""
from __future__ import annotations

from embodied.models.slots.config import SlotsConfig
from embodied.models.slots.model import SlotsWorldModel
from embodied.models.slots.perception import find_palette
from embodied.models.slots.render import LAYER_GAIN

__all__ = ["LAYER_GAIN", "SlotsConfig", "SlotsWorldModel", "find_palette"]
