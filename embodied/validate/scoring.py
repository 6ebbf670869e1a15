"""0-100 probe scores, scaled between the best baseline and MuJoCo.

A probe reports several error measures (sub-errors, lower is better, 0 is
perfect: position errors in pixels, 1 - accuracy, 1 - SSIM, ...). They are put
on one scale before they are combined:

1. each sub-error ``e_j`` is divided by its normaliser: the copy-last-frame
   baseline's error on it (the one yardstick that does not depend on the model
   under test, so combined errors of different models are comparable), or the
   sub-error's *floor* (a tolerance in its own units) when that is larger; a
   sub-error copy-last gets right (the null-action test: copying the last frame
   never moves anything) is thereby a guard measured against its tolerance
   rather than a division by zero;
2. normalised sub-errors are clipped to [0, CAP] (a missing value counts as
   CAP) and averaged into the probe's combined error ``E``;
3. ``score = 100 * (E_ref - E) / (E_ref - E_mujoco)``, clipped to [0, 100],
   where ``E_ref`` is the best (lowest) baseline.

So the best baseline scores 0 and MuJoCo 100 by construction; what a probe
must show is a real *separation* ``E_ref - E_mujoco``. A probe whose
separation is below :data:`MIN_SEPARATION` cannot tell the baselines from the
truth: it is reported with ``separates = false`` and no scores (a bug in the
probe or its start states, never a result).
"""
from __future__ import annotations

import math

CAP = 2.0
MIN_SEPARATION = 0.1
BASELINES = ("copy_last", "action_blind")
TRUTH = "mujoco"
YARDSTICK = "copy_last"


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def normalised_errors(errors: dict, floors: dict | None = None, yardstick: str = YARDSTICK) -> dict:
    """{sub: {who: normalised error in [0, CAP]}}."""
    floors = floors or {}
    out = {}
    for sub, by_who in errors.items():
        ref = by_who.get(yardstick)
        norm = max(ref if _finite(ref) else 0.0, float(floors.get(sub, 0.0)), 1e-12)
        out[sub] = {who: (min(max(v / norm, 0.0), CAP) if _finite(v) else CAP) for who, v in by_who.items()}
    return out


def probe_score(errors: dict, floors: dict | None = None, baselines=BASELINES, truth: str = TRUTH,
                min_separation: float = MIN_SEPARATION) -> dict:
    """Scores of every predictor in ``errors`` ({sub: {who: error}}) for one probe.

    Returns ``score`` {who: 0-100 or None}, ``combined_error`` {who: E},
    ``reference`` (the best baseline), ``separation`` and ``separates``.
    """
    # a measure the truth itself cannot produce (nothing to read on this task) is left out
    errors = {k: v for k, v in errors.items() if _finite(v.get(truth))}
    if not errors:
        raise ValueError("a probe must report at least one error measure that MuJoCo itself can produce")
    norm = normalised_errors(errors, floors)
    whos = sorted({w for by_who in errors.values() for w in by_who})
    combined = {w: sum(norm[s].get(w, CAP) for s in norm) / len(norm) for w in whos}
    ref = min(baselines, key=lambda b: combined[b])
    separation = combined[ref] - combined[truth]
    separates = separation >= min_separation
    score = {}
    for w in whos:
        if not separates:
            score[w] = None
            continue
        s = 100.0 * (combined[ref] - combined[w]) / separation
        score[w] = round(min(max(s, 0.0), 100.0), 1)
    return {"score": score, "combined_error": {w: round(v, 4) for w, v in combined.items()},
            "reference": ref, "separation": round(separation, 4), "separates": bool(separates)}
