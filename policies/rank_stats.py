"""How well imagined per-policy numbers rank policies as the real ones do: pure functions.

On per-policy means (one value per policy):
    ``spearman`` and ``pearson`` (scipy.stats; NaN when either side is
    constant); ``top1``: of the policies tied for best in imagination, the
    share also tied for best in reality (1: the model picks a real best);
    ``pairwise``: over the policy pairs the real task orders (not tied), the
    share the model orders the same way, a tie in imagination counting one
    half. Confidence intervals resample episodes with replacement (the same
    start states for every policy and both worlds, so columns are resampled
    together), percentile intervals from a seeded generator.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

METRICS = ("success", "return")


def _pair(real, imagined) -> tuple[np.ndarray, np.ndarray]:
    real, imagined = np.asarray(real, np.float64).ravel(), np.asarray(imagined, np.float64).ravel()
    if real.shape != imagined.shape:
        raise ValueError(f"{real.size} real values but {imagined.size} imagined ones: one of each per policy")
    return real, imagined


def _constant(x: np.ndarray) -> bool:
    return x.size < 2 or bool(np.all(x == x[0]))


def spearman(real, imagined) -> float:
    """Spearman rank correlation of real and imagined values (one per policy); NaN when either is constant."""
    real, imagined = _pair(real, imagined)
    if _constant(real) or _constant(imagined):
        return float("nan")
    return float(stats.spearmanr(real, imagined).statistic)


def pearson(real, imagined) -> float:
    """Pearson correlation of real and imagined values (one per policy); NaN when either is constant."""
    real, imagined = _pair(real, imagined)
    if _constant(real) or _constant(imagined):
        return float("nan")
    return float(stats.pearsonr(real, imagined).statistic)


def top1_agreement(real, imagined) -> float:
    """Of the policies tied for best in imagination, the share also tied for best in reality (1: a real best)."""
    real, imagined = _pair(real, imagined)
    if real.size == 0:
        return float("nan")
    picked = imagined == imagined.max()
    return float(np.mean(real[picked] == real.max()))


def pairwise_agreement(real, imagined) -> float:
    """Over the policy pairs the real values order (not tied), the share imagination orders the same way.

    A pair tied in imagination counts one half; NaN when reality ties every pair.
    """
    real, imagined = _pair(real, imagined)
    i, j = np.triu_indices(real.size, k=1)
    real_sign, imagined_sign = np.sign(real[i] - real[j]), np.sign(imagined[i] - imagined[j])
    ordered = real_sign != 0
    if not ordered.any():
        return float("nan")
    score = np.where(imagined_sign == 0, 0.5, (real_sign == imagined_sign).astype(np.float64))
    return float(score[ordered].mean())


STATISTICS = {"spearman": spearman, "pearson": pearson, "top1": top1_agreement, "pairwise": pairwise_agreement}


def bootstrap_ci(real, imagined, statistic, samples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over episode resamples.

    ``real`` and ``imagined`` are (policies, episodes) per-episode values, episode
    ``e`` the same start state in every row and in both arrays, so the same
    resampled columns are taken from both; the statistic is computed on the
    per-policy means. Resamples where it is undefined (NaN) are dropped; (NaN,
    NaN) when none is left. The generator is seeded: the same inputs give the
    same interval.
    """
    real, imagined = np.asarray(real, np.float64), np.asarray(imagined, np.float64)
    if real.ndim != 2 or real.shape != imagined.shape:
        raise ValueError(f"real {real.shape} and imagined {imagined.shape} must both be (policies, episodes)")
    rng = np.random.default_rng(seed)
    episodes = real.shape[1]
    values = np.empty(samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for k in range(samples):
            idx = rng.integers(0, episodes, episodes)
            values[k] = statistic(real[:, idx].mean(1), imagined[:, idx].mean(1))
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def ranking_stats(real, imagined, samples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Every statistic of :data:`STATISTICS` on (policies, episodes) arrays: {name: {"value", "ci": [lo, hi]}}."""
    real, imagined = np.asarray(real, np.float64), np.asarray(imagined, np.float64)
    out = {}
    for name, fn in STATISTICS.items():
        value = fn(real.mean(1), imagined.mean(1))
        ci = bootstrap_ci(real, imagined, fn, samples, seed, level) if samples else (float("nan"),) * 2
        out[name] = {"value": finite(value), "ci": [finite(ci[0]), finite(ci[1])]}
    return out


def finite(x):
    """A JSON number, or None for NaN / infinity."""
    return float(x) if x is not None and np.isfinite(x) else None


# ---- the settings -----------------------------------------------------------------------------------------------


def ranks(values: np.ndarray) -> list[float]:
    """1 = best; ties share their mean rank."""
    return [float(r) for r in stats.rankdata(-np.asarray(values, np.float64))]
