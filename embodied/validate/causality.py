"""Causality: does an object move only when it is contacted?

From each start state, three branches share the start (``env.set_state``):

* **contact**: the pusher driven straight at the target object (the task's
  ``probes["causality"]``: ``object``, moved by ``pusher``) for the whole horizon;
* **miss**: the pusher driven sideways or away, never touching it;
* **null**: zero action.

Start states are kept only where the target starts clear of the task's
occluder (if it has one), the objects listed in ``keep_clear`` start away from
it, MuJoCo moves the target in the contact branch (more than :data:`MOVE_PX`)
and leaves it in place in the miss branch, so every pair is a real
counterfactual. On the predicted frames the target's colour centroid in the
last frame is compared with where the last real context frame shows it:

* ``moved_accuracy``: predicted moved / not moved (displacement above
  :data:`MOVE_PX`) against the truth, over contact and miss branches; a target
  the prediction lost (no pixels of its colour) is wrong in either branch
  (``lost_rate``). Scored as 1 - accuracy; a model that never moves anything
  gets 0.5;
* ``displacement_px_error``: |predicted - true displacement| at the end of the
  contact and miss branches (a lost target costs the image diagonal);
* ``null_motion_px_error``: the same for the null branch (no spurious motion);
  both baselines get it right, so it is a guard measured against a 1 px tolerance.
"""
from __future__ import annotations

import numpy as np

from embodied.validate.harness import WHO, curve
from embodied.vision import colour_centroid, pixel_error

QUESTION = "does an object move only when contacted?"
MOVE_PX = 2.0
STILL_PX = 0.5
REACH_M = (0.11, 0.2)   # the pusher starts this far (min, max) from the target
CLEAR_M = 0.15          # keep_clear objects start this far from the target
VIEW_MARGIN_M = 0.06    # the target starts this far beyond the occluder's edge (|x| > half width + margin)


def _unit(v):
    v = np.asarray(v[:2], np.float64)
    return v / (np.linalg.norm(v) + 1e-9)


def _accept(spec: dict):
    target, pusher, keep_clear = spec["object"], spec["pusher"], spec.get("keep_clear", ())

    def accept(env) -> bool:
        objs = env.object_positions()
        d = np.linalg.norm(objs[target][:2] - objs[pusher][:2])
        if not REACH_M[0] < d < REACH_M[1]:
            return False
        half = env.occluder_half_width
        if half and abs(objs[target][0]) <= half + VIEW_MARGIN_M:  # the target must stay in view
            return False
        return all(np.linalg.norm(objs[k][:2] - objs[target][:2]) > CLEAR_M for k in keep_clear)
    return accept


def _warmup(env, rng) -> np.ndarray:
    return rng.uniform(-0.2, 0.2, size=env.action_space.shape).astype(np.float32)


def branch_actions(start, target: str, pusher: str, horizon: int, variant: int) -> dict[str, np.ndarray]:
    """contact / miss / null action sequences (H, 2) from one start."""
    toward = _unit(start.objects[target] - start.objects[pusher])
    side = np.array([-toward[1], toward[0]])
    at = start.objects[pusher][:2]
    if variant % 2 == 0:  # sideways, toward the middle of the table
        miss = side if np.dot(side, -at) >= 0 else -side
    else:
        miss = -toward
    tile = lambda v: np.tile(np.asarray(v, np.float32), (horizon, 1))  # noqa: E731
    return {"contact": tile(toward), "miss": tile(miss * 0.8), "null": tile([0.0, 0.0])}


def _disp(frames: np.ndarray, start_px: np.ndarray, rgb) -> np.ndarray:
    """(B, H, 2) displacement of the target's centroid from its start pixel; NaN where lost."""
    xy, _ = colour_centroid(frames, rgb)
    return xy - start_px[:, None, :]


def run(h) -> dict:
    spec = h.probes["causality"]
    target = spec["object"]
    rgb = h.objects[target].rgb
    n, horizon = h.settings.pick(4, 12), h.settings.pick(12, 15)
    starts, branches, truths = [], {"contact": [], "miss": [], "null": []}, {"contact": [], "miss": [], "null": []}
    accept = _accept(spec)
    for seed in h.seeds("causality", 60 * n):
        s = h.start(seed, warmup=_warmup, accept=accept)
        if s is None:
            continue
        acts = branch_actions(s, target, spec["pusher"], horizon, len(starts))
        tr = {k: h.truth(s, a) for k, a in acts.items()}
        moved = {k: np.linalg.norm(t.pixels[target][-1] - h.pixel(s.objects[target])) for k, t in tr.items()}
        if moved["contact"] < 2 * MOVE_PX or moved["miss"] > STILL_PX:
            continue
        starts.append(s)
        for k in branches:
            branches[k].append(acts[k])
            truths[k].append(tr[k])
        if len(starts) == n:
            break
    if len(starts) < n:
        raise RuntimeError(f"causality: only {len(starts)} of {n} counterfactual pairs found")
    start_px = colour_centroid(np.stack([s.frames[-1] for s in starts]), rgb)[0]       # (B, 2) as seen
    start_true = np.stack([h.pixel(s.objects[target]) for s in starts])
    true_disp = {k: np.stack([t.pixels[target] for t in truths[k]]) - start_true[:, None, :] for k in branches}
    size = (h.size, h.size)
    metrics, errors = {}, {"moved_error": {}, "displacement_px_error": {}, "null_motion_px_error": {}}
    x = list(range(1, horizon + 1))
    curves = {"contact_displacement_px_error": {"x": x, "ylabel": f"{target} displacement error, contact branch (px)"},
              "true_displacement_px": {"x": x, "ylabel": f"{target} displacement (px)"}}
    cases_src = {}
    for who in WHO:
        correct, disp_err = [], []
        preds = {}
        for k in ("contact", "miss", "null"):
            pred = h.predict(who, starts, np.stack(branches[k]))
            preds[k] = pred
            d = _disp(pred, start_px, rgb)                                  # (B, H, 2)
            err = pixel_error(d, true_disp[k], image_size=size)                # (B, H)
            final = d[:, -1]
            lost = ~np.isfinite(final).all(axis=1)
            moved = ~lost & (np.linalg.norm(np.nan_to_num(final), axis=1) > MOVE_PX)
            if k == "null":
                metrics.setdefault(who, {})["null_motion_px_error"] = float(err[:, -1].mean())
                metrics[who]["null_spurious_motion_px"] = float(np.nanmean(np.linalg.norm(final, axis=1))) \
                    if np.isfinite(final).any() else float("nan")
                continue
            truth_moved = k == "contact"
            correct.extend(((moved == truth_moved) & ~lost).tolist())
            metrics.setdefault(who, {})[f"{k}_predicted_lost"] = float(lost.mean())
            disp_err.extend(err[:, -1].tolist())
            if k == "contact":
                curves["contact_displacement_px_error"][who] = curve(err)
                metrics.setdefault(who, {})["contact_displacement_px_error"] = float(err[:, -1].mean())
                metrics[who]["contact_predicted_moved"] = float(moved.mean())
                if who == "model":
                    cases_src = {"pred": pred, "err": err[:, -1]}
            else:
                metrics.setdefault(who, {})["miss_predicted_moved"] = float(moved.mean())
        metrics[who]["moved_accuracy"] = float(np.mean(correct))
        metrics[who]["displacement_px_error"] = float(np.mean(disp_err))
        errors["moved_error"][who] = 1.0 - metrics[who]["moved_accuracy"]
        errors["displacement_px_error"][who] = metrics[who]["displacement_px_error"]
        errors["null_motion_px_error"][who] = metrics[who]["null_motion_px_error"]
    curves["true_displacement_px"]["truth"] = curve(np.linalg.norm(true_disp["contact"], axis=-1))
    real = np.stack([t.frames for t in truths["contact"]])
    order = np.argsort(cases_src["err"])
    cases = [{"label": label, "seed": starts[i].seed, "error": float(cases_src["err"][i]),
              "error_name": f"{target} displacement error (px), contact branch", "real": real[i],
              "pred": cases_src["pred"][i]} for label, i in (("best", order[0]), ("worst", order[-1]))]
    true_contact_px = float(np.linalg.norm(true_disp["contact"][:, -1], axis=-1).mean())
    return {"metrics": metrics, "errors": errors,
            "floors": {"moved_error": 0.05, "displacement_px_error": 1.0, "null_motion_px_error": 1.0},
            "curves": curves, "cases": cases,
            "settings": {"pairs": n, "horizon": horizon, "target": target, "move_px": MOVE_PX,
                         "true_contact_displacement_px": true_contact_px}}
