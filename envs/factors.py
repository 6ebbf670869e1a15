"""Factors of variation: interventions on a task's scene that the task declares.

A task's ``factors`` maps a name to ``{"what", "default", "train": [lo, hi], "test": [values out of range],
"apply": (kind, *names)}``. The kinds (:data:`FACTOR_KINDS`) say how a value edits the MJCF before it is
compiled (``mujoco.MjSpec``), so everything MuJoCo derives from it (body mass and inertia, collision bounds,
what is rendered) stays consistent. :class:`embodied.envs.mujoco_base.MujocoTaskEnv` applies them when it
builds its model; ``check_factors`` / ``check_factor_setting`` turn ``--fov`` text into checked values, and
every bad value is a one-line :class:`~embodied.errors.UserError`.
"""
from __future__ import annotations

import colorsys
import math

import numpy as np

from embodied.errors import UserError


def _geoms(spec, name: str) -> list:
    """The geom called ``name``, or every geom of the body called ``name``."""
    geom = spec.geom(name)
    if geom is not None:
        return [geom]
    body = spec.body(name)
    if body is None:
        raise ValueError(f"the scene has no geom or body named {name!r}")
    return list(body.geoms)


def _joints(spec, names) -> list:
    out = [spec.joint(n) for n in names]
    if any(j is None for j in out):
        raise ValueError(f"the scene lacks one of the joints {list(names)}")
    return out


def _set_scalar(obj, attr: str, value: float) -> None:
    """Set a joint parameter that MuJoCo stores as a number or (newer versions) as an array led by it."""
    if np.ndim(getattr(obj, attr)):
        getattr(obj, attr)[0] = value
    else:
        setattr(obj, attr, value)


def _hue(rgb, degrees: float) -> np.ndarray:
    """``rgb`` (0..1) with its hue turned by ``degrees``, saturation and value kept."""
    h, s, v = colorsys.rgb_to_hsv(*(float(c) for c in rgb[:3]))
    return np.array(colorsys.hsv_to_rgb((h + degrees / 360.0) % 1.0, s, v))


def _apply_mass(env, spec, names, value):
    for name in names:
        geoms = _geoms(spec, name)
        for g in geoms:
            g.mass = value / len(geoms)


def _apply_joint(attr):
    def apply(env, spec, names, value):
        for j in _joints(spec, names):
            _set_scalar(j, attr, value)
    return apply


def _apply_gain(env, spec, names, value):
    for act in spec.actuators:
        act.gainprm[0] *= value


def _apply_half_width(env, spec, names, value):
    for name in names:
        for g in _geoms(spec, name):
            g.size[0] = g.size[1] = value


def _apply_occluder(env, spec, names, value):
    for name in names:
        for g in _geoms(spec, name):
            g.size[0] = value / 2
    env.occluder_half_width = value / 2


def _apply_hue(env, spec, names, value):
    for name in names:
        for g in _geoms(spec, name):
            g.rgba[:3] = _hue(g.rgba, value)


def _apply_grey(env, spec, names, value):
    for name in names:
        for g in _geoms(spec, name):
            g.rgba[:3] = value


def _apply_light(env, spec, names, value):
    spec.visual.headlight.ambient = [value] * 3


# kind -> (apply(env, spec, names, value), lowest valid value, whether the lowest is excluded, highest, unit)
FACTOR_KINDS = {
    "mass": (_apply_mass, 0.0, True, None, "kg, the body's mass"),
    "frictionloss": (_apply_joint("frictionloss"), 0.0, False, None, "N, the joints' dry friction"),
    "damping": (_apply_joint("damping"), 0.0, False, None, "N s/m, the joints' viscous damping"),
    "gain": (_apply_gain, 0.0, True, None, "x, a multiple of every actuator's gain (a servo's top speed)"),
    "half_width": (_apply_half_width, 0.0, True, None, "m, half the width of a box"),
    "occluder": (_apply_occluder, 0.0, True, None, "m, the occluder's full width"),
    "hue": (_apply_hue, None, False, None, "degrees the colour's hue is turned"),
    "grey": (_apply_grey, 0.0, False, 1.0, "grey level from 0 (black) to 1 (white)"),
    "light": (_apply_light, 0.0, True, 1.0, "headlight level, 1 as built; every colour is scaled by it"),
}
COLOUR_KINDS = ("hue", "grey", "light")


def parse_fov(items) -> dict[str, str]:
    """``["block_mass=0.5", ...]`` (``--fov`` flags) -> ``{"block_mass": "0.5"}``; a one-line UserError otherwise."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"--fov {item!r} is not KEY=VALUE; write e.g. --fov block_mass=0.5")
        out[key.strip()] = value.strip()
    return out


def check_factors(task_cls, values) -> dict[str, float]:
    """``values`` ({name: number or its text}) checked against the factors ``task_cls`` declares, as floats.

    An unknown name, a value that is not a finite number or one outside what
    the factor's kind allows (a mass must be positive, ...) is a one-line UserError.
    """
    out = {}
    for key, raw in dict(values or {}).items():
        factor = _declared_factor(task_cls, key)
        out[key] = _factor_value(key, factor, raw, f"{key}={factor['train'][1]:g}")
    return out


def check_factor_setting(task_cls, values) -> dict[str, float | list[float]]:
    """``values`` ({name: a value, or a range ``"LOW..HIGH"`` or ``[low, high]``}) checked as {name: float or
    [low, high]}: the setting of a dataset whose episodes each sample a ranged factor (``embodied collect``)."""
    out = {}
    for key, raw in dict(values or {}).items():
        ranged = isinstance(raw, (list, tuple)) or (isinstance(raw, str) and ".." in raw)
        out[key] = check_factor_range(task_cls, key, raw) if ranged else check_factors(task_cls, {key: raw})[key]
    return out


def check_factor_range(task_cls, key: str, raw) -> list[float]:
    """A range of factor ``key`` (``"LOW..HIGH"`` or ``[low, high]``) as [low, high]: two valid values, LOW < HIGH."""
    factor = _declared_factor(task_cls, key)
    example = f"{key}={factor['train'][0]:g}..{factor['train'][1]:g}"
    parts = [p.strip() for p in raw.split("..")] if isinstance(raw, str) else list(raw)
    text = raw if isinstance(raw, str) else "..".join(map(str, parts))
    if len(parts) != 2 or "" in parts:
        raise UserError(f"factor {key}={text} is not a range LOW..HIGH; write e.g. --fov {example}")
    low, high = (_factor_value(key, factor, p, example) for p in parts)
    if not low < high:
        raise UserError(f"factor {key}={text} must have LOW < HIGH; write e.g. --fov {example}")
    return [low, high]


def _declared_factor(task_cls, key: str) -> dict:
    """The factor ``key`` of ``task_cls``; an unknown name is a one-line UserError listing the task's factors."""
    declared = getattr(task_cls, "factors", None) or {}
    if key not in declared:
        name = getattr(task_cls, "task_name", "") or getattr(task_cls, "__name__", "this task")
        known = ", ".join(declared) if declared else "none: it declares no factors"
        raise UserError(f"unknown factor {key!r} for task {name}; its factors: {known}")
    return declared[key]


def _factor_value(key: str, factor: dict, raw, example: str) -> float:
    """``raw`` as a value of ``factor``: a finite number its kind allows, or a one-line UserError citing ``example``."""
    _, low, above, high, unit = FACTOR_KINDS[factor["apply"][0]]
    try:
        value = float(raw) if not isinstance(raw, bool) else float("nan")
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value):
        raise UserError(f"factor {key}={raw!r} must be a number ({unit}), e.g. --fov {example}")
    if (low is not None and (value <= low if above else value < low)) or (high is not None and value > high):
        bounds = " and ".join(([f"more than {low:g}" if above else f"at least {low:g}"] if low is not None else [])
                              + ([f"at most {high:g}"] if high is not None else []))
        raise UserError(f"factor {key}={value:g} must be {bounds} ({unit}), e.g. --fov {example}")
    return value


def factor_table(task_cls) -> list[dict]:
    """The factors a task declares, JSON-able: name, what, default, training range, out-of-range values, unit."""
    return [{"name": k, "what": f["what"], "default": f["default"], "train": list(f["train"]), "test": list(f["test"]),
             "unit": FACTOR_KINDS[f["apply"][0]][4]} for k, f in (getattr(task_cls, "factors", None) or {}).items()]


def floor_and_light_factors(floor: float = 0.15) -> dict:
    """The looks every tabletop task shares: the floor's grey level and the headlight."""
    return {
        "floor_colour": {"what": "grey level of the floor", "default": floor, "train": [0.1, 0.2],
                         "test": [0.0, 0.35], "apply": ("grey", "floor")},
        "light": {"what": "headlight level (every colour in the frame is scaled by it)", "default": 1.0,
                  "train": [0.9, 1.0], "test": [0.6, 0.75], "apply": ("light",)},
    }
