"""Planning fidelity: does the model rank action sequences as the simulator does?

From each start state, N candidate action sequences (half constant headings,
half smooth random, the kind of proposals CEM and MPPI sample). Each predictor
returns its predicted rewards through ``model.rollout`` (the batched call the
planners make); MuJoCo's true returns come from replaying every candidate in
the real env. Measures:

* ``spearman``: Spearman rank correlation of predicted and true returns, mean
  over start states (a predictor whose returns are all equal ranks nothing: 0);
  scored as 1 - rho;
* ``top1_regret``: (best true return - true return of the predictor's top
  choice) / (best - mean true return): 0 = picks the best, 1 = no better than a
  random pick (ties are averaged); what a planner loses by trusting the model;
* ``spearman`` against horizon: the same correlation for returns summed over
  the first h steps.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from embodied.validate.harness import WHO, smooth_actions

QUESTION = "does the model rank action sequences as the simulator does?"


def rank_correlation(pred: np.ndarray, true: np.ndarray) -> float:
    """Spearman rho; 0 when either side is constant (no ranking information)."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if not np.isfinite(pred).all():
        return 0.0
    if np.ptp(pred) <= 1e-9 * max(1.0, np.abs(pred).max()) or np.ptp(true) == 0:
        return 0.0
    rho = spearmanr(pred, true).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def top1_regret(pred: np.ndarray, true: np.ndarray) -> float:
    """Normalised regret of picking the candidate with the best predicted return (ties averaged)."""
    pred = np.where(np.isfinite(pred), pred, -np.inf)
    top = pred >= pred.max() - 1e-9 * max(1.0, np.abs(pred[np.isfinite(pred)]).max(initial=0.0))
    span = true.max() - true.mean()
    if span <= 0:
        return 0.0
    return float((true.max() - true[top].mean()) / span)


def candidates(rng: np.random.Generator, n: int, horizon: int, dim: int) -> np.ndarray:
    """n action sequences (n, H, A): constant headings and smooth random sequences."""
    out = np.empty((n, horizon, dim), np.float32)
    for i in range(n):
        if i % 2 == 0:
            v = rng.normal(size=dim)
            v = v / (np.linalg.norm(v) + 1e-9) * rng.uniform(0.4, 1.0)
            out[i] = np.tile(v, (horizon, 1))
        else:
            out[i] = smooth_actions(rng, horizon, dim)
    return out


def run(h) -> dict:
    n_starts, n_cand, horizon = h.settings.pick(3, 8), h.settings.pick(16, 48), h.settings.pick(10, 15)
    starts = h.starts("planning_fidelity", n_starts)
    rng = np.random.default_rng(h.settings.seed + 777)
    cands = [candidates(rng, n_cand, horizon, h.action_dim) for _ in starts]
    true_rewards = [np.stack([h.truth(s, a).rewards for a in c]) for s, c in zip(starts, cands)]  # (N, H)
    metrics, errors = {}, {"rank_error": {}, "top1_regret": {}}
    x = list(range(1, horizon + 1))
    curves = {"spearman": {"x": x, "ylabel": "Spearman rho of returns summed to step h"}}
    scatter, per_start = {}, {}
    for who in WHO:
        rhos, regrets, by_h = [], [], []
        for i, (s, c) in enumerate(zip(starts, cands)):
            pred = h.predicted_rewards(who, s, c)
            true = true_rewards[i]
            rhos.append(rank_correlation(pred.sum(1), true.sum(1)))
            regrets.append(top1_regret(pred.sum(1), true.sum(1)))
            cp, ct = np.cumsum(pred, 1), np.cumsum(true, 1)
            by_h.append([rank_correlation(cp[:, t], ct[:, t]) for t in range(horizon)])
            if i == 0:
                scatter[who] = {"true": true.sum(1).tolist(), "pred": pred.sum(1).tolist()}
        per_start[who] = (rhos, pred)
        metrics[who] = {"spearman": float(np.mean(rhos)), "spearman_min": float(np.min(rhos)),
                        "top1_regret": float(np.mean(regrets))}
        errors["rank_error"][who] = 1.0 - metrics[who]["spearman"]
        errors["top1_regret"][who] = metrics[who]["top1_regret"]
        curves["spearman"][who] = np.mean(by_h, axis=0).tolist()
    # media: the model's top choice from its best- and worst-ranked start, imagined against real
    rhos = per_start["model"][0]
    cases = []
    for label, i in (("best", int(np.argmax(rhos))), ("worst", int(np.argmin(rhos)))):
        pred = h.predicted_rewards("model", starts[i], cands[i]).sum(1)
        top = cands[i][int(np.argmax(pred))]
        cases.append({"label": label, "seed": starts[i].seed, "error": float(rhos[i]), "error_name": "Spearman rho",
                      "real": h.truth(starts[i], top).frames, "pred": h.predict("model", [starts[i]], top[None])[0]})
    return {"metrics": metrics, "errors": errors, "floors": {"rank_error": 0.05, "top1_regret": 0.05},
            "curves": curves, "cases": cases, "scatter": scatter,
            "settings": {"start_states": n_starts, "candidates": n_cand, "horizon": horizon}}
