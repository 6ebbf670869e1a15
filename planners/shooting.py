"""Random shooting: score uniform random sequences and keep the best one.

The baseline the other planners must beat. It spends the same budget as CEM
(``iterations`` batches of ``samples`` sequences) and also scores the warm-start
sequence (the previous best, shifted), so it never forgets a good plan; with a
policy prior, its proposals are scored in the first batch too.
"""
from __future__ import annotations

import torch

from embodied.planners.base import Planner, PlannerSettings


class RandomShooting(Planner):
    name = "random"
    defaults = PlannerSettings()

    def _optimize(self, model, state, goal, mean, extra):
        s = self.settings
        best, best_score = self.clamp(mean), -torch.inf
        horizon, action_dim = mean.shape
        for it in range(s.iterations):
            candidates = self.uniform(s.samples, horizon, action_dim)
            if it == 0:
                candidates[0] = self.clamp(mean)
                candidates[1:1 + len(extra)] = self.clamp(extra)
            scores = self.score(model, state, candidates, goal)
            i = int(torch.argmax(scores))
            if scores[i] > best_score:
                best, best_score = candidates[i], float(scores[i])
        self.info = {"best_score": best_score}
        return best
