"""MPC planners over a batched world model: CEM, MPPI and random shooting.

All share ``plan(model, state, goal=None) -> actions (H, A)`` (see
:mod:`embodied.planners.base`); :mod:`embodied.planners.mpc` runs one in a real env
(``embodied plan``).
"""
from __future__ import annotations

from embodied.planners.base import Planner, PlannerSettings, make_settings
from embodied.planners.cem import CEM
from embodied.planners.mppi import MPPI
from embodied.planners.shooting import RandomShooting

PLANNERS: dict[str, type[Planner]] = {"cem": CEM, "mppi": MPPI, "random": RandomShooting}

# Per-task overrides of the defaults, measured with the MuJoCo oracle. Push needs a
# longer look-ahead: the pusher covers 2.5 cm per step and must often go round the
# block, and a block pushed past the goal into the wall cannot be pulled back; at
# horizon 12 the oracle solved 7/10 episodes (seeds 0-9), at 20-24 the failures recover.
# Fewer samples keep the cost per action about the same (5,760 imagined steps).
TASK_DEFAULTS: dict[str, dict] = {
    "push": {"horizon": 20, "samples": 96, "elites": 10},
}


def make_planner(name: str, task: str | None = None, **settings) -> Planner:
    """A planner by name with setting overrides, e.g. ``make_planner("cem", horizon=15, seed=1)``.

    ``task`` applies that task's :data:`TASK_DEFAULTS` first; explicit settings
    (not ``None``) win over them.
    """
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}: use one of {', '.join(PLANNERS)}")
    merged = dict(TASK_DEFAULTS.get(task or "", {}))
    merged.update({k: v for k, v in settings.items() if v is not None})
    return PLANNERS[name](**merged)


__all__ = ["PLANNERS", "TASK_DEFAULTS", "Planner", "PlannerSettings", "make_planner", "make_settings",
           "CEM", "MPPI", "RandomShooting"]
