"""Learned world models (recurrent, transformer and slots) behind the one WorldModel interface.

A tiny push dataset is collected once per session (no dependency on /work/data);
the models use tiny configs so the fast tests run in seconds. The training tests
check that the loss falls and that a briefly trained model's predictions
depend on the actions.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from embodied.dataset import WindowSampler  # noqa: E402
from embodied.dataset import Dataset
from embodied.models import MODELS, build_model  # noqa: E402
from embodied.models.base import cat_states, index_state, repeat_state, state_batch  # noqa: E402

TINY = {
    "recurrent": {"arch": "recurrent", "channels": 8, "embed_dim": 32, "proprio_embed": 16, "deter": 32,
                  "stoch": 8, "hidden": 32},
    "transformer": {"arch": "transformer", "channels": 8, "embed_dim": 32, "proprio_embed": 16, "latent": 32,
                    "d_model": 32, "layers": 1, "heads": 2, "hidden": 32, "window": 8},
    "transformer-gpt2": {"arch": "transformer", "backbone": "gpt2", "channels": 8, "embed_dim": 32,
                         "proprio_embed": 16, "latent": 32, "d_model": 32, "layers": 1, "heads": 2, "hidden": 32,
                         "window": 8},
    "slots": {"arch": "slots", "hidden": 32},
}
ARCHS = list(TINY)
FIT: dict = {}  # the sample batch a model's data-dependent set-up (fit_data) reads, made with the dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from embodied.collect import collect

    out = tmp_path_factory.mktemp("push_data")
    collect("push", 8, out=out, workers=1, progress=False)
    ds = Dataset(out, "push", heldout_fraction=0.2)
    FIT["batch"] = WindowSampler(ds.train, 6).sample(16, np.random.default_rng(0))
    return ds


@pytest.fixture(scope="module")
def spec(dataset):
    return dataset.manifest


def _model(arch, spec, seed=0, **over):
    torch.manual_seed(seed)
    model = build_model({**TINY[arch], **over}, spec)
    model.fit_data(FIT["batch"])
    return model


def _batch(dataset, b=3, t=6, seed=0):
    return WindowSampler(dataset.train, t).sample(b, np.random.default_rng(seed))


def _context(batch, ctx=4):
    return batch["frames"][:, :ctx], batch["actions"][:, :ctx - 1], batch["proprio"][:, :ctx]


def test_registry_and_config(spec):
    assert set(MODELS) >= {"recurrent", "transformer"}
    for arch in ARCHS:
        model = _model(arch, spec)
        assert model.context == 4 and model.task == "push" and model.action_dim == spec["action_dim"]
        rebuilt = build_model(model.config, model.spec)
        assert rebuilt.config == model.config
        import json

        json.dumps(model.config)  # JSON-able
    with pytest.raises(ValueError, match="unknown model arch"):
        build_model({"arch": "nope"}, spec)
    with pytest.raises(ValueError, match="unknown"):
        build_model({"arch": "recurrent", "not_an_option": 1}, spec)
    assert build_model({}, spec).arch == "recurrent"


@pytest.mark.parametrize("arch", ARCHS)
def test_interface_shapes(arch, spec, dataset):
    model = _model(arch, spec).eval()
    batch = _batch(dataset, b=3, t=8)
    frames, actions, proprio = _context(batch)
    A = spec["action_dim"]
    with torch.no_grad():
        state = model.encode(frames, actions, proprio)
        assert all(v.shape[0] == 3 for v in state.values()) and state_batch(state) == 3
        nxt = model.step(state, batch["actions"][:, 3])
        assert set(nxt) == set(state)
        img = model.decode(nxt)
        assert img.shape == (3, 64, 64, 3) and img.dtype == torch.uint8
        r = model.reward(nxt)
        assert r.shape == (3,) and r.dtype == torch.float32
        d = model.goal_distance(nxt, index_state(state, 0))
        assert d.shape == (3,) and torch.all(d >= 0)
        assert torch.allclose(model.goal_distance(state, state), torch.zeros(3), atol=1e-5)
        final, rewards = model.rollout(index_state(state, 1), torch.zeros(5, 3, A))
        assert rewards.shape == (5, 3) and state_batch(final) == 5
        pred = model.predict(frames, proprio, actions, batch["actions"][:, 3:7])
        assert pred.shape == (3, 4, 64, 64, 3) and pred.dtype == torch.uint8
        # proprio is optional; a 1-frame context works
        assert model.decode(model.encode(frames, actions)).shape == (3, 64, 64, 3)
        one = model.encode(frames[:, :1], actions[:, :0], proprio[:, :1])
        assert model.decode(model.step(one, batch["actions"][:, 0])).shape == (3, 64, 64, 3)
        # longer rollouts than the training window stay finite (bounded context for the transformer)
        s = state
        for _ in range(15):
            s = model.step(s, torch.rand(3, A) * 2 - 1)
        assert all(torch.isfinite(v.float()).all() for v in s.values())


@pytest.mark.parametrize("arch", ARCHS)
def test_batching_matches_single(arch, spec, dataset):
    model = _model(arch, spec).eval()
    batch = _batch(dataset, b=5, t=8, seed=1)
    frames, actions, proprio = _context(batch)
    future = batch["actions"][:, 3:7]
    with torch.no_grad():
        s5 = model.encode(frames, actions, proprio)
        r5 = []
        for t in range(4):
            s5 = model.step(s5, future[:, t])
            r5.append(model.reward(s5))
        for i in range(5):
            s1 = model.encode(frames[i:i + 1], actions[i:i + 1], proprio[i:i + 1])
            for t in range(4):
                s1 = model.step(s1, future[i:i + 1, t])
                assert torch.allclose(model.reward(s1), r5[t][i:i + 1], atol=1e-4)
            for k in s1:
                assert torch.allclose(s1[k].float(), s5[k][i:i + 1].float(), atol=1e-4), k
            diff = (model.decode(s1).int() - model.decode(index_state(s5, i)).int()).abs().max()
            assert diff <= 1


@pytest.mark.parametrize("arch", ARCHS)
def test_deterministic_under_seed(arch, spec, dataset):
    batch = _batch(dataset, b=2, t=8)
    frames, actions, proprio = _context(batch)
    outs = []
    for _ in range(2):
        model = _model(arch, spec, seed=3)
        loss, _ = model.loss(_batch(dataset, b=2, t=6), 0)
        model.eval()
        outs.append((loss.item(), model.predict(frames, proprio, actions, batch["actions"][:, 3:6])))
    assert outs[0][0] == outs[1][0]
    assert torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_roundtrip(arch, spec, dataset, tmp_path):
    from safetensors.torch import load_file, save_file

    model = _model(arch, spec)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for step in range(3):  # so the running normalisers and weights move off their initial values
        loss, _ = model.loss(_batch(dataset, b=2, t=6, seed=step), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    other = build_model(model.config, model.spec)
    other.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    other.eval()
    batch = _batch(dataset, b=2, t=8, seed=5)
    frames, actions, proprio = _context(batch)
    with torch.no_grad():
        a = model.predict(frames, proprio, actions, batch["actions"][:, 3:7])
        b = other.predict(frames, proprio, actions, batch["actions"][:, 3:7])
        ra = model.rollout(model.encode(frames, actions, proprio), batch["actions"][:, 3:7])[1]
        rb = other.rollout(other.encode(frames, actions, proprio), batch["actions"][:, 3:7])[1]
    assert torch.equal(a, b) and torch.equal(ra, rb)


@pytest.mark.parametrize("arch", ["recurrent", "transformer", "slots"])
def test_state_helpers(arch, spec, dataset):
    model = _model(arch, spec).eval()
    batch = _batch(dataset, b=2, t=6)
    frames, actions, proprio = _context(batch)
    with torch.no_grad():
        s = model.encode(frames, actions, proprio)
        tiled = repeat_state(index_state(s, 0), 4)
        assert state_batch(tiled) == 4
        both = cat_states([index_state(s, 0), index_state(s, 1)])
        for k in s:
            assert torch.equal(both[k], s[k])
        a = torch.rand(4, 2) * 2 - 1
        r1 = model.reward(model.step(tiled, a))
        r2 = torch.cat([model.reward(model.step(index_state(s, 0), a[i:i + 1])) for i in range(4)])
        assert torch.allclose(r1, r2, atol=1e-4)


def _train(model, dataset, steps, batch=8, t=8, lr=2e-3, seed=0):
    rng = np.random.default_rng(seed)
    sampler = WindowSampler(dataset.train, t)
    opt = torch.optim.Adam(model.parameters(), lr)
    losses = []
    model.train()
    for step in range(steps):
        loss, metrics = model.loss(sampler.sample(batch, rng), step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        losses.append(metrics["loss"])
    model.eval()
    return losses


def _pixel_loss(model, dataset):
    """Reconstruction + open-loop pixel loss on a fixed batch (eval mode, seeded: comparable before/after)."""
    was = model.training
    model.eval()
    torch.manual_seed(123)
    with torch.no_grad():
        _, m = model.loss(_batch(dataset, b=8, t=8, seed=99), 0)
    model.train(was)
    return m["recon"] + m["pred"]


def _action_effect(model, dataset):
    """Mean |pixel| change of the predicted frame 4 steps ahead when the future actions are negated."""
    batch = _batch(dataset, b=6, t=8, seed=11)
    frames, actions, proprio = _context(batch)
    fut = batch["actions"][:, 3:7]
    with torch.no_grad():
        a = model.predict(frames, proprio, actions, fut)[:, -1].float()
        b = model.predict(frames, proprio, actions, -fut)[:, -1].float()
        pa = model.proprio(model.rollout(model.encode(frames, actions, proprio), fut)[0])
        pb = model.proprio(model.rollout(model.encode(frames, actions, proprio), -fut)[0])
    return (a - b).abs().mean().item(), (pa - pb)[:, :2].norm(dim=-1).mean().item()


@pytest.mark.parametrize("arch", ["recurrent", "transformer"])
def test_short_training_reduces_loss_and_uses_actions(arch, spec, dataset):
    torch.manual_seed(0)
    model = _model(arch, spec)
    before = _pixel_loss(model, dataset)
    _train(model, dataset, steps=40, batch=6, t=8)
    after = _pixel_loss(model, dataset)
    assert after < 0.95 * before, (before, after)  # composite decoder: training starts at copy-last
    pixel, proprio = _action_effect(model, dataset)
    assert pixel > 0.01 and proprio > 1e-3, (pixel, proprio)


def test_slots_find_the_objects_and_learn_their_motion(spec, dataset):
    """The palette found in the frames gives one slot per object; a short training lowers the open-loop
    position error, the pusher follows the action and the rendered frame shows each object's colour where
    its slot is."""
    from embodied.models.slots import find_palette

    frames = FIT["batch"]["frames"]
    _, colours, sizes = find_palette(frames, 4)
    want = sorted(np.array([o["rgb"] for o in spec["objects"]]) / 255.0, key=tuple)
    assert colours.shape == (3, 3) and np.allclose(colours.numpy(), want, atol=0.03), colours
    assert torch.all(sizes > 10)
    model = _model("slots", spec)
    assert model.active.tolist() == [1.0, 1.0, 1.0, 0.0]

    def pos_px():
        torch.manual_seed(123)
        with torch.no_grad():
            return model.eval().loss(_batch(dataset, b=8, t=8, seed=99), 0)[1]["pos_px"]
    before = pos_px()
    _train(model, dataset, steps=40, batch=8, t=8, lr=3e-3)
    assert pos_px() < 0.8 * before, (before, pos_px())
    batch = _batch(dataset, b=6, t=8, seed=11)
    frames, actions, proprio = _context(batch)
    with torch.no_grad():
        s = model.encode(frames, actions, proprio)
        right, _ = model.rollout(s, torch.tensor([1.0, 0.0]).expand(6, 4, 2).clone())
        left, _ = model.rollout(s, torch.tensor([-1.0, 0.0]).expand(6, 4, 2).clone())
        moved = (right["pos"] - left["pos"])[:, :, 0].mean(0)        # x displacement per slot
        img = model.decode(s).numpy()
    pusher = int(np.argmin(np.abs(colours.numpy() - np.array(spec["objects"][0]["rgb"]) / 255).sum(1)))
    assert moved[pusher] > 0.02 and moved[pusher] == moved.max(), moved
    from embodied.vision import colour_centroid
    for k, obj in enumerate(sorted(spec["objects"], key=lambda o: tuple(o["rgb"]))):
        xy, present = colour_centroid(img, obj["rgb"])
        seen = present & (model.observe(frames[:, -1])[1][:, k] >= 1).numpy()
        slot_px = (s["pos"][:, k].numpy() + 1) * 32 - 0.5
        assert np.all(np.linalg.norm(xy[seen] - slot_px[seen], axis=-1) < 1.5), (obj["name"], xy, slot_px)


def test_slots_observe_each_slot_at_the_mean_of_its_pixels(spec, dataset):
    """observe() against its definition: a slot's position is the mean (x, y) of the pixels whose colour bin
    the table names it, its weight ramps with that pixel count over the usual size; a slot with no pixel
    sits at the origin with weight 0. Checked on recorded frames and on a drawn square of known centre."""
    model = _model("slots", spec)
    frames = _batch(dataset, b=4, t=6, seed=7)["frames"].flatten(0, 1)
    k = model.palette.shape[0]
    label = model.lut[((frames.to(torch.int64) >> 5) * torch.tensor([64, 8, 1])).sum(-1)]          # (N,H,W)
    one_hot = (label[..., None] == torch.arange(k)).float().flatten(1, 2)                            # (N,HW,K)
    mass = one_hot.sum(1)
    want = one_hot.transpose(1, 2) @ model.grid[0] / mass.clamp(min=1)[..., None]
    c = model.cfg
    want_weight = ((mass / model.usual_size - c.see_from) / (c.see_full - c.see_from)).clamp(0, 1) * model.active
    pos, weight = model.observe(frames)
    assert torch.allclose(pos, want, atol=1e-6) and torch.allclose(weight, want_weight, atol=1e-6)

    s = model.image_size
    slot = int(torch.argmax(model.active))
    colour = (model.palette[slot] * 255).round().to(torch.uint8)
    background = (model.background.permute(1, 2, 0) * 255).round().to(torch.uint8)
    drawn = background.expand(2, s, s, 3).clone()
    drawn[0, 10:13, 40:43] = colour                                        # a 3x3 square centred on pixel (41, 11)
    pos, weight = model.observe(drawn)
    centre = (torch.tensor([41.5, 11.5]) / s) * 2 - 1                       # pixel centres in [-1, 1]
    assert torch.allclose(pos[0, slot], centre, atol=1e-6), (pos[0, slot], centre)
    others = [j for j in range(k) if j != slot]
    assert torch.all(pos[1] == 0) and torch.all(weight[1] == 0) and torch.all(pos[0, others] == 0)
    pos, weight = model.observe(drawn[:0])                                  # no frames: empty, not an error
    assert pos.shape == (0, k, 2) and weight.shape == (0, k)


def test_slots_remember_covered_objects_and_place_new_ones_where_seen(spec, dataset):
    """A slot never seen in the window has no belief (origin, still); one first seen mid-window is placed
    where it shows with no velocity spike; encode() takes up to ``memory`` frames, as MPC gives it."""
    model = _model("slots", spec).eval()
    assert model.max_context == model.cfg.memory > model.context
    batch = _batch(dataset, b=4, t=8, seed=3)
    frames, actions = batch["frames"].clone(), batch["actions"][:, :7]
    pos, weight = model.observe(frames.flatten(0, 1))
    pos, weight = pos.view(4, 8, -1, 2), weight.view(4, 8, -1)
    k = int(torch.argmax((weight >= 1).all(1).float().sum(0) * model.active))  # a slot fully seen in every frame
    assert bool((weight[:, :, k] >= 1).all())
    mine = (model.lut[((frames.to(torch.int32) >> 5) * torch.tensor([64, 8, 1])).sum(-1)] == k)  # (B,T,H,W)
    background = (model.background.permute(1, 2, 0) * 255).round().to(torch.uint8)
    covered = torch.where(mine[..., None], background.expand_as(frames), frames)
    covered[:, 5:] = frames[:, 5:]                                      # shows again from frame 5
    with torch.no_grad():
        hidden = model.encode(covered[:, :5], actions[:, :4])
        assert torch.all(hidden["pos"][:, k] == 0) and torch.all(hidden["vel"][:, k] == 0)
        assert torch.all(hidden["seen"][:, k] == 0) and torch.all(hidden["seen"].sum(1) == model.active.sum() - 1)
        still = model.step(hidden, torch.ones(4, 2))                     # no belief: it neither moves nor is drawn
        assert torch.all(still["pos"][:, k] == 0) and torch.all(still["seen"] == hidden["seen"])
        colour = (model.palette[k] * 255).round()
        drawn = ((model.decode(hidden).float() - colour).abs().amax(-1) < 20).flatten(1).sum(1)
        assert torch.all(drawn == 0), drawn
        shown = model.encode(covered[:, :6], actions[:, :5])
        assert torch.allclose(shown["pos"][:, k], pos[:, 5, k], atol=1e-6)
        assert torch.all(shown["vel"][:, k] == 0) and torch.all(shown["seen"][:, k] == 1)
        later = model.encode(covered, actions)
    step = (pos[:, 7, k] - pos[:, 6, k]).norm(dim=-1)
    assert torch.all((later["vel"][:, k].norm(dim=-1) - step).abs() < 0.05), (later["vel"][:, k], step)


def test_slots_place_the_hidden_pusher_from_proprioception(spec, dataset):
    """proprio_locate: a head learns slot positions from proprio where the frames show the slot, and a slot
    the frames do not show is placed by it once its running error is small (the pusher: proprio is its
    position); objects proprio does not predict (the block) are never placed by it."""
    model = _model("slots", spec, proprio_locate=True)      # fit_data fits its linear part by least squares
    _train(model, dataset, steps=20, batch=8, t=6, lr=3e-3)
    pusher = int(np.argmin(np.abs(model.palette[:3].numpy() - np.array(spec["objects"][0]["rgb"]) / 255).sum(1)))
    block = int(np.argmin(np.abs(model.palette[:3].numpy() - np.array(spec["objects"][1]["rgb"]) / 255).sum(1)))
    err = model.locate_err
    assert err[pusher] < model.cfg.locate_trust < err[block], err
    batch = _batch(dataset, b=6, t=8, seed=4)
    frames, actions, proprio = batch["frames"].clone(), batch["actions"][:, :7], batch["proprio"]
    pos, weight = model.observe(frames[:, -1])
    mine = model.lut[((frames.to(torch.int32) >> 5) * torch.tensor([64, 8, 1])).sum(-1)] == pusher
    background = (model.background.permute(1, 2, 0) * 255).round().to(torch.uint8)
    hidden = torch.where(mine[..., None], background.expand_as(frames), frames)     # the pusher never shows
    with torch.no_grad():
        placed = model.encode(hidden, actions, proprio)
        blind = model.encode(hidden, actions)                                        # no proprio: no belief
    seen = weight[:, pusher] >= 1
    px = (placed["pos"][:, pusher] - pos[:, pusher]).norm(dim=-1)[seen] * 32
    assert seen.any() and torch.all(px < 2.0) and torch.all(placed["seen"][:, pusher] == 1), px
    assert torch.all(blind["seen"][:, pusher] == 0)


def test_slots_with_inertia_start_moving_only_by_action_or_contact(spec, dataset):
    """inertia: slots at rest, undriven and apart stay exactly where they are, whatever the weights; the
    action still drives and moving slots still move. Without it an untrained net drifts them."""
    torch.manual_seed(0)
    apart = torch.tensor([[-0.6, -0.6], [0.6, 0.6], [-0.6, 0.6], [0.0, 0.0]]).expand(5, 4, 2)
    rest, seen = torch.zeros(5, 4, 2), torch.ones(5, 4)
    for inertia in (True, False):
        model = _model("slots", spec, inertia=inertia).eval()
        with torch.no_grad():
            for p in (model.own[-1].weight, model.own[-1].bias, model.node[-1].weight, model.node[-1].bias):
                p.normal_(0, 0.5)                                     # any weights, not the small init
            pos, vel = model._dynamics(apart, rest, torch.zeros(5, 2), seen)
            driven, _ = model._dynamics(apart, rest, torch.ones(5, 2), seen)
            rolling, _ = model._dynamics(apart, torch.full((5, 4, 2), 0.05), torch.zeros(5, 2), seen)
        still = torch.equal(pos, apart) and torch.equal(vel, rest)
        assert still == inertia, (inertia, (pos - apart).abs().max())
        active = model.active > 0
        assert (driven - apart)[:, active].abs().max() > 1e-3 and (rolling - apart)[:, active].abs().max() > 1e-3


def test_slots_touch_floor_keeps_contact_at_the_touching_distance(spec, dataset):
    """touch_floor: however far the sparsity term shrinks the learned ranges, two objects whose discs touch
    are in contact range; without it a shrunk range misses the contact."""
    for floor in (True, False):
        model = _model("slots", spec, touch_floor=floor)
        i, j = model.pairs
        radius = (model.usual_size / math.pi).sqrt() * 2 / model.image_size
        touch = radius[i] + radius[j]
        assert torch.allclose(model._contact_range(i, j), 1.5 * touch)        # both start at 1.5x touching
        with torch.no_grad():
            model.reach.fill_(-1.0)
        assert bool((model._contact_range(i, j) >= touch - 1e-6).all()) == floor


def test_slots_solid_objects_stop_at_each_others_surface(spec, dataset):
    """solid: a slot driven into a solid neighbour ends the step touching it, not inside it, and its velocity
    says so; the heavier one barely gives way; a pair learned to be passable (solidity 0) overlaps freely.
    Without the option the untrained dynamics let the two sink into each other."""
    torch.manual_seed(0)
    for solid in (True, False):
        model = _model("slots", spec, solid=solid, inertia=True).eval()
        a, b = torch.nonzero(model.active > 0).flatten()[:2].tolist()
        radius = model._radii()
        touch = float(radius[a] + radius[b])
        pos = torch.zeros(1, 4, 2)
        pos[0, :, 0] = torch.tensor([-0.8, 0.8, -0.8, 0.8])
        pos[0, :, 1] = torch.tensor([-0.8, -0.8, 0.8, 0.8])
        pos[0, a] = torch.tensor([0.0, 0.0])
        pos[0, b] = torch.tensor([touch + 0.02, 0.0])
        vel = torch.zeros(1, 4, 2)
        vel[0, b, 0] = -0.1                                                  # b runs into a, 0.08 past touching
        with torch.no_grad():
            if solid:
                model.solid_logit.fill_(1.0)
                model.heaviness[a] = 1.0                                     # a is the heavy one
            nxt, v = model._dynamics(pos, vel, torch.zeros(1, 2), torch.ones(1, 4))
        gap = float((nxt[0, b] - nxt[0, a]).norm())
        if solid:
            assert gap > touch - 1e-4, (gap, touch)
            assert float((nxt[0, a] - pos[0, a]).norm()) < 0.01              # the heavy one barely moves
            assert torch.allclose(v, nxt - pos, atol=1e-6)                   # velocity = this step's displacement
            with torch.no_grad():
                model.solid_logit.fill_(-1.0)
                passed, _ = model._dynamics(pos, vel, torch.zeros(1, 2), torch.ones(1, 4))
            assert float((passed[0, b] - passed[0, a]).norm()) < touch - 0.05
        else:
            assert gap < touch - 0.05, (gap, touch)


def _two_slots(spec, **over):
    """An untrained slots model (``inertia`` and ``over``) in eval mode, its first two active slots a and b, their
    touching distance, a ``seen`` mask of the two alone, and zero positions and velocities (1,4,2) to fill."""
    model = _model("slots", spec, inertia=True, **over).eval()
    a, b = torch.nonzero(model.active > 0).flatten()[:2].tolist()
    touch = float(model._radii()[a] + model._radii()[b])
    seen = torch.zeros(1, 4)
    seen[0, [a, b]] = 1.0
    return model, a, b, touch, seen, torch.zeros(1, 4, 2), torch.zeros(1, 4, 2)


def test_slots_shapes_a_square_pushed_off_centre_moves_along_its_faces_normal(spec, dataset):
    """shapes: a heavy slot driven off-centre into a square one (learned squareness) pushes it out along the
    square's face normal, as a disc pushes a box's face; as discs, the pushed one moves along the line between
    centres. Either way the pair ends the step touching along its outline, not overlapping it."""
    torch.manual_seed(0)
    sideways = {}
    for square in (True, False):
        model, a, b, touch, seen, pos, vel = _two_slots(spec, solid=True, shapes=True)
        pos[0, b] = torch.tensor([0.5 * touch, -touch - 0.01])             # b above a, offset half a touch sideways
        vel[0, b, 1] = 0.1                                                   # and driven down into it
        with torch.no_grad():
            model.solid_logit.fill_(1.0)
            model.heaviness[b] = 1.0                                         # b is the heavy one
            model.squareness.zero_()
            if square:
                model.squareness[a] = 1.0                                    # a's outline: exponent 10
            nxt, _ = model._dynamics(pos, vel, torch.zeros(1, 2), seen)
            power = float(model._solid_pairs(*model.pairs, seen)[2].max())
        moved = nxt[0, a] - pos[0, a]
        assert float(moved[1]) > 0.02, moved                                 # pushed down
        sideways[square] = abs(float(moved[0] / moved[1]))
        gap = (nxt[0, b] - nxt[0, a]).abs()
        assert abs(float((gap ** power).sum() ** (1 / power)) - touch) < 0.02 * touch, (square, gap, touch)
    assert sideways[True] < 0.15 < 0.4 < sideways[False], sideways


def test_slots_border_position_input_makes_free_motion_the_same_away_from_the_walls(spec, dataset):
    """position_input=border: a lone rolling slot moves by exactly the same step anywhere away from the frame's
    edge, whatever the weights, and differently inside the border band; with the full position it does not."""
    torch.manual_seed(0)
    for where in ("border", "full"):
        model = _model("slots", spec, position_input=where, inertia=True).eval()
        with torch.no_grad():
            for p in (model.own[-1].weight, model.own[-1].bias):
                p.normal_(0, 0.5)
        k = int(torch.nonzero(model.active > 0)[0])
        seen = torch.zeros(3, 4)
        seen[:, k] = 1.0                                                     # only slot k: no contact
        pos = torch.zeros(3, 4, 2)
        pos[:, k] = torch.tensor([[-0.3, 0.1], [0.4, -0.2], [0.95, 0.0]])  # two mid-table, one at the wall
        vel = torch.zeros(3, 4, 2)
        vel[:, k] = torch.tensor([0.05, 0.02])
        with torch.no_grad():
            _, v = model._dynamics(pos, vel, torch.zeros(3, 2), seen)
        assert bool(torch.allclose(v[0, k], v[1, k], atol=1e-6)) == (where == "border"), (where, v[:, k])
        assert not torch.allclose(v[0, k], v[2, k], atol=1e-4)


def test_slots_walls_start_where_the_data_shows_objects_and_stop_them_there(spec, dataset):
    """walls: each slot's box starts at the extremes of where the fit frames show it whole, and a slot driven
    at its edge ends the step on it with no velocity into it (its velocity along the wall is kept)."""
    torch.manual_seed(0)
    model = _model("slots", spec, walls=True, inertia=True).eval()
    pos, weight = model.observe(FIT["batch"]["frames"].flatten(0, 1))
    k = int(torch.nonzero(model.active > 0)[0])
    whole = weight[:, k] >= 1
    assert torch.allclose(model.wall_lo[k], pos[whole, k].amin(0).clamp(max=0))
    assert torch.allclose(model.wall_hi[k], pos[whole, k].amax(0).clamp(min=0))
    seen = torch.zeros(1, 4)
    seen[0, k] = 1.0
    start = torch.zeros(1, 4, 2)
    with torch.no_grad():
        start[0, k] = model.wall_hi[k] - torch.tensor([0.01, 0.3])
    vel = torch.zeros(1, 4, 2)
    vel[0, k] = torch.tensor([0.1, 0.05])                                    # into the right-hand wall, and along it
    with torch.no_grad():
        nxt, v = model._dynamics(start, vel, torch.zeros(1, 2), seen)
    assert torch.isclose(nxt[0, k, 0], model.wall_hi[k, 0]) and abs(float(v[0, k, 0]) - 0.01) < 1e-6
    assert float(v[0, k, 1]) > 0.03                                          # still sliding along it


def test_slots_solid_and_walls_a_box_the_wall_holds_stops_what_pushes_it(spec, dataset):
    """solid + walls: a slot driven into a solid neighbour that its wall holds ends the step (nearly) touching
    it rather than inside it, though the two are equally heavy; walls alone let it sink in."""
    for solid in (True, False):
        torch.manual_seed(0)
        model, a, b, touch, seen, pos, vel = _two_slots(spec, walls=True, solid=solid)
        with torch.no_grad():
            if solid:
                model.solid_logit.fill_(1.0)
            model.wall_hi[a, 0] = 0.5
            pos[0, a] = torch.tensor([0.5, 0.0])                             # a against its wall
        pos[0, b] = torch.tensor([0.5 - touch - 0.01, 0.0])
        vel[0, b, 0] = 0.1                                                   # b runs into a
        with torch.no_grad():
            nxt, _ = model._dynamics(pos, vel, torch.zeros(1, 2), seen)
        gap = float((nxt[0, a] - nxt[0, b]).norm())
        assert float(nxt[0, a, 0]) <= 0.5 + 1e-6
        assert (gap > touch - 0.015) == solid, (solid, gap, touch)


def test_slots_front_layer_learns_to_cover_what_passes_under_it(spec, dataset):
    """Frames whose band shows background where the slots hold objects teach the static front layer to
    cover the band, and only the band, within a short fit (its logits learn at LAYER_GAIN x)."""
    from embodied.models.codec import frames_to_float
    from embodied.models.slots import LAYER_GAIN

    model = _model("slots", spec)
    frames = _batch(dataset, b=16, t=2, seed=5)["frames"][:, 0]
    pos, weight = model.observe(frames)
    background = (model.background.permute(1, 2, 0) * 255).round().to(torch.uint8)
    painted = frames.clone()
    painted[:, :, 24:40] = background[:, 24:40]                             # a band the objects pass under
    target = frames_to_float(painted[:, None])[:, 0]
    opt = torch.optim.Adam([model.front, model.sprites, model.depth], lr=1e-2)
    for _ in range(60):
        loss = ((model._render(pos, known=weight > 0) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    front = torch.sigmoid(LAYER_GAIN * model.front.detach())[0]
    assert front[:, 26:38].mean() > 0.5 and front[:, :16].mean() < 0.2, (front[:, 26:38].mean(), front[:, :16].mean())


def test_slots_action_gates_can_close_and_stay_open_for_the_driven_slot(spec, dataset):
    """The action gates' logits learn at GATE_GAIN x: within a short fit of the sparsity term against a loss
    that needs the action on one slot only, the other slots' gates close and the driven one opens (at 1x, Adam
    moves a logit ~lr per step and the gates stay near their start, 0.5)."""
    model = _model("slots", spec)
    action = torch.rand(8, 2) * 2 - 1
    opt = torch.optim.Adam([model.action_gate], lr=1e-3)
    for _ in range(600):                                                          # the config's lr, 600 steps
        gated = action[:, None, :] * model.action_gates()[None, :, None]          # what each slot's own net sees
        need = ((gated[:, 0] - action) ** 2).mean()                               # slot 0 is driven
        loss = need + 0.1 * model.action_gates()[model.active > 0].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gates = model.action_gates().detach()
    active = model.active > 0
    assert gates[0] > 0.75 and torch.all(gates[1:][active[1:]] < 0.05), gates


@pytest.mark.parametrize("arch", ["recurrent", "transformer"])
def test_object_head_learns_positions_from_pixels(arch, spec, dataset):
    """object_weight > 0: a head reads the objects' planar positions from the latent, better than their mean."""
    torch.manual_seed(0)
    model = _model(arch, spec, object_weight=1.0)
    assert model.object_names == ["pusher", "block", "goal"]
    with pytest.raises(ValueError, match="object tracks"):
        model.loss({k: v for k, v in _batch(dataset).items() if k != "objects"})
    _train(model, dataset, steps=60, batch=6, t=8)
    batch = _batch(dataset, b=16, t=6, seed=5)
    frames, actions, proprio = _context(batch)
    with torch.no_grad():
        pred = model.eval().objects(model.encode(frames, actions, proprio))
    true = batch["objects"][:, 3]
    assert pred.shape == (16, 3, 2)
    err = (pred - true).norm(dim=-1).mean()
    spread = (true - true.mean(0)).norm(dim=-1).mean()
    assert err < 0.7 * spread, (err, spread)
    with pytest.raises(ValueError, match="no object head"):
        _model(arch, spec).objects({})


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["recurrent", "transformer"])
def test_training_learns_action_conditioned_motion(arch, spec, dataset):
    """A few hundred steps: predicted pusher displacement follows the action direction."""
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the same float reductions whichever tests ran before
    model = _model(arch, spec, channels=8, embed_dim=64)
    before = _pixel_loss(model, dataset)
    _train(model, dataset, steps=450, batch=8, t=8)
    assert _pixel_loss(model, dataset) < 0.7 * before
    batch = _batch(dataset, b=8, t=8, seed=12)
    frames, actions, proprio = _context(batch)
    with torch.no_grad():
        s = model.encode(frames, actions, proprio)
        start = model.proprio(s)[:, :2]
        moves = []
        for direction in torch.eye(2):
            final, _ = model.rollout(s, direction.expand(8, 3, 2).clone())
            moves.append((model.proprio(final)[:, :2] - start).mean(0))
    # pushing +x moves the pusher further in x than pushing +y does, and vice versa
    assert moves[0][0] > moves[1][0] and moves[1][1] > moves[0][1], moves


def test_the_interface_is_abstract_and_abilities_are_declared(spec):
    """A backend missing a required method cannot be built; an undeclared ability raises, naming itself."""
    from embodied.models.base import WorldModel
    from embodied.models.oracle import MujocoOracle

    class NoDecode(WorldModel):
        def encode(self, frames, actions, proprio=None, sim_state=None):
            return {}

        def step(self, state, action):
            return state

        def features(self, state):
            return torch.zeros(1, 1)

        def reward(self, state):
            return torch.zeros(1)

    with pytest.raises(TypeError, match="decode"):
        NoDecode()
    plain = _model("recurrent", spec)  # no object head: object_weight defaults to 0
    assert plain.abilities.proprio and plain.abilities.goal_distance and plain.abilities.readout
    assert not plain.abilities.objects and not plain.abilities.success and not plain.abilities.simulator_state
    with pytest.raises(NotImplementedError, match="'success' ability"):
        plain.success({})
    assert _model("recurrent", spec, object_weight=1.0).abilities.objects
    oracle = MujocoOracle("push")
    assert oracle.abilities.simulator_state and oracle.abilities.success
    with pytest.raises(ValueError, match="pass sim_state"):
        oracle.encode(torch.zeros(1, 1, 64, 64, 3, dtype=torch.uint8), torch.zeros(1, 0, 2))


def test_oracle_matches_a_wrapped_env_whose_actuators_are_not_unit_range():
    """Pusher-v5's actuators take [-2, 2]: the oracle maps actions as the env does, so their states agree exactly."""
    from embodied.envs.registry import make_task
    from embodied.models.oracle import MujocoOracle

    env = make_task("Pusher-v5")
    env.reset(seed=0)
    oracle = MujocoOracle("Pusher-v5")
    state = oracle.encode(None, None, sim_state=torch.as_tensor(env.get_state())[None])
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.uniform(-1, 1, 7).astype(np.float32)
        env.step(a)
        state = oracle.step(state, torch.as_tensor(a)[None])
    np.testing.assert_array_equal(state["sim"].numpy()[0], env.get_state())


def test_slots_update_is_one_filter_step_of_encode(spec, dataset):
    """update(): encoding the first frame, then one update per action and new frame, gives the state encode()
    reaches over the whole window (positions, velocities and which slots are known, the pusher placed from
    proprio while its frames hide it): a control loop need not re-encode its history every action."""
    model = _model("slots", spec, proprio_locate=True, inertia=True)
    _train(model, dataset, steps=20, batch=8, t=6, lr=3e-3)
    model.eval()
    assert model.abilities.update
    batch = _batch(dataset, b=3, t=8, seed=5)
    frames, actions, proprio = batch["frames"].clone(), batch["actions"][:, :7], batch["proprio"]
    background = (model.background.permute(1, 2, 0) * 255).round().to(torch.uint8)
    k = int(torch.argmax(model.active))
    mine = model.lut[((frames.to(torch.int32) >> 5) * torch.tensor([64, 8, 1])).sum(-1)] == k
    frames[:, 2:5] = torch.where(mine[:, 2:5, ..., None], background.expand_as(frames[:, 2:5]), frames[:, 2:5])
    with torch.no_grad():
        whole = model.encode(frames, actions, proprio)
        state = model.encode(frames[:, :1], actions[:, :0], proprio[:, :1])
        for t in range(1, 8):
            state = model.update(state, actions[:, t - 1], frames[:, t], proprio[:, t])
            if t == 3:
                mid = model.encode(frames[:, :4], actions[:, :3], proprio[:, :4])
                assert all(torch.allclose(state[key], mid[key], atol=1e-6) for key in state)
    for key in whole:
        assert torch.allclose(state[key], whole[key], atol=1e-6), (key, (state[key] - whole[key]).abs().max())
    moved = model.update(state, torch.ones(3, 2), frames[:, -1], proprio[:, -1])
    assert not torch.allclose(moved["vel"], state["vel"])   # the filter step really uses the new frame


def test_slots_one_step_loss_scores_one_dynamics_step_from_each_filtered_frame(spec, dataset):
    """one_step_weight: from every filtered frame one dynamics step must land on the next observation. A model
    that keeps velocity (its nets' last layers zeroed) scores small on real, smooth motion and large on the
    same frames out of order, and the loss trains the own-motion net."""
    model = _model("slots", spec, one_step_weight=100.0)
    with torch.no_grad():
        for net in (model.own, model.node):
            net[-1].weight.zero_()
            net[-1].bias.zero_()
    batch = _batch(dataset, b=6, t=8, seed=6)
    pos, weight = model.observe(batch["frames"].flatten(0, 1))
    pos, weight = pos.view(6, 8, -1, 2), weight.view(6, 8, -1)
    a = batch["actions"].float()
    smooth = model._one_step_loss(pos, weight, a)
    order = torch.tensor([0, 5, 2, 7, 1, 6, 3, 4])
    shuffled = model._one_step_loss(pos[:, order], weight[:, order], a)
    assert smooth * 10 < shuffled, (smooth, shuffled)
    total, metrics = model.loss(batch)
    total.backward()
    assert metrics["one_step"] > 0 and model.own[-1].weight.grad.abs().sum() > 0
