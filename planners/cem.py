"""Cross-entropy method: fit a diagonal Gaussian over action sequences to the best-scoring samples.

Each iteration samples ``samples - 1`` sequences from N(mean, std^2) (clamped to
the action bounds) plus the current mean itself, scores all of them in one
batched rollout, and refits mean and std to the ``elites`` best (blended with
the old ones by ``momentum``; std floored at ``min_std``). The starting mean is
the previous plan shifted (warm start); the std restarts at ``noise_std`` every
call so the search never collapses for good.
"""
from __future__ import annotations

import torch

from planners.base import Planner, PlannerSettings


class CEM(Planner):
    name = "cem"
    defaults = PlannerSettings()

    def _optimize(self, model, state, goal, mean):
        s = self.settings
        std = torch.full_like(mean, s.noise_std)
        best, best_score = self.clamp(mean), -torch.inf
        for _ in range(s.iterations):
            candidates = torch.cat([self.clamp(mean)[None], self.gaussian(mean, std, s.samples - 1)])
            scores = self.score(model, state, candidates, goal)
            top = torch.topk(scores, s.elites).indices
            if scores[top[0]] > best_score:
                best, best_score = candidates[top[0]], float(scores[top[0]])
            elites = candidates[top]
            mean = s.momentum * mean + (1 - s.momentum) * elites.mean(dim=0)
            std = (s.momentum * std + (1 - s.momentum) * elites.std(dim=0, unbiased=False)).clamp_min(s.min_std)
        self.info = {"best_score": best_score, "mean_std": float(std.mean())}
        return best if s.select == "best" else mean
