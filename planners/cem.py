"""Cross-entropy method: fit a diagonal Gaussian over action sequences to the best-scoring samples.

Each iteration samples ``samples - 1`` sequences from N(mean, std^2) (temporally
coloured noise, ``noise_beta``) plus the current mean itself, scores all of
them (clamped to the action bounds) in one batched rollout, and refits mean and
std to the ``elites`` best, each weighted by ``softmax(z / temperature)`` of its
standardised score (as TD-MPC2 does; a large temperature gives the plain
elite average). The refit is blended with the old proposal by ``momentum``,
the std floored at ``min_std`` and the mean kept inside the bounds. The
starting mean is the previous plan shifted (warm start); the std restarts at
``noise_std`` every call so the search never collapses for good. With a policy
prior the starting mean is its rollout and its proposals (``extra``) replace
some of the samples (see :mod:`embodied.planners.base`).
"""
from __future__ import annotations

import torch

from embodied.planners.base import Planner, PlannerSettings


class CEM(Planner):
    name = "cem"
    defaults = PlannerSettings()

    def _optimize(self, model, state, goal, mean, extra):
        s = self.settings
        std = torch.full_like(mean, s.noise_std)
        best, best_score = self.clamp(mean), -torch.inf
        for _ in range(s.iterations):
            candidates = torch.cat([mean[None], extra, self.gaussian(mean, std, s.samples - 1 - len(extra))])
            scores = self.score(model, state, candidates, goal)
            top = torch.topk(scores, s.elites).indices
            elites, elite_scores = candidates[top], scores[top]
            if elite_scores[0] > best_score:
                best, best_score = self.clamp(elites[0]), float(elite_scores[0])
            finite = torch.isfinite(scores)
            if not torch.isfinite(elite_scores).any():
                continue
            spread = scores[finite].std(unbiased=False) + 1e-8 if finite.sum() > 1 else 1.0
            z = torch.where(torch.isfinite(elite_scores), (elite_scores - elite_scores[0]) / spread, -torch.inf)
            w = torch.softmax(z / s.temperature, dim=0)[:, None, None]
            new_mean = (w * elites).sum(dim=0)
            new_std = (w * (elites - new_mean) ** 2).sum(dim=0).sqrt()
            mean = self.clamp(s.momentum * mean + (1 - s.momentum) * new_mean)
            std = (s.momentum * std + (1 - s.momentum) * new_std).clamp_min(s.min_std)
        self.info = {"best_score": best_score, "mean_std": float(std.mean())}
        return best if s.select == "best" else mean
