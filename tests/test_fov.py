"""Factors of variation: interventions a task declares, applied to the MuJoCo scene (`--fov name=value`).

Each factor changes what MuJoCo does or renders (a heavier block moves less under the same push, a wider
occluder hides the ball longer, a colour changes the pixels and the colour the probes track), a factor at its
default value changes nothing, and bad factors are one line and exit 2 from every command that takes them.
A factor given as a range (`collect --fov name=LOW..HIGH`) gives each episode its own value, drawn by its seed.
"""
import json

import mujoco
import numpy as np
import pytest

from embodied.collect import dataset_spec, record_episode
from embodied.data import (check_dataset_task, episode_files, episode_path, read_episode, read_episode_header,
                           write_episode)
from embodied.envs.factors import check_factor_setting, check_factors, factor_table, parse_fov
from embodied.envs.registry import TASKS, make_task
from embodied.errors import UserError
from embodied.vision import colour_centroid


def test_every_factor_declares_its_ranges_and_builds():
    """Defaults inside the training range, test values outside it, every value a scene MuJoCo can step."""
    total = 0
    for task, cls in TASKS.items():
        for row in factor_table(cls):
            lo, hi = row["train"]
            assert lo <= row["default"] <= hi, (task, row["name"])
            assert all(v < lo or v > hi for v in row["test"]) and row["test"], (task, row["name"])
            for value in (lo, hi, *row["test"]):
                env = make_task(task, factors={row["name"]: value})
                assert env.fov == {row["name"]: float(value)}
                env.reset(seed=0)
                env.step(np.zeros(env.action_space.shape))
                env.close()
            total += 1
    assert total >= 6


def test_a_factor_at_its_default_changes_nothing():
    """The MJCF edited and compiled through MjSpec gives the scene as built, step for step and pixel for pixel."""
    default = make_task("push")
    same = make_task("push", factors={"block_mass": 0.3, "pusher_gain": 1.0, "block_size": 0.05})
    rng = np.random.default_rng(0)
    a, _ = default.reset(seed=3)
    b, _ = same.reset(seed=3)
    assert np.array_equal(a, b)
    for _ in range(10):
        action = rng.uniform(-1, 1, 2)
        a, ra, *_ = default.step(action)
        b, rb, *_ = same.step(action)
        assert np.array_equal(a, b) and ra == rb and np.array_equal(default.get_state(), same.get_state())


def _push_block(factors: dict, steps: int = 4) -> float:
    """How far (m) the block moves under the same straight push from the same start."""
    env = make_task("push", obs_type="state", factors=factors)
    env.reset(seed=0)
    env.data.qpos[2:6] = [0.0, 0.0, -0.12, 0.0]  # block at the centre, pusher behind it
    env.data.qvel[:] = 0
    mujoco.mj_forward(env.model, env.data)
    for _ in range(steps):
        env.step(np.array([1.0, 0.0]))
    return float(env.object_positions()["block"][0])


def test_a_heavier_block_moves_less_under_the_same_push():
    default, heavy = _push_block({}), _push_block({"block_mass": 3.0})
    assert default > 0.04 and heavy < default - 0.01, (default, heavy)
    assert make_task("push", factors={"block_mass": 3.0}).model.body("block").mass[0] == pytest.approx(3.0)
    # and a slower servo pushes it less far
    assert _push_block({"pusher_gain": 0.5}) < default - 0.02


def _hidden_steps(factors: dict, seeds=range(3)) -> tuple[int, int]:
    """Steps the ball is under the occluder (by position, and with no ball pixel) over a few zero-action episodes."""
    env = make_task("occlusion", factors=factors)
    ball = {o.name: o.rgb for o in env.objects}["ball"]
    by_position = by_pixels = 0
    for seed in seeds:
        env.reset(seed=seed)
        for _ in range(env.max_episode_steps):
            frame, _, _, _, info = env.step(np.zeros(2))
            by_position += bool(env.is_hidden(info["objects"]["ball"][:2]))
            by_pixels += not colour_centroid(frame, ball)[1]
    return by_position, by_pixels


def test_a_wider_occluder_hides_the_ball_for_more_steps():
    default, wide = _hidden_steps({}), _hidden_steps({"occluder_width": 0.24})
    assert wide[0] > default[0] > 0 and wide[1] > default[1] > 0, (default, wide)
    env = make_task("occlusion", factors={"occluder_width": 0.24})
    assert env.occluder_half_width == pytest.approx(0.12) and type(env).occluder_half_width == pytest.approx(0.09)
    assert env.is_hidden(np.array([0.08, 0.0])) and not type(env).is_hidden(np.array([0.08, 0.0]))


def test_a_colour_factor_changes_the_pixels_and_the_colour_the_probes_track():
    from embodied.models.baselines import CopyLastFrame
    from embodied.validate.harness import Harness, Settings

    default, yellow = make_task("push"), make_task("push", factors={"block_colour": 50})
    red = dict((o.name, o.rgb) for o in default.objects)["block"]
    frame_red, _ = default.reset(seed=1)
    frame_yellow, _ = yellow.reset(seed=1)
    assert (frame_red != frame_yellow).any(axis=-1).sum() > 20  # the block's pixels, nothing else moved
    h = Harness("push", CopyLastFrame("push", 2), Settings(quick=True, factors={"block_colour": 50}))
    try:
        tracked = h.objects["block"].rgb
        assert tracked == dict((o.name, o.rgb) for o in yellow.objects)["block"] != red
        assert tracked[1] > 150 and tracked[2] < 30  # yellow
        start = h.start(h.seeds("fidelity", 1)[0])
        xy, present = colour_centroid(start.frames[-1], tracked)
        assert present and np.allclose(xy, h.pixel(start.objects["block"]), atol=1.5)
        assert not colour_centroid(start.frames[-1], red)[1]  # the default colour is nowhere in the frame
        assert h.models["mujoco"].model.geom_rgba[h.env.model.body("block").geomadr[0]][1] > 0.5  # the oracle too
    finally:
        h.close()
    dim = make_task("push", factors={"light": 0.6})
    frame_dim, _ = dim.reset(seed=1)
    assert frame_dim.max() < 0.65 * 255 and all(max(o.rgb) <= 0.61 * 255 for o in dim.objects)
    for o in dim.objects:
        assert colour_centroid(frame_dim, o.rgb)[1], o.name


def test_factor_values_are_checked_in_one_line():
    push = TASKS["push"]
    assert check_factors(push, {"block_mass": "1.5", "block_colour": -20}) == {"block_mass": 1.5, "block_colour": -20.0}
    assert parse_fov(["block_mass=2", " light = 0.7 "]) == {"block_mass": "2", "light": "0.7"}
    for values, message in [({"block_weight": 1}, "unknown factor 'block_weight' for task push; its factors: block_"),
                            ({"block_mass": "heavy"}, "must be a number"), ({"block_mass": float("nan")}, "number"),
                            ({"block_mass": 0}, "more than 0"), ({"floor_colour": 2}, "at most 1"),
                            ({"block_friction": -1}, "at least 0")]:
        with pytest.raises(UserError, match=message) as err:
            check_factors(push, values)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="declares no factors"):
        check_factors(type("NoFactors", (), {"task_name": "x"}), {"a": 1})
    with pytest.raises(UserError, match="not KEY=VALUE"):
        parse_fov(["block_mass"])


def test_episodes_and_manifests_record_their_factors(tmp_path):
    factors = {"block_mass": 1.5, "block_colour": 50.0}
    spec = dataset_spec("push", 64, factors)
    assert spec["factors"] == factors and "factors" not in dataset_spec("push", 64)
    assert dict((o["name"], o["rgb"]) for o in spec["objects"])["block"][1] > 150  # the colour it renders in
    env = make_task("push", obs_type="pixels_proprio", factors=factors)
    arrays, meta = record_episode(env, 5, "random")
    write_episode(episode_path(tmp_path, 5), arrays, meta)
    assert json.loads(read_episode_header(episode_path(tmp_path, 5))[0]["factors"]) == factors
    check_dataset_task(tmp_path, "push", size=64, factors=factors)  # the same setting: more episodes welcome
    for other in ({}, {"block_mass": 1.5}):
        with pytest.raises(UserError, match="recorded under factors"):
            check_dataset_task(tmp_path, "push", size=64, factors=other)
    assert "factors" not in record_episode(make_task("push", obs_type="pixels_proprio"), 6, "random")[1]


@pytest.mark.parametrize("argv", [
    ["collect", "--task", "push", "--episodes", "1", "--fov", "block_weight=2"],
    ["validate", "--task", "push", "--model", "copy_last", "--fov", "block_weight=2"],
    ["plan", "--task", "push", "--model", "mujoco", "--fov", "block_weight=2"],
    ["collect", "--task", "push", "--episodes", "1", "--fov", "block_mass=heavy"],
    ["plan", "--task", "reach", "--fov", "block_mass=1"],
    ["policy", "rank", "--task", "push", "--model", "x", "--fov", "block_weight=2", "--policies", "random", "random"],
])
def test_a_bad_factor_is_one_line_and_exit_2(argv, tmp_path, capsys):
    from embodied.cli import main

    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("unknown factor" in err or "must be a number" in err), err
    assert not out.exists()  # nothing ran


def test_plan_and_validate_run_in_the_changed_scene_and_say_so(tmp_path, capsys):
    from embodied.cli import main

    assert main(["plan", "--task", "push", "--model", "mujoco", "--episodes", "1", "--max-steps", "2", "--samples",
                 "8", "--iterations", "1", "--horizon", "2", "--videos", "0", "--no-progress", "--out",
                 str(tmp_path / "plan"), "--fov", "block_mass=1.5", "--fov", "light=0.7"]) == 0
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["factors"] == {"block_mass": 1.5, "light": 0.7}
    assert plan["command"].endswith("--fov block_mass=1.5 --fov light=0.7")
    assert main(["validate", "--task", "push", "--model", "copy_last", "--out", str(tmp_path / "val"), "--preset",
                 "quick", "--probes", "controllability", "--no-media", "--fov", "block_colour=50"]) == 0
    val = json.loads((tmp_path / "val" / "validation.json").read_text())
    assert val["factors"] == {"block_colour": 50.0} and "--fov block_colour=50" in val["command"]
    assert val["scores"]["controllability"]["mujoco"] == 100.0  # the truth is tracked in its new colour


# --- a factor as a range: each episode of a dataset draws its own value (collect --fov name=LOW..HIGH) ---

MASS_RANGE = [0.2, 0.45]


@pytest.fixture(scope="module")
def ranged(tmp_path_factory):
    """Four scripted push episodes (the expert reaches the block) with the block's mass drawn from 0.2..0.45."""
    from embodied.collect import collect

    out = tmp_path_factory.mktemp("ranged")
    collect("push", 4, out, policy="scripted", workers=1, progress=False, factors={"block_mass": "0.2..0.45"})
    return out


def _headers(root) -> dict[int, dict]:
    """Episode headers of a dataset by seed."""
    return {int(m["seed"]): m for m in (read_episode_header(p)[0] for p in episode_files(root))}


def test_a_range_gives_each_episode_its_own_value_and_the_same_seeds_the_same_values(ranged, tmp_path, capsys):
    from embodied.cli import main

    manifest = json.loads((ranged / "manifest.json").read_text())
    assert manifest["factors"] == {"block_mass": MASS_RANGE}
    headers = _headers(ranged)
    masses = {seed: json.loads(m["factors"])["block_mass"] for seed, m in headers.items()}
    assert sorted(masses) == [0, 1, 2, 3] and len(set(masses.values())) == 4
    assert all(0.2 <= v <= 0.45 for v in masses.values()), masses
    assert all(json.loads(m["factor_ranges"]) == {"block_mass": MASS_RANGE} for m in headers.values())
    # the same seeds again, by the command line and two workers: the same values
    again = tmp_path / "again"
    assert main(["collect", "--task", "push", "--episodes", "4", "--policy", "scripted", "--workers", "2",
                 "--fov", "block_mass=0.2..0.45", "--out", str(again)]) == 0
    assert "under block_mass=0.2..0.45" in capsys.readouterr().out
    assert {seed: json.loads(m["factors"])["block_mass"] for seed, m in _headers(again).items()} == masses


def test_each_episode_is_simulated_with_the_value_its_header_records(ranged):
    """Replaying an episode's actions under its header's mass gives its recorded final state; another mass does not."""
    episodes = [read_episode(episode_path(ranged, seed)) for seed in (0, 1)]
    masses = [json.loads(meta["factors"])["block_mass"] for _, meta in episodes]
    for (arrays, meta), mass, other in zip(episodes, masses, masses[::-1]):
        env = make_task("push", obs_type="state", factors={"block_mass": mass})
        assert env.model.body("block").mass[0] == mass
        assert _replay(env, int(meta["seed"]), arrays["action"]) == arrays["sim_state"][-1].tobytes()
        wrong = make_task("push", obs_type="state", factors={"block_mass": other})
        assert _replay(wrong, int(meta["seed"]), arrays["action"]) != arrays["sim_state"][-1].tobytes()


def _replay(env, seed: int, actions) -> bytes:
    """The final simulator state of ``actions`` from ``env.reset(seed=seed)``."""
    env.reset(seed=seed)
    for action in actions:
        env.step(action)
    return env.get_state().tobytes()


@pytest.mark.parametrize("text", ["0.45..0.2", "0.3..0.3", "a..b", "0.2..", "..0.45", "0..0.45", "0.2..0.3..0.4"])
def test_a_bad_range_is_one_line_naming_the_fix_and_exit_2(text, tmp_path, capsys):
    from embodied.cli import main

    out = tmp_path / "out"
    assert main(["collect", "--task", "push", "--episodes", "1", "--fov", f"block_mass={text}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--fov block_mass=0.2..0.45" in err, err
    assert not out.exists()  # nothing ran


def test_a_range_is_checked_as_its_values_are():
    push = TASKS["push"]
    assert check_factor_setting(push, {"block_colour": "-10..10", "light": "0.9", "block_mass": (0.2, 0.45)}) == {
        "block_colour": [-10.0, 10.0], "light": 0.9, "block_mass": [0.2, 0.45]}
    for values, message in [({"block_weight": "1..2"}, "unknown factor 'block_weight'"),
                            ({"floor_colour": "0.5..2"}, "at most 1"), ({"block_mass": [0.3]}, "not a range")]:
        with pytest.raises(UserError, match=message):
            check_factor_setting(push, values)


@pytest.mark.parametrize("fov", [["--fov", "block_mass=0.25..0.45"], ["--fov", "block_mass=0.3"], []])
def test_adding_episodes_under_another_setting_is_refused_in_one_line(fov, ranged, capsys):
    from embodied.cli import main

    before = sorted(p.name for p in (ranged / "episodes").iterdir())
    assert main(["collect", "--task", "push", "--episodes", "1", *fov, "--out", str(ranged)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "recorded under factors block_mass=0.2..0.45" in err, err
    assert "pass --fov block_mass=0.2..0.45 to add to it" in err
    assert sorted(p.name for p in (ranged / "episodes").iterdir()) == before
    check_dataset_task(ranged, "push", size=64, factors={"block_mass": MASS_RANGE})  # the same range: welcome


def test_a_fixed_value_records_no_range(tmp_path, monkeypatch):
    """A dataset of a fixed value is written as before: the header holds the value and no range."""
    import embodied.collect as collecting

    monkeypatch.setitem(collecting._WORKER, "env", make_task("push", obs_type="pixels_proprio",
                                                             factors={"block_mass": 1.5}))
    monkeypatch.setitem(collecting._WORKER, "factors", {"block_mass": 1.5})
    collecting._collect_one(str(tmp_path), 2, "random")
    meta = read_episode_header(episode_path(tmp_path, 2))[0]
    assert json.loads(meta["factors"]) == {"block_mass": 1.5} and "factor_ranges" not in meta
