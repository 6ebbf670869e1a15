"""MPC planners over a batched world model: CEM, MPPI and random shooting.

All share ``plan(model, state, goal=None) -> actions (H, A)`` (see
:mod:`planners.base`); :mod:`planners.mpc` runs one in a real env
(``embodied plan``).
"""
from __future__ import annotations

from planners.base import Planner, PlannerSettings, make_settings
from planners.cem import CEM
from planners.mppi import MPPI
from planners.shooting import RandomShooting

PLANNERS: dict[str, type[Planner]] = {"cem": CEM, "mppi": MPPI, "random": RandomShooting}


def make_planner(name: str, **settings) -> Planner:
    """A planner by name with setting overrides, e.g. ``make_planner("cem", horizon=15, seed=1)``."""
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}: use one of {', '.join(PLANNERS)}")
    return PLANNERS[name](**settings)


__all__ = ["PLANNERS", "Planner", "PlannerSettings", "make_planner", "make_settings", "CEM", "MPPI", "RandomShooting"]
