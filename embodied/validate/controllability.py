"""Controllability: does the actuated body move as the actions say?

* Position error of every actuated body (the pusher, the fingertip) against the
  horizon: its colour centroid in the predicted frame against the pixel
  projection of its true position (``info["objects"]``). Steps where the real
  frame does not show the body whole (under the occluder) are left out: that
  is the persistence probe's business.
* Action sensitivity: from the same start, two different action sequences;
  how much the predicted frames differ between the branches, against how much
  the real frames differ. ``action_sensitivity`` = predicted / real difference
  (1 is right, 0 is a model that ignores actions); the scored error is
  sum_(i,t) |D_pred - D_real| / sum_(i,t) D_real over every start i and step t
  (0 perfect, 1 for a model that ignores its actions, above 1 for one that
  over-reacts). The sums are pooled over starts: a start whose real branches
  barely differ (the body under an occluder the whole time) adds its error
  without dividing by its near-zero difference.
"""
from __future__ import annotations

import numpy as np

from embodied.validate.harness import WHO, curve, nanmean, nanmean_along, smooth_actions
from embodied.vision import colour_centroid, pixel_error

QUESTION = "does the body move as the action says?"
VISIBLE_TOL_PX = 1.5  # a real-frame centroid this close to the projection: the body is wholly visible


def visible_mask(real: np.ndarray, true_px: np.ndarray, rgb) -> np.ndarray:
    """(...) whether the real frames show the object whole (centroid agrees with its true position)."""
    xy, present = colour_centroid(real, rgb)
    err = np.linalg.norm(np.nan_to_num(xy, nan=1e6) - true_px, axis=-1)
    return present & (err < VISIBLE_TOL_PX)


def body_errors(h, real: np.ndarray, pred: np.ndarray, truths, names) -> np.ndarray:
    """(B, H) pixel error of the actuated bodies (mean over bodies), NaN where the truth hides them."""
    per_body = []
    size = real.shape[-3:-1]
    for name in names:
        rgb = h.objects[name].rgb
        true_px = np.stack([t.pixels[name] for t in truths])
        vis = visible_mask(real, true_px, rgb)
        xy, _ = colour_centroid(pred, rgb)
        err = pixel_error(xy, true_px, image_size=size)
        per_body.append(np.where(vis, err, np.nan))
    return nanmean_along(np.stack(per_body), axis=0)


def frame_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute pixel difference (0..1) of frame pairs (..., h, w, 3) -> (...)."""
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=(-3, -2, -1)) / 255.0


def sensitivity_error(d_pred: np.ndarray, d_true: np.ndarray) -> float:
    """sum |D_pred - D_real| / sum D_real over every start and step ((B, H) branch differences), pooled so a
    start whose real branches barely differ adds its error without dividing by its near-zero difference."""
    return float(np.abs(d_pred - d_true).sum() / max(float(d_true.sum()), 1e-9))


def run(h) -> dict:
    main = h.main_rollouts()
    names = h.actuated
    if not names:
        raise RuntimeError(f"task {h.task} has no actuated object to read from frames")
    real, horizon, truths = main["real"], main["horizon"], main["truths"]
    x = list(range(1, horizon + 1))
    metrics = {w: {} for w in WHO}
    errors = {"actuated_px_error": {}, "action_sensitivity_error": {}}
    curves = {"actuated_px_error": {"x": x, "ylabel": f"{'/'.join(names)} position error (px)"},
              "branch_difference": {"x": x, "ylabel": "difference between two action branches (0..1)"}}
    per_rollout = {}
    for who in WHO:
        err = body_errors(h, real, main["pred"][who], truths, names)
        metrics[who]["actuated_px_error"] = nanmean(err)
        metrics[who]["actuated_px_error_final"] = nanmean(err[:, -1])
        errors["actuated_px_error"][who] = nanmean(err)
        curves["actuated_px_error"][who] = curve(err)
        per_rollout[who] = np.array([nanmean(r) for r in err])

    # action sensitivity: two branches from each start
    starts = main["starts"][: h.settings.pick(4, 12)]
    rng = np.random.default_rng(h.settings.seed + 4242)
    branch_a = np.stack([smooth_actions(rng, horizon, h.action_dim) for _ in starts])
    branch_b = np.stack([smooth_actions(rng, horizon, h.action_dim) for _ in starts])
    real_a = np.stack([h.truth(s, a).frames for s, a in zip(starts, branch_a)])
    real_b = np.stack([h.truth(s, b).frames for s, b in zip(starts, branch_b)])
    d_true = frame_difference(real_a, real_b)                       # (B, H)
    curves["branch_difference"]["truth"] = curve(d_true)
    for who in WHO:
        pa, pb = h.predict(who, starts, branch_a), h.predict(who, starts, branch_b)
        d = frame_difference(pa, pb)
        sens_err = sensitivity_error(d, d_true)
        metrics[who]["action_sensitivity"] = float(d.sum() / max(d_true.sum(), 1e-9))
        metrics[who]["action_sensitivity_error"] = sens_err
        errors["action_sensitivity_error"][who] = sens_err
        curves["branch_difference"][who] = curve(d)

    finite = np.where(np.isfinite(per_rollout["model"]), per_rollout["model"], np.inf)
    order = np.argsort(finite)
    cases = [{"label": label, "seed": main["starts"][i].seed, "error": float(per_rollout["model"][i]),
              "error_name": "body error (px)", "real": real[i], "pred": main["pred"]["model"][i]}
             for label, i in (("best", order[0]), ("worst", order[-1]))]
    return {"metrics": metrics, "errors": errors,
            "floors": {"actuated_px_error": 1.0, "action_sensitivity_error": 0.05},
            "curves": curves, "cases": cases,
            "settings": {"start_states": len(real), "horizon": horizon, "bodies": names,
                         "sensitivity_start_states": len(starts)}}
