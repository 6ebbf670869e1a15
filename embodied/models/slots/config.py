"""The slots model's settings."""
from __future__ import annotations

from dataclasses import dataclass

from embodied.errors import UserError
from embodied.models.codec import FLOOR_RGB
from embodied.models.learned import check_fields


@dataclass
class SlotsConfig:
    """Defaults: the recipe measured on push and occlusion (README, "Object-factored model")."""

    context: int = 4            # real frames the training loss filters before its open-loop rollout
    memory: int = 60            # real frames ``encode`` filters at most (max_context): a covered object keeps
                                # the place it was last seen, up to this many frames back
    slots: int = 4              # the most objects; the palette found in the data fills the first ones
    sprite: int = 16            # sprite resolution (cells per side)
    sprite_px: int = 24         # sprite window width in pixels (the largest object must fit)
    hidden: int = 128           # interaction-network width
    colour_tol: float = 0.12    # width of the colour key (fraction of full scale)
    see_from: float = 0.6       # visibility (seen share of the usual size) below which a slot is not corrected
    see_full: float = 0.9       # ... above which it is fully corrected
    pos_weight: float = 100.0   # open-loop position error (image units)
    one_step_weight: float = 0.0  # one dynamics step from every filtered frame of the window to the next (teacher
                                  # forcing beside the open loop: a long open loop alone teaches a model unsure of a
                                  # late bounce to slow every object down)
    pixel_weight: float = 1.0   # rendered frames (foreground-weighted MSE)
    reward_weight: float = 1.0
    proprio_weight: float = 1.0
    object_weight: float = 0.0  # object-position head on the dataset's object tracks (training signal only)
    proprio_locate: bool = False  # place a slot its frame does not show from proprioception, where proprio
                                  # predicts its position (the robot's own body under an occluder)
    locate_trust: float = 0.03  # ... to within this error (image units; running mean over seen frames)
    sparsity_weight: float = 0.1  # L1 on the action gates and the contact ranges: the action drives few slots,
                                  # and slots touch only when close
    touch_floor: bool = False   # a pair's contact range is at least the distance at which the two objects touch
                                # (their usual areas as discs); the learned range only adds to it
    inertia: bool = False       # Newton's first law: a slot at rest, not driven and not touched stays at rest (its
                                # own motion and its contact response are 0 without velocity, action or messages)
    solid: bool = False         # objects do not sink into each other: overlapping discs are taken apart after each
                                # step, by a learned solidity per pair and heaviness per object (a goal marker can
                                # learn to be passed over, a ball to stop at a pusher at rest)
    shapes: bool = False        # with solid: each object's outline is a learned superellipse (a disc, or squarer), so
                                # a box pushed off-centre moves along its face's normal, not the line between centres
    position_input: str = "full"  # what the dynamics nets see of a slot's position: "full", or "border" (only its
                                  # depth into the band along the frame's edge: free motion is the same everywhere
                                  # else, as on a flat table with walls; not for a jointed arm)
    border_margin: float = 0.3  # width of that band (image units; the frame spans 2)
    walls: bool = False         # each object stays inside a learned box (started at the extremes where the data
                                # shows it) and stops at its edge: the walls a border-only position input cannot see
    fg_weight: float = 10.0
    proprio_dropout: float = 0.0
    floor_rgb: tuple = FLOOR_RGB

    def __post_init__(self):
        check_fields(self, positive=("context", "memory", "slots", "sprite", "sprite_px", "hidden"),
                     non_negative=("pos_weight", "one_step_weight", "pixel_weight", "reward_weight", "proprio_weight",
                                   "object_weight", "sparsity_weight", "fg_weight"),
                     fractions=("proprio_dropout",))
        if self.position_input not in ("full", "border"):
            raise UserError(f"model.position_input = {self.position_input!r}: use full or border")
        if self.shapes and not self.solid:
            raise UserError("model.shapes = true shapes the solid contact, which is off: set model.solid = true")
        if not 0 < self.border_margin <= 1:
            raise UserError(f"model.border_margin = {self.border_margin} must be in (0, 1]")
        if not 0 < self.colour_tol < 1:
            raise UserError(f"model.colour_tol = {self.colour_tol} must be between 0 and 1")
        if not 0 <= self.see_from < self.see_full <= 1:
            raise UserError(f"model.see_from = {self.see_from} and model.see_full = {self.see_full} must satisfy "
                            "0 <= see_from < see_full <= 1")

