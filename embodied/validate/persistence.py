"""Persistence: does a hidden object come back where physics puts it? Do still objects stay still?

For tasks with an occluder (``env.occluder_half_width``, ``env.is_hidden``);
the task's ``probes["persistence"]`` names the ``movers`` (objects that pass
under it) and the ``still`` object. Two parts:

1. **Crossings.** From start states where the movers start clear of the
   occluder, the actuated mover is driven across it (constant actions toward
   the other side) while a passive one rolls, so both kinds pass under it. For every
   object that the real frames show go wholly under the occluder and come out
   whole again within the horizon (an *event*), on the predicted frames:

   * ``reappear_px_error``: position error (colour centroid against the true
     position) over the first :data:`AFTER_STEPS` steps after it is whole again
     (a missing object costs the image diagonal);
   * ``presence``: fraction of those steps the object is in the predicted frame;
   * ``reappear_time_error``: |steps until the object shows (any pixels outside
     the occluder) in the prediction - the same in the real frames|; a
     prediction that never hides it "reappears" at once, one that loses it
     never does (counted as the end of the horizon);
   * ``freeze_ratio``: (p_pred - p_in) . d / |d|^2 at the step it is whole again,
     with p_in its true position just before it was hidden and d its true
     displacement while hidden: 0 = the model froze the hidden object, 1 = it
     moved it as the physics did (scored as |1 - ratio|).

2. **Long rollouts.** ``long_steps`` (100+) steps of zero action: position error
   of every object whenever the real frame shows it whole
   (``long_rollout_px_error``), and ``still_drift_px``: how far the predicted
   still object wanders from where the last real frame showed it.
"""
from __future__ import annotations

import numpy as np

from embodied.validate.controllability import visible_mask
from embodied.validate.harness import WHO, curve, nanmean, nanmean_along
from embodied.vision import colour_centroid, pixel_error

QUESTION = "does a hidden object come back where physics puts it?"
AFTER_STEPS = 3
MOVER_MARGIN_M = 0.06   # movers start this far beyond the occluder's edge (|x| > half width + margin)
STILL_MARGIN_M = 0.05   # and the still object this far


def _band_half_px(h) -> float:
    return h.env.occluder_half_width * h.size / h.env.view_extent


def _shows(h, xy, present) -> np.ndarray:
    """Object visible somewhere outside the occluder band."""
    centre = (h.size - 1) / 2
    outside = np.abs(np.nan_to_num(xy[..., 0], nan=centre) - centre) > _band_half_px(h)
    return present & outside


def find_events(h, start, truth, real: np.ndarray, movers) -> list[dict]:
    """Objects the real frames show go wholly under the occluder and come out whole again."""
    events = []
    for name in movers:
        hidden = h.env.is_hidden(truth.objects[name][:, :2])
        if h.env.is_hidden(start.objects[name][:2]) or not hidden.any():
            continue
        t_in = int(np.argmax(hidden))
        whole = visible_mask(real, truth.pixels[name], h.objects[name].rgb)
        after = np.nonzero(whole[t_in:])[0]
        if not after.size:
            continue
        t_out = t_in + int(after[0])
        xy, present = colour_centroid(real, h.objects[name].rgb)
        shows = _shows(h, xy, present)
        t_re = t_in + int(np.argmax(shows[t_in:]))
        p_in = truth.pixels[name][t_in - 1] if t_in > 0 else h.pixel(start.objects[name])
        events.append({"object": name, "t_in": t_in, "t_out": t_out, "t_reappear": t_re, "p_in": p_in})
    return events


def event_metrics(h, event: dict, truth, pred: np.ndarray) -> dict:
    """The four crossing measures of one event on one predictor's frames (H, h, w, 3)."""
    name, t_in, t_out = event["object"], event["t_in"], event["t_out"]
    horizon = pred.shape[0]
    xy, present = colour_centroid(pred, h.objects[name].rgb)
    window = slice(t_out, min(t_out + AFTER_STEPS, horizon))
    err = pixel_error(xy[window], truth.pixels[name][window], image_size=(h.size, h.size))
    shows = _shows(h, xy, present)
    later = np.nonzero(shows[t_in:])[0]
    t_re = t_in + int(later[0]) if later.size else horizon
    d = truth.pixels[name][t_out] - event["p_in"]
    if present[t_out] and float(d @ d) > 1e-6:
        ratio = float((xy[t_out] - event["p_in"]) @ d / (d @ d))
        freeze_err = min(abs(1.0 - ratio), 2.0)
    else:
        ratio, freeze_err = float("nan"), 1.0
    return {"reappear_px_error": float(np.mean(err)), "presence": float(present[window].mean()),
            "reappear_time_error": float(abs(t_re - event["t_reappear"])), "freeze_ratio": ratio,
            "freeze_error": freeze_err}


def _clear(env, name: str, margin: float) -> bool:
    """Whether object ``name`` is at least ``margin`` beyond the occluder's edge."""
    return abs(env.object_positions()[name][0]) > env.occluder_half_width + margin


def _across(x: float) -> np.ndarray:
    """The action that drives the actuated mover, now at world x, toward the occluder's other side."""
    return np.array([-np.sign(x) * 0.8, 0.0], np.float32)


def run(h) -> dict:
    spec = h.probes["persistence"]
    movers, still = tuple(spec["movers"]), spec["still"]
    driven = next(m for m in movers if h.objects[m].actuated)

    def crossing_accept(env) -> bool:
        return all(_clear(env, m, MOVER_MARGIN_M) for m in movers) and _clear(env, still, STILL_MARGIN_M)

    def crossing_warmup(env, rng) -> np.ndarray:
        return _across(env.object_positions()[driven][0])

    n, horizon = h.settings.pick(4, 12), h.settings.pick(26, 30)
    n_long, long_steps = h.settings.pick(2, 6), h.settings.pick(100, 150)

    # ---- 1. crossings ----------------------------------------------------------------------
    starts = h.starts("persistence", n, warmup=crossing_warmup, accept=crossing_accept)
    actions = np.stack([np.tile(_across(s.objects[driven][0]), (horizon, 1)) for s in starts])
    truths = [h.truth(s, a) for s, a in zip(starts, actions)]
    real = np.stack([t.frames for t in truths])
    events = [find_events(h, s, t, r, movers) for s, t, r in zip(starts, truths, real)]
    n_events = sum(len(e) for e in events)
    if n_events == 0:
        raise RuntimeError("persistence: no object passed under the occluder and out again; "
                           "lengthen the horizon or change the start states")
    preds = h.predict_all(starts, actions)
    keys = ("reappear_px_error", "presence", "reappear_time_error", "freeze_ratio", "freeze_error")
    metrics, per_event = {}, {}
    for who in WHO:
        rows = [dict(event_metrics(h, ev, truths[i], preds[who][i]), object=ev["object"], rollout=i)
                for i, evs in enumerate(events) for ev in evs]
        per_event[who] = rows
        metrics[who] = {k: nanmean([r[k] for r in rows]) for k in keys}
        for obj in movers:
            sub = [r for r in rows if r["object"] == obj]
            if sub:
                metrics[who][f"{obj}_reappear_px_error"] = nanmean([r["reappear_px_error"] for r in sub])
                metrics[who][f"{obj}_freeze_ratio"] = nanmean([r["freeze_ratio"] for r in sub])

    # ---- 2. long zero-action rollouts ------------------------------------------------------
    long_starts = h.starts("persistence", n_long, accept=lambda env: _clear(env, still, STILL_MARGIN_M), offset=500)
    zeros = np.zeros((n_long, long_steps, h.action_dim), np.float32)
    long_truths = [h.truth(s, z) for s, z in zip(long_starts, zeros)]
    long_real = np.stack([t.frames for t in long_truths])
    names = list(h.objects)
    vis = {k: visible_mask(long_real, np.stack([t.pixels[k] for t in long_truths]), h.objects[k].rgb)
           for k in names}
    still_start = colour_centroid(np.stack([s.frames[-1] for s in long_starts]), h.objects[still].rgb)[0]
    x = list(range(1, long_steps + 1))
    curves = {"long_rollout_px_error": {"x": x, "ylabel": "object position error, zero action (px)"},
              "still_drift_px": {"x": x, "ylabel": f"{still} drift from its start (px)"}}
    long_pred = {}
    for who in WHO:
        pred = h.predict(who, long_starts, zeros)
        long_pred[who] = pred
        errs = []
        for k in names:
            xy, _ = colour_centroid(pred, h.objects[k].rgb)
            true_px = np.stack([t.pixels[k] for t in long_truths])
            e = pixel_error(xy, true_px, image_size=(h.size, h.size))
            errs.append(np.where(vis[k], e, np.nan))
        err = nanmean_along(np.stack(errs), axis=0)
        sxy, _ = colour_centroid(pred, h.objects[still].rgb)
        drift = pixel_error(sxy, still_start[:, None, :], image_size=(h.size, h.size))
        metrics[who]["long_rollout_px_error"] = nanmean(err)
        metrics[who]["still_drift_px"] = nanmean(drift)
        metrics[who]["still_drift_px_final"] = nanmean(drift[:, -1])
        curves["long_rollout_px_error"][who] = curve(err)
        curves["still_drift_px"][who] = curve(drift)

    errors = {k: {w: metrics[w][k] for w in WHO} for k in ("reappear_px_error", "reappear_time_error", "freeze_error",
                                                           "long_rollout_px_error")}
    errors["presence_error"] = {w: 1.0 - metrics[w]["presence"] for w in WHO}
    # media: the crossing rollouts where the model does best and worst
    by_rollout = {}
    for r in per_event["model"]:
        by_rollout.setdefault(r["rollout"], []).append(r["reappear_px_error"])
    ranked = sorted(by_rollout, key=lambda i: np.mean(by_rollout[i]))
    cases = [{"label": label, "seed": starts[i].seed, "error": float(np.mean(by_rollout[i])),
              "error_name": "reappearance error (px)", "real": real[i], "pred": preds["model"][i]}
             for label, i in (("best", ranked[0]), ("worst", ranked[-1]))]
    worst_long = int(np.argmax([nanmean(np.abs(long_pred["model"][i].astype(int) - long_real[i]))
                                for i in range(n_long)]))
    cases.append({"label": "long rollout", "seed": long_starts[worst_long].seed,
                  "error": metrics["model"]["still_drift_px"],
                  "error_name": "still drift (px)", "real": long_real[worst_long][::2],
                  "pred": long_pred["model"][worst_long][::2]})
    return {"metrics": metrics, "errors": errors,
            "floors": {"reappear_px_error": 1.0, "reappear_time_error": 0.5, "freeze_error": 0.05,
                       "long_rollout_px_error": 1.0, "presence_error": 0.05},
            "curves": curves, "cases": cases,
            "settings": {"start_states": n, "horizon": horizon, "events": n_events,
                         "events_by_object": {o: sum(e["object"] == o for evs in events for e in evs) for o in movers},
                         "long_rollouts": n_long, "long_steps": long_steps, "after_steps": AFTER_STEPS}}
