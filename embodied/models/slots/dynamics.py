"""Dynamics: each slot's own motion, then messages between slots in contact."""
from __future__ import annotations

import math

import torch
from torch import nn

VEL_SCALE = 0.1      # typical per-step velocity in image units: inputs are divided by it
CONSTRAINT_PASSES = 3      # with both model.solid and model.walls: rounds of separation, then walls
MAX_POWER = 12.0          # with model.shapes: the squarest outline a pair touches along (superellipse exponent)
SHAPE_GAIN = 8.0          # with model.shapes: a pair's exponent is 2 + this x the sum of its squared squareness
CONTACT_SOFTNESS = 0.02   # width (image units, ~0.6 px) of the contact-range gate on messages
GATE_GAIN = 8.0           # the action gates' logits are this times their parameters, so the sparsity term (Adam
                          # steps of ~lr per parameter) can close the gate of a slot the action does not drive


class SlotDynamics:
    """One step of every slot's position and velocity: own motion, the action through a gate, contact."""

    def _dynamics(self, pos: torch.Tensor, vel: torch.Tensor, a: torch.Tensor,
                  seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: (B,K,2) positions and velocities, (B,A) action, (B,K) seen -> next (pos, vel).

        First each slot's own motion: a change of velocity from its position, velocity, identity and the
        action through the slot's learned gate (sparse: the gates of slots the action does not drive go
        to 0). Then contact: every ordered pair of active slots within the pair's learned contact range
        after that motion sends a message (edge MLP on relative position, distance, relative velocity and
        both identities), and a node MLP turns the summed messages into a further change of velocity. Slots
        never seen stay where they are and send no messages.
        """
        b, k = pos.shape[:2]
        present = self.active[None] * seen                                       # (B,K)
        ident = self.ident.expand(b, k, k)
        gated = a[:, None, :] * self.action_gates()[None, :, None]
        own_in = torch.cat([self._where(pos), vel / VEL_SCALE, ident, gated], -1)
        vel = vel + self._less_at_rest(self.own, own_in, (slice(2, 4), slice(4 + k, None))) * VEL_SCALE
        ahead = pos + vel
        i, j = self.pairs
        rel = ahead[:, j] - ahead[:, i]                                          # (B,E,2): receiver i, sender j
        dist = rel.norm(dim=-1, keepdim=True)
        near = torch.sigmoid((self._contact_range(i, j)[None, :, None] - dist) / CONTACT_SOFTNESS)
        edge_in = torch.cat([rel, dist, (vel[:, j] - vel[:, i]) / VEL_SCALE, ident[:, i], ident[:, j]], -1)
        msg = self.edge(edge_in) * near * (present[:, i] * present[:, j])[..., None]
        total = torch.zeros(b, k, msg.shape[-1], dtype=msg.dtype, device=msg.device).index_add_(1, i, msg)
        node_in = torch.cat([self._where(ahead), vel / VEL_SCALE, ident, total], -1)
        vel = vel + self._less_at_rest(self.node, node_in, (slice(4 + k, None),)) * VEL_SCALE
        vel = vel * present[..., None]
        # contact against solid objects, then the walls, a few times over: a box a wall holds also stops the
        # pusher behind it (position-based dynamics resolves its constraints the same way)
        if self.cfg.solid:  # the pairs' touching distances, outlines and how far each one gives way: once per step
            touch, give, power = self._solid_pairs(i, j, present)
        for _ in range(CONSTRAINT_PASSES if self.cfg.solid and self.cfg.walls else 1):
            if self.cfg.solid:
                vel = vel + self._separation(pos + vel, i, j, touch, give, power)
            if self.cfg.walls:  # an object stops at the edge of where it can be: its velocity into the wall is lost
                vel = torch.maximum(torch.minimum(pos + vel, self.wall_hi), self.wall_lo) - pos
        return pos + vel, vel

    def _where(self, pos: torch.Tensor) -> torch.Tensor:
        """What the dynamics nets see of a slot's position: all of it, or with ``model.position_input=border``
        only how far it is into the border band (``border_margin`` wide, 0 inside it, signed): motion away from
        the walls is then the same everywhere, so a net cannot learn that balls speed up mid-table and slow near
        the walls because, in the data, fast balls were launched mid-table and slow ones had just bounced."""
        if self.cfg.position_input == "full":
            return pos
        m = self.cfg.border_margin
        return torch.sign(pos) * (pos.abs() - (1 - m)).clamp(min=0) / m

    def _solid_pairs(self, i: torch.Tensor, j: torch.Tensor, present: torch.Tensor):
        """Per ordered pair (receiver i, sender j): the touching distance (1,E,1), the share of an overlap the
        receiver gives way by (B,E,1): the lighter of the two (learned ``heaviness``) more, times the pair's
        learned solidity, 0 where either slot is absent; and the exponent (1,E,1) of the superellipse the pair
        touches along (2, a circle, unless ``model.shapes``)."""
        radius = self._radii()
        share = torch.sigmoid(GATE_GAIN * (self.heaviness[j] - self.heaviness[i])) * self.solidity()[i, j]
        power = torch.full_like(radius[i], 2.0)
        if self.cfg.shapes:  # a disc against a square touches along a rounded square: a superellipse, exponent ~4
            power = (power + SHAPE_GAIN * (self.squareness[i] ** 2 + self.squareness[j] ** 2)).clamp(max=MAX_POWER)
        return ((radius[i] + radius[j])[None, :, None], (share[None] * present[:, i] * present[:, j])[..., None],
                power[None, :, None])

    def _separation(self, pos: torch.Tensor, i: torch.Tensor, j: torch.Tensor, touch: torch.Tensor,
                    give: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
        """(B,K,2) displacement that takes solid pairs apart to their touching distance (``model.solid``).

        Where two slots' outlines overlap after a step (their offset is inside the superellipse of radius
        ``touch`` and exponent ``power``), each is moved out along that outline's normal by its share of the
        overlap (``give``, from :meth:`_solid_pairs`). The displacement is added to the velocity as well, so an
        object that runs into a solid one stops at its surface instead of sinking into it (position-based
        contact)."""
        rel = pos[:, j] - pos[:, i]                                              # (B,E,2): receiver i, sender j
        size = rel.abs().amax(-1, keepdim=True) + 1e-6
        ratio = (rel.abs() + 1e-6) / size               # in (0, 1], 1 on the larger axis: the norm's sum is >= 1
        dist = size * (ratio ** power).sum(-1, keepdim=True) ** (1 / power)      # the pair's superellipse norm
        normal = torch.sign(rel) * (ratio * size / dist) ** (power - 1)           # its gradient (unit for circles)
        step = (touch - dist).clamp(min=0) / (normal ** 2).sum(-1, keepdim=True).clamp(min=1e-6)  # 0: coincident
        return torch.zeros_like(pos).index_add_(1, i, -normal * step * give)

    def solidity(self) -> torch.Tensor:
        """(K,K) symmetric, in [0, 1]: how far each pair of objects is kept from overlapping (``model.solid``)."""
        logits = self.solid_logit + self.solid_logit.T
        return torch.sigmoid(GATE_GAIN * logits / 2)

    def action_gates(self) -> torch.Tensor:
        """(K,) how much of the action reaches each slot's own motion, in [0, 1]."""
        return torch.sigmoid(GATE_GAIN * self.action_gate)

    def _contact_range(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The contact range (image units) of the pairs (i, j): the learned ``reach``, or with ``touch_floor``
        the distance at which the two objects touch plus the learned part (kept >= 0)."""
        if not self.cfg.touch_floor:
            return self.reach[i, j]
        radius = self._radii()
        return radius[i] + radius[j] + self.reach[i, j].clamp(min=0)

    def _radii(self) -> torch.Tensor:
        """(K,) radius of each slot's object (its usual area as a disc), image units."""
        return (self.usual_size / math.pi).sqrt() * 2 / self.image_size

    def _less_at_rest(self, net: nn.Module, x: torch.Tensor, causes: tuple) -> torch.Tensor:
        """``net(x)``; with ``inertia``, minus ``net`` of the same input with the ``causes`` (slices of the last
        axis) zeroed: the velocity and the action for ``own`` (a slot at rest and undriven), the summed
        messages for ``node`` (a slot untouched). The change of velocity is then 0 without a cause."""
        if not self.cfg.inertia:
            return net(x)
        rest = x.clone()
        for part in causes:
            rest[..., part] = 0
        both = net(torch.cat([x, rest], 0))
        return both[: x.shape[0]] - both[x.shape[0]:]

    @property
    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(receiver, sender) indices of the ordered pairs of distinct active slots."""
        idx = torch.nonzero(self.active > 0).flatten()
        i, j = torch.meshgrid(idx, idx, indexing="ij")
        keep = i != j
        return i[keep], j[keep]

