"""Acting from the policy prior alone: its noise-free imagined rollout is the plan, no search.

The fastest end of the dial whose other points are CEM and MPPI with a prior:
one policy call and one ``model.step`` per horizon step, batch 1 (with
``horizon=1``, a single policy call on the encoded state). Needs a prior
(``make_planner("policy", prior=load_prior(path, model))``, ``embodied plan
--planner policy --prior POLICY``).
"""
from __future__ import annotations

from embodied.planners.base import Planner, PlannerSettings


class PolicyPlanner(Planner):
    name = "policy"
    defaults = PlannerSettings()

    def start(self, model, state, action_dim):
        """The prior's noise-free rollout (H, A), nothing else to score."""
        if self.prior is None:
            raise ValueError("the policy planner acts from a policy prior alone: pass one (--prior POLICY)")
        s = self.settings
        rollout = self.prior.propose(model, state, 1, s.horizon, low=s.action_low, high=s.action_high)
        return rollout[0], rollout[:0]

    def _optimize(self, model, state, goal, mean, extra):
        return mean
