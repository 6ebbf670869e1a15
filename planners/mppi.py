"""Model predictive path integral control: a softmax-weighted average of perturbed sequences.

Each iteration perturbs the current mean with Gaussian noise of fixed std
``noise_std`` (the mean itself is one of the candidates), scores every sequence
(clamped to the action bounds) in one batched rollout, and moves the mean to
the average of the candidates weighted by ``softmax(z / temperature)``, where
``z`` is the score standardised over the batch: that makes ``temperature``
independent of the reward scale of the task or model. With a policy prior the
starting mean is its rollout and its proposals (``extra``) replace some of the
perturbed sequences (see :mod:`embodied.planners.base`).
"""
from __future__ import annotations

import torch

from embodied.planners.base import Planner, PlannerSettings


class MPPI(Planner):
    name = "mppi"
    defaults = PlannerSettings(noise_std=0.7)

    def _optimize(self, model, state, goal, mean, extra):
        s = self.settings
        best, best_score = self.clamp(mean), -torch.inf
        for _ in range(s.iterations):
            candidates = torch.cat([mean[None], extra, self.gaussian(mean, s.noise_std, s.samples - 1 - len(extra))])
            scores = self.score(model, state, candidates, goal)
            i = int(torch.argmax(scores))
            if scores[i] > best_score:
                best, best_score = self.clamp(candidates[i]), float(scores[i])
            finite = torch.isfinite(scores)
            if not finite.any():
                continue
            z = torch.where(finite, scores, scores[finite].min())
            z = (z - z.max()) / (z.std(unbiased=False) + 1e-8)
            weights = torch.softmax(torch.where(finite, z / s.temperature, -torch.inf), dim=0)
            new_mean = torch.einsum("n,nha->ha", weights, candidates)
            mean = self.clamp(s.momentum * mean + (1 - s.momentum) * new_mean)
        self.info = {"best_score": best_score}
        return best if s.select == "best" else mean
