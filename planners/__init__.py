"""MPC planners over a batched world model: CEM, MPPI, random shooting, and a policy acting alone.

All share ``plan(model, state, goal=None) -> actions (H, A)`` (see
:mod:`embodied.planners.base`); :mod:`embodied.planners.mpc` runs one in a real env
(``embodied plan``). A policy prior (:mod:`embodied.planners.prior`) proposes
candidates and the starting plan to any of them; the ``policy`` planner acts
from it alone.
"""
from __future__ import annotations

from embodied.envs.registry import task_class
from embodied.planners.base import Planner, PlannerSettings, make_settings
from embodied.planners.cem import CEM
from embodied.planners.mppi import MPPI
from embodied.planners.policy import PolicyPlanner
from embodied.planners.prior import PolicyPrior, load_prior
from embodied.planners.shooting import RandomShooting

PLANNERS: dict[str, type[Planner]] = {"cem": CEM, "mppi": MPPI, "random": RandomShooting, "policy": PolicyPlanner}


def make_planner(name: str, task: str | None = None, prior: PolicyPrior | None = None, **settings) -> Planner:
    """A planner by name with setting overrides, e.g. ``make_planner("cem", horizon=15, seed=1)``.

    ``task`` applies that task's ``planner_defaults`` (its task spec) first;
    explicit settings (not ``None``) win over them. ``prior`` (see
    :func:`embodied.planners.prior.load_prior`) proposes candidates and the starting plan.
    """
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}: use one of {', '.join(PLANNERS)}")
    merged = dict(task_class(task).planner_defaults) if task else {}
    merged.update({k: v for k, v in settings.items() if v is not None})
    return PLANNERS[name](prior=prior, **merged)


__all__ = ["CEM", "MPPI", "PLANNERS", "Planner", "PlannerSettings", "PolicyPlanner", "PolicyPrior", "RandomShooting",
           "load_prior", "make_planner", "make_settings"]
