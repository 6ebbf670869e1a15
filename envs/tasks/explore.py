"""Contact-rich collecting policies: the pusher drives through, past or along an object from any angle, or
stands in a moving object's path and lets it bounce off."""
import numpy as np


def toward(delta: np.ndarray, gain: float) -> np.ndarray:
    """A proportional action toward ``delta``, clipped to the action box."""
    return np.clip(gain * delta, -1.0, 1.0)


def contact_explorer(env, rng: np.random.Generator, target: str, pusher: str = "pusher"):
    """One episode's policy ``(act, label)``: pushes, grazes and misses of object ``target`` from any angle.

    The pusher goes behind the target along a random direction, offset sideways by
    nothing (a push through the centre), about the target's half width (a graze that
    turns it) or more (a miss that passes it), then drives along that direction for
    the rest of the episode, often into a wall. It reads the true positions
    (``env.object_positions()``): data collection only.
    """
    angle = rng.uniform(-np.pi, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    side = np.array([-direction[1], direction[0]])
    kind = rng.choice(["push", "graze", "miss"], p=[0.5, 0.3, 0.2])
    offset = {"push": rng.uniform(-0.02, 0.02), "graze": rng.choice([-1, 1]) * rng.uniform(0.05, 0.08),
              "miss": rng.choice([-1, 1]) * rng.uniform(0.11, 0.16)}[kind]
    speed = rng.uniform(0.5, 1.0)
    state = {"lined_up": False}

    def act() -> np.ndarray:
        objs = env.object_positions()
        me, obj = objs[pusher][:2], objs[target][:2]
        start = obj - 0.12 * direction + offset * side
        if not state["lined_up"]:
            to_start = start - me
            if np.linalg.norm(to_start) < 0.02:
                state["lined_up"] = True
            elif np.dot(me - obj, direction) > -0.06 and np.linalg.norm(me - obj) < 0.11:
                away = side * (np.sign(np.dot(me - obj, side)) or 1.0)  # go round, not through
                return toward(away * 0.1 - direction * 0.05, 12.0)
            else:
                return toward(to_start, 12.0)
        return np.clip(speed * direction + 4.0 * np.dot(start - me, side) * side, -1.0, 1.0)

    return act, f"explore-{kind}"


def path_blocker(env, rng: np.random.Generator, target: str, pusher: str = "pusher"):
    """One episode's policy ``(act, label)``: the pusher steps into a moving object's path and stands still.

    It heads for where ``target`` will be a random 0.3-1.2 s ahead (from its last
    two positions), stops there, then takes zero actions for the rest of the episode,
    so the object bounces off a body at rest and rolls on freely, walls and all;
    ``rest`` episodes (one in four) stand still from the first step. A robot at rest
    is data too: without it a model has never seen a passive object meet a still pusher.
    Reads the true positions (``env.object_positions()``): data collection only.
    """
    dt = env.model.opt.timestep * env.frame_skip       # seconds per step
    kind = "rest" if rng.random() < 0.25 else "block"
    lead = rng.uniform(0.3, 1.2)
    state = {"last": None, "goal": None, "standing": kind == "rest"}

    def act() -> np.ndarray:
        objs = env.object_positions()
        me, obj = objs[pusher][:2], objs[target][:2]
        last, state["last"] = state["last"], obj.copy()
        if state["standing"] or last is None:
            return np.zeros(2)
        if state["goal"] is None:
            state["goal"] = np.clip(obj + (obj - last) / dt * lead, -0.22, 0.22)
        delta = state["goal"] - me
        if np.linalg.norm(delta) < 0.02 or np.linalg.norm(obj - me) < 0.1:
            state["standing"] = True
            return np.zeros(2)
        return toward(delta, 12.0)

    return act, f"explore-{kind}"
