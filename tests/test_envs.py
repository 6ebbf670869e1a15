"""Ground-truth environments: Gymnasium contract, exact state round trip, determinism,
colour/position agreement, action validation and the physics the probes rely on
(occlusion, contact-only pushing). Also the colour reader in embodied.vision."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import embodied.envs  # noqa: F401  (registers embodied/*-v0)
from embodied.vision import colour_centroid, colour_mask, pixel_error
from embodied.envs.gym_mujoco import GymMujocoPixels
from embodied.envs.registry import make_task
from embodied.envs.tasks.explore import path_blocker
from embodied.envs.tasks.occlusion import BALL_RADIUS, OcclusionEnv

# check_env's advice about unbounded state spaces and about envs made without gymnasium.make
pytestmark = [pytest.mark.filterwarnings("ignore:.*observation space (minimum|maximum) value is:UserWarning"),
              pytest.mark.filterwarnings("ignore:.*not having a spec:UserWarning")]

TASK_IDS = {"reach": "embodied/Reach-v0", "push": "embodied/Push-v0", "occlusion": "embodied/Occlusion-v0"}
OBS_TYPES = ("pixels", "state", "pixels_proprio")
WRAPPED_ID = "Reacher-v5"


def make(task, obs_type="pixels"):
    if task == WRAPPED_ID:
        return GymMujocoPixels(WRAPPED_ID, obs_type=obs_type)
    return gym.make(TASK_IDS[task], obs_type=obs_type).unwrapped


@pytest.fixture(scope="module")
def pixel_envs():
    """One pixel env per task, shared by the tests that only reset and step."""
    made = {task: make(task) for task in (*TASK_IDS, WRAPPED_ID)}
    yield made
    for env in made.values():
        env.close()


def random_actions(env, n, seed):
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    return rng.uniform(low, high, size=(n, *env.action_space.shape)).astype(np.float32)


# ---- Gymnasium contract --------------------------------------------------------------

@pytest.mark.parametrize("obs_type", OBS_TYPES)
@pytest.mark.parametrize("task", [*TASK_IDS, WRAPPED_ID])
def test_check_env(task, obs_type):
    env = make(task, obs_type)
    try:
        check_env(env)
        obs, info = env.reset(seed=0)
        assert obs in env.observation_space
        if obs_type != "state":
            pixels = obs if obs_type == "pixels" else obs["pixels"]
            assert pixels.dtype == np.uint8 and pixels.shape == (64, 64, 3)
            assert pixels.std() > 0, "the frame is blank"
        assert set(info["objects"]) == {o.name for o in env.objects}
        assert isinstance(info["is_success"], bool)
        assert env.render().shape == (64, 64, 3)
    finally:
        env.close()


def test_gymnasium_make_registered_ids():
    for task, env_id in TASK_IDS.items():
        env = gym.make(env_id)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (64, 64, 3) and env.unwrapped.task_name == task
        env.close()


def test_wrapper_surface():
    env = make_task(WRAPPED_ID, obs_type="pixels_proprio")
    try:
        assert isinstance(env, GymMujocoPixels) and env.task_name == WRAPPED_ID
        assert env.max_episode_steps == gym.spec(WRAPPED_ID).max_episode_steps == 50
        assert env.frame_skip == 2
        names = [o.name for o in env.objects]
        assert "world" not in names and {"fingertip", "target"} <= set(names)
        actuated = {o.name: o.actuated for o in env.objects}
        assert actuated["fingertip"] and actuated["body1"] and not actuated["target"]
        obs, info = env.reset(seed=0)
        assert obs["proprio"].shape == (4,)  # two hinge joints: qpos and qvel
        np.testing.assert_allclose(info["objects"]["fingertip"], env.data.body("fingertip").xpos)
        assert info["is_success"] is False
        with pytest.raises(ValueError, match="trained model"):
            env.reward_from_sensors(env.data.sensordata)
        # the projection puts the base of the arm on the arm's pixels, not on the floor
        col, row = np.round(env.world_to_pixel(info["objects"]["body0"])).astype(int)
        floor = np.median(obs["pixels"].reshape(-1, 3), axis=0)
        assert np.abs(obs["pixels"][row, col].astype(int) - floor).sum() > 30
        steps, truncated = 0, False
        while not truncated:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            steps += 1
            assert not terminated
        assert steps == 50
    finally:
        env.close()
    with pytest.raises(ValueError, match="not a registered"):
        GymMujocoPixels("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="not a MuJoCo env"):
        GymMujocoPixels("CartPole-v1")


def test_wrapper_normalises_actions_onto_the_inner_bounds():
    env = make_task("Pusher-v5")
    try:
        assert env._env.action_space.high[0] == 2.0
        assert env.action_space == gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        env.reset(seed=0)
        start = env.get_state()
        for action, ctrl in ((1.0, 2.0), (-1.0, -2.0), (0.25, 0.5), (3.0, 2.0)):
            env.set_state(start)
            env.step(np.full(7, action))
            np.testing.assert_array_equal(env.data.ctrl, np.full(7, ctrl))
        # one mapping for the env and any batched user (the oracle): any leading shape
        np.testing.assert_array_equal(env.action_to_ctrl(np.full((4, 3, 7), 0.5)), np.ones((4, 3, 7)))
    finally:
        env.close()
    # an env already in [-1, 1] gets exactly the same numbers as before
    reacher = make_task(WRAPPED_ID)
    a = np.random.default_rng(0).uniform(-1, 1, (5, 2))
    np.testing.assert_array_equal(reacher.action_to_ctrl(a), a)
    reacher.close()


def test_wrapper_terminates_and_clips_to_its_own_range():
    env = GymMujocoPixels("InvertedPendulum-v5", obs_type="state")
    try:
        assert env.action_space.high[0] == 1.0 and env.max_episode_steps == 1000
        env.reset(seed=0)
        start = env.get_state()
        a = env.step(np.array([10.0]))[0]
        assert env.data.ctrl[0] == 3.0  # the inner env's own bound
        env.set_state(start)
        np.testing.assert_array_equal(env.step(np.array([1.0]))[0], a)
        terminated = False
        for _ in range(200):
            _, _, terminated, truncated, _ = env.step(np.array([1.0]))
            if terminated:
                break
        assert terminated and not truncated, "pushing the cart hard one way must drop the pole"
    finally:
        env.close()


def _unlimited_reacher():
    from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv

    env = ReacherEnv()
    env.model.actuator_ctrllimited[1] = 0  # MuJoCo's "no range": Gymnasium makes the box [0, 0]
    env.model.actuator_ctrlrange[1] = 0
    env._set_action_space()
    return env


def _infinite_reacher():
    from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv

    env = ReacherEnv()
    env.action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    return env


@pytest.mark.filterwarnings("ignore:.*maximum and minimum values are equal:UserWarning")
@pytest.mark.parametrize("entry_point, bounds", [(_unlimited_reacher, r"\[0, 0\]"),
                                                 (_infinite_reacher, r"\[-inf, inf\]")])
def test_wrapper_refuses_unbounded_actuators(entry_point, bounds):
    env_id = f"test/{entry_point.__name__.strip('_')}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point, max_episode_steps=50)
    with pytest.raises(ValueError, match=rf"actuator \d has no finite control range \({bounds}\).*ctrlrange"):
        GymMujocoPixels(env_id)


def test_pusher_collect_then_plan():
    """Collected actions and planned actions both live in [-1, 1] and mean the same controls."""
    from embodied.collect import record_episode
    from embodied.load import load_model
    from embodied.planners import make_planner
    from embodied.planners.mpc import run_mpc

    env = make_task("Pusher-v5", obs_type="pixels_proprio", width=16, height=16)
    try:
        arrays, meta = record_episode(env, seed=0, policy="mixed")
        actions, states = arrays["action"], arrays["sim_state"]
        assert meta["length"] == 100 and np.abs(actions).max() <= 1.0 and np.abs(actions).max() > 0.9
        # replaying the stored actions from the stored start reproduces the stored states exactly
        env.set_state(states[0])
        for t in (0, 1, 2):
            env.step(actions[t])
            np.testing.assert_array_equal(env.get_state(), states[t + 1])
        model = load_model("copy_last", "Pusher-v5", image_size=16)
        planner = make_planner("random", "Pusher-v5", horizon=2, samples=4, elites=2, seed=0)
        metrics = run_mpc(env, model, planner, episodes=1, max_steps=3, videos=0)
        assert metrics["episodes"] == 1 and np.isfinite(metrics["return_mean"])
    finally:
        env.close()


def test_terminating_env_steps_on_honestly():
    """A terminated episode is reported as terminated, the physics runs on, and collect knows how long to go."""
    env = make_task("InvertedDoublePendulum-v5", obs_type="pixels_proprio", width=16, height=16)
    try:
        assert env.min_episode_steps == 50 and env.max_episode_steps == 1000
        assert make_task(WRAPPED_ID, min_episode_steps=0).min_episode_steps == 0
        env.reset(seed=0)
        flags, rewards, qpos = [], [], []
        for _ in range(env.min_episode_steps):
            _, reward, terminated, truncated, _ = env.step(np.ones(1))
            flags.append(terminated)
            rewards.append(reward)
            qpos.append(env.data.qpos.copy())
            assert not truncated
        first = flags.index(True)
        assert 0 < first < 20, "pushing one way drops the poles within a few steps"
        assert env.get_state()[-1] == env.min_episode_steps
        assert np.ptp(np.array(qpos[first:]), axis=0).max() > 0.1, "the physics runs on after the termination"
        # the env's own reward: an alive bonus (10) before the fall, none at a terminated step
        assert min(rewards[:first]) > 5 and all(r <= 0 for r, t in zip(rewards, flags) if t)
    finally:
        env.close()


def test_collect_keeps_short_episodes_alive():
    """collect records at least min_episode_steps steps of a terminating env (needs embodied.collect's loop)."""
    from embodied.collect import record_episode

    env = make_task("InvertedDoublePendulum-v5", obs_type="pixels_proprio", width=16, height=16)
    try:
        arrays, meta = record_episode(env, seed=0, policy="mixed")
        terminated = arrays["terminated"].astype(bool)
        assert meta["length"] >= env.min_episode_steps and terminated[-1]
        assert terminated[:10].any(), "random actions drop the poles within a few steps"
    finally:
        env.close()


# ---- exact state round trip and determinism --------------------------------------------

@pytest.mark.parametrize("task", [*TASK_IDS, WRAPPED_ID])
def test_state_round_trip_replays_bit_for_bit(task):
    env = make(task, "pixels_proprio")
    state_env = make(task, "state")
    try:
        for e in (env, state_env):
            e.reset(seed=1)
            for a in random_actions(e, 7, seed=2):
                e.step(a)
        start = env.get_state()
        actions = random_actions(env, 12, seed=3)

        def run(e):
            out = []
            for a in actions:
                obs, reward, terminated, truncated, info = e.step(a)
                out.append((obs, reward, terminated, truncated, info["objects"], e.get_state()))
            return out

        first = run(env)
        env.reset(seed=99)  # somewhere else entirely
        env.set_state(start)
        np.testing.assert_array_equal(env.get_state(), start)
        second = run(env)
        for (o1, r1, te1, tr1, ob1, s1), (o2, r2, te2, tr2, ob2, s2) in zip(first, second):
            np.testing.assert_array_equal(o1["pixels"], o2["pixels"])
            np.testing.assert_array_equal(o1["proprio"], o2["proprio"])
            np.testing.assert_array_equal(s1, s2)
            assert (r1, te1, tr1) == (r2, te2, tr2)
            for name in ob1:
                np.testing.assert_array_equal(ob1[name], ob2[name])

        # state observations round-trip too, and the same state renders the same frame
        state_env.set_state(start)
        replay = [state_env.step(a)[0] for a in actions]
        for (o1, *_), o2 in zip(first, replay):
            assert o2.shape == state_env.observation_space.shape
        state_env.set_state(start)
        np.testing.assert_array_equal([state_env.step(a)[0] for a in actions], replay)
        env.set_state(first[4][-1])
        frame_a = env.render_frame()
        env.set_state(first[4][-1])
        np.testing.assert_array_equal(env.render_frame(), frame_a)
    finally:
        env.close()
        state_env.close()


def test_set_state_rejects_wrong_vector(pixel_envs):
    env = pixel_envs["push"]
    with pytest.raises(ValueError, match="get_state"):
        env.set_state(np.zeros(3))
    with pytest.raises(ValueError, match="get_state"):
        env.set_state(pixel_envs["reach"].get_state())


@pytest.mark.parametrize("task", ["reach", WRAPPED_ID])
def test_set_state_refuses_bad_states_before_touching_the_simulator(pixel_envs, task):
    env = pixel_envs[task]
    env.reset(seed=3)
    env.step(random_actions(env, 1, seed=0)[0])
    good, frame = env.get_state(), env.render_frame()
    last = len(good) - 1
    cases = [(1, np.nan, r"state\[1\] \(qpos\[0\]\) is nan: every entry must be finite"),
             (0, np.inf, r"state\[0\] \(time\[0\]\) is inf"),
             (last - 1, -np.inf, r"qacc_warmstart\[\d+\]\) is -inf"),
             (2, 1e11, r"is 1e\+11: every entry must be finite and within \+-1e\+10"),
             (last, -1.0, r"\(the step counter\) is -1: it must be a whole number >= 0"),
             (last, 2.5, r"\(the step counter\) is 2.5: it must be a whole number >= 0")]
    for i, value, message in cases:
        bad = good.copy()
        bad[i] = value
        with pytest.raises(ValueError, match=message + r".*get_state\(\)$"):
            env.set_state(bad)
        np.testing.assert_array_equal(env.get_state(), good)
        np.testing.assert_array_equal(env.render_frame(), frame)
    with pytest.raises(ValueError, match="not a vector of numbers"):
        env.set_state(["x"] * len(good))
    np.testing.assert_array_equal(env.get_state(), good)
    # the state is still live: the next step is the same as from the untouched state
    _, _, _, _, info = env.step(np.zeros(env.action_space.shape))
    env.set_state(good)
    _, _, _, _, again = env.step(np.zeros(env.action_space.shape))
    assert info["is_success"] == again["is_success"]
    for name in info["objects"]:
        np.testing.assert_array_equal(info["objects"][name], again["objects"][name])


@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes:UserWarning")
@pytest.mark.parametrize("make_env", [lambda **kw: gym.make("embodied/Push-v0", **kw),
                                      lambda **kw: make_task("reach", **kw),
                                      lambda **kw: make_task(WRAPPED_ID, **kw)], ids=["gym.make", "ours", "wrapped"])
def test_constructor_options_are_checked(make_env):
    bad = [(dict(width=0), r"^width=0 must be a whole number of pixels from 1 to 4096 \(e.g. 64\)$"),
           (dict(height=-8), r"^height=-8 must be a whole number of pixels"),
           (dict(width=64.5), r"^width=64.5 must be a whole number"),
           (dict(width="64"), r"^width='64' must be a whole number"),
           (dict(height=True), r"^height=True must be a whole number"),
           (dict(width=10 ** 6), r"^width=1000000 must be a whole number of pixels from 1 to 4096"),
           (dict(obs_type="rgb"), r"^obs_type='rgb' is not one of 'pixels', 'state', 'pixels_proprio'$"),
           (dict(render_mode="depth"), r"^render_mode='depth' is not supported: use 'rgb_array'$")]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            make_env(**kwargs)
    env = make_env(width=48.0, height=16)  # a whole number as a float is fine
    assert env.unwrapped.width == 48 and env.reset(seed=0)[0].shape == (16, 48, 3)
    env.close()


def test_wrapper_options_are_checked():
    for kwargs, message in [
            (dict(max_episode_steps=0), r"^max_episode_steps=0 must be a whole number >= 1$"),
            (dict(min_episode_steps=-1), r"^min_episode_steps=-1 must be a whole number >= 0$"),
            (dict(min_episode_steps=2.5), r"^min_episode_steps=2.5 must be a whole number >= 0$"),
            (dict(camera="nope"), r"^camera='nope' is not a camera of Reacher-v5: use a mujoco.MjvCamera, or None"),
            (dict(camera=3), r"^camera=3 is not a camera of Reacher-v5")]:
        with pytest.raises(ValueError, match=message):
            GymMujocoPixels(WRAPPED_ID, **kwargs)
    with pytest.raises(ValueError, match=r"^camera='nope' is not a camera of Swimmer-v5: use one of "
                                         r"\['track'\] \(ids 0 to 0\), a mujoco.MjvCamera"):
        GymMujocoPixels("Swimmer-v5", camera="nope")
    env = GymMujocoPixels("Swimmer-v5", camera="track", width=16, height=16)
    assert env.reset(seed=0)[0].std() > 0
    env.close()


@pytest.mark.parametrize("task", [*TASK_IDS, WRAPPED_ID])
def test_seeded_reset_is_deterministic(pixel_envs, task):
    env = pixel_envs[task]
    obs_a, _ = env.reset(seed=7)
    state_a = env.get_state()
    env.step(random_actions(env, 1, seed=0)[0])
    obs_b, _ = env.reset(seed=7)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(state_a, env.get_state())
    obs_c, _ = env.reset(seed=8)
    assert not np.array_equal(state_a, env.get_state())
    assert not np.array_equal(obs_a, obs_c)


# ---- colour / position agreement -------------------------------------------------------

def _world_aabbs(model, data):
    """World-frame axis-aligned boxes (centre, half size) of every geom."""
    local_c, local_h = model.geom_aabb[:, :3], model.geom_aabb[:, 3:]
    rot = data.geom_xmat.reshape(-1, 3, 3)
    centre = data.geom_xpos + np.einsum("gij,gj->gi", rot, local_c)
    half = np.einsum("gij,gj->gi", np.abs(rot), local_h)
    return centre, half


def fully_visible(env, name, margin_px=1.0):
    """Whether nothing above the object covers any of its top-view footprint and it is all in view.

    Uses positions and sizes only: a geom of another body whose top is higher than
    the object's top and whose xy box meets the object's xy box covers it. Planes
    (the floor) and invisible geoms never cover anything.
    """
    model, data = env.model, env.data
    body = model.body(name).id
    centre, half = _world_aabbs(model, data)
    own = model.geom_bodyid == body
    lo = (centre[own] - half[own]).min(axis=0)
    hi = (centre[own] + half[own]).max(axis=0)
    pad = margin_px * env.view_extent / env.height
    if np.any(lo[:2] - pad < -env.view_extent / 2) or np.any(hi[:2] + pad > env.view_extent / 2):
        return False
    for g in np.flatnonzero(~own):
        if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_PLANE or model.geom_rgba[g, 3] == 0:
            continue
        g_lo, g_hi = centre[g] - half[g], centre[g] + half[g]
        if g_hi[2] <= hi[2]:
            continue
        if np.all(g_lo[:2] < hi[:2] + pad) and np.all(g_hi[:2] > lo[:2] - pad):
            return False
    return True


@pytest.mark.parametrize("task", list(TASK_IDS))
def test_colour_centroid_matches_object_position(pixel_envs, task):
    env = pixel_envs[task]
    checked = {o.name: 0 for o in env.objects}
    skipped = {o.name: 0 for o in env.objects}
    for seed in range(12):
        frame, info = env.reset(seed=seed)
        for a in random_actions(env, seed % 4 * 3, seed=seed):
            frame, _, _, _, info = env.step(a)
        for obj in env.objects:
            if not fully_visible(env, obj.name):
                skipped[obj.name] += 1
                continue
            xy, present = colour_centroid(frame, obj.rgb)
            assert present, f"{task}: {obj.name} visible but its colour {obj.rgb} is not in the frame"
            truth = env.world_to_pixel(info["objects"][obj.name])
            err = np.linalg.norm(xy - truth)
            assert err <= 1.0, f"{task} seed {seed}: {obj.name} centroid {xy} vs projected {truth} ({err:.2f} px)"
            checked[obj.name] += 1
    assert all(n >= 3 for n in checked.values()), f"too few visible samples: {checked}, skipped {skipped}"


def test_object_colours_are_distinct():
    for task in TASK_IDS:
        env = make(task)
        rgbs = np.array([o.rgb for o in env.objects], dtype=float)
        d = np.linalg.norm(rgbs[:, None] - rgbs[None], axis=-1) + np.eye(len(rgbs)) * 1e9
        assert d.min() > 2 * 60, f"{task}: object colours closer than twice the default tolerance"
        env.close()


# ---- action validation -------------------------------------------------------------------

@pytest.mark.parametrize("task", [*TASK_IDS, WRAPPED_ID])
def test_action_validation(pixel_envs, task):
    env = pixel_envs[task]
    env.reset(seed=0)
    n = env.action_space.shape[0]
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(n, np.nan))
    with pytest.raises(ValueError, match="inf"):
        env.step(np.full(n, np.inf))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(n + 1))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((1, n)))
    with pytest.raises(ValueError, match=rf"^action of type list is not numeric: pass {n} numbers per action$"):
        env.step(["left"] * n)
    start = env.get_state()
    big = np.where(np.arange(n) % 2 == 0, 5.0, -7.0) * np.abs(env.action_space.high)
    out_big = env.step(big)
    state_big = env.get_state()
    env.set_state(start)
    out_clip = env.step(np.clip(big, env.action_space.low, env.action_space.high))
    np.testing.assert_array_equal(state_big, env.get_state())
    np.testing.assert_array_equal(out_big[0], out_clip[0])
    assert out_big[1] == out_clip[1] or task == WRAPPED_ID  # Gymnasium's control cost sees the clipped action too
    # a list of Python floats is a valid action
    env.step([0.0] * n)


# ---- the physics the probes rely on ---------------------------------------------------------

BALL_RGB = dict((o.name, o.rgb) for o in OcclusionEnv.objects)["ball"]


def test_occlusion_ball_passes_under_occluder(pixel_envs):
    env = pixel_envs["occlusion"]
    for seed in range(4):
        frame, info = env.reset(seed=seed)
        hidden, present = [], []
        for _ in range(env.max_episode_steps):
            frame, _, _, _, info = env.step(np.zeros(2))
            ball = info["objects"]["ball"]
            hidden.append(bool(OcclusionEnv.is_hidden(ball[:2])))
            present.append(bool(colour_centroid(frame, BALL_RGB)[1]))
            if hidden[-1]:
                assert not colour_mask(frame, BALL_RGB).any(), "a hidden ball shows through the occluder"
        hidden = np.array(hidden)
        assert hidden.any(), f"seed {seed}: the ball never went under the occluder"
        first = int(np.argmax(hidden))
        assert not hidden[0] and present[0], f"seed {seed}: the ball should start visible"
        after = ~hidden[first:]
        assert after.any(), f"seed {seed}: the ball never came out from under the occluder"
        assert np.array(present[first:])[after][-1], f"seed {seed}: the ball came out but its colour is not seen"


def test_path_blocker_lets_the_ball_meet_a_pusher_at_rest(pixel_envs):
    """The occlusion explorer's path blocker stops in the ball's way: the ball touches a pusher that stands
    still, and bounces off it (it moves away afterwards)."""
    env = pixel_envs["occlusion"]
    touched = 0
    for seed in range(6):
        _, info = env.reset(seed=seed)
        act, label = path_blocker(env, np.random.default_rng(seed), "ball")
        gaps, still = [], []
        for _ in range(env.max_episode_steps):
            a = act()
            _, _, _, _, info = env.step(a)
            gaps.append(np.linalg.norm(info["objects"]["ball"][:2] - info["objects"]["pusher"][:2]))
            still.append(not a.any())
        assert label in ("explore-block", "explore-rest")
        assert still[-1], f"seed {seed}: the pusher should end the episode at rest"
        t = int(np.argmin(gaps))
        if gaps[t] < 2 * BALL_RADIUS + 0.005 and still[t]:
            touched += 1
            assert gaps[-1] > gaps[t] + 0.01, f"seed {seed}: the ball stayed on the pusher instead of bouncing"
    assert touched >= 4, f"the ball met a pusher at rest in only {touched} of 6 episodes"


def test_push_block_moves_only_on_contact(pixel_envs):
    env = pixel_envs["push"]
    for seed in range(3):
        _, info = env.reset(seed=seed)
        block0 = info["objects"]["block"].copy()
        pusher0 = info["objects"]["pusher"].copy()
        for _ in range(env.max_episode_steps):
            _, _, _, _, info = env.step(np.zeros(2))
        np.testing.assert_allclose(info["objects"]["block"], block0, atol=1e-9)
        np.testing.assert_allclose(info["objects"]["pusher"], pusher0, atol=1e-3)

        # drive the pusher into the block: it moves
        _, info = env.reset(seed=seed)
        moved = 0.0
        for _ in range(40):
            direction = info["objects"]["block"][:2] - info["objects"]["pusher"][:2]
            _, _, _, _, info = env.step(direction / np.linalg.norm(direction))
            moved = np.linalg.norm(info["objects"]["block"][:2] - block0[:2])
        assert moved > 0.02, f"seed {seed}: block moved only {moved:.4f} m when pushed"

        # drive the pusher away from the block: it stays put
        _, info = env.reset(seed=seed)
        for _ in range(20):
            direction = info["objects"]["pusher"][:2] - info["objects"]["block"][:2]
            _, _, _, _, info = env.step(direction / np.linalg.norm(direction))
        np.testing.assert_allclose(info["objects"]["block"], block0, atol=1e-9)


# ---- embodied.vision -------------------------------------------------------------------

def test_colour_centroid_synthetic_and_vectorised():
    rgb = (229, 0, 0)
    frames = np.zeros((2, 3, 16, 20, 3), np.uint8)
    frames[0, 0, 4:7, 10:13] = rgb  # centre (col 11, row 5)
    frames[0, 1, 0:2, 0:2] = (210, 30, 20)  # close colour, centre (0.5, 0.5)
    frames[1, 2, 9, 3] = rgb  # a single pixel: below min_pixels
    xy, present = colour_centroid(frames, rgb)
    assert xy.shape == (2, 3, 2) and present.shape == (2, 3)
    np.testing.assert_allclose(xy[0, 0], [11, 5])
    np.testing.assert_allclose(xy[0, 1], [0.5, 0.5])
    assert present.tolist() == [[True, True, False], [False, False, False]]
    assert np.isnan(xy[~present]).all()
    xy1, p1 = colour_centroid(frames[1, 2], rgb, min_pixels=1)
    assert p1 and np.allclose(xy1, [3, 9])
    # one frame gives shapes (2,) and ()
    xy0, p0 = colour_centroid(frames[0, 0], rgb)
    assert xy0.shape == (2,) and p0.shape == () and bool(p0)
    # float frames (a decoder's output on the 0..255 scale) work the same
    np.testing.assert_allclose(colour_centroid(frames.astype(np.float32), rgb)[0][0, 0], [11, 5])
    # tolerance: far colours are not matched
    assert not colour_mask(np.full((4, 4, 3), (150, 0, 0), np.uint8), rgb).any()
    assert colour_mask(np.full((4, 4, 3), (190, 20, 10), np.uint8), rgb).all()
    with pytest.raises(ValueError, match="H, W, 3"):
        colour_centroid(np.zeros((4, 4)), rgb)


def test_colour_centroid_robust_to_blur():
    # a blurred disc still gives a centroid near its centre
    yy, xx = np.mgrid[0:64, 0:64]
    disc = ((xx - 40.0) ** 2 + (yy - 22.0) ** 2 <= 16).astype(np.float32)
    kernel = np.ones(3) / 3
    for axis in (0, 1):
        disc = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, disc)
    background = np.array([38, 38, 38], np.float32)
    frame = (background + disc[..., None] * (np.array([229, 0, 0]) - background)).round().astype(np.uint8)
    xy, present = colour_centroid(frame, (229, 0, 0))
    assert present and np.linalg.norm(xy - [40, 22]) < 0.5


def test_pixel_error():
    pred = np.array([[0.0, 0.0], [np.nan, np.nan], [3.0, 4.0], [1.0, 1.0]])
    true = np.array([[3.0, 4.0], [1.0, 1.0], [3.0, 4.0], [np.nan, np.nan]])
    err = pixel_error(pred, true)
    np.testing.assert_allclose(err[:3], [5.0, np.hypot(64, 64), 0.0])
    assert np.isnan(err[3])
    assert pixel_error(pred, true, penalty=100.0)[1] == 100.0
    assert pixel_error(pred, true, image_size=(32, 32))[1] == pytest.approx(np.hypot(32, 32))
    assert pixel_error(pred[None], true[None]).shape == (1, 4)
