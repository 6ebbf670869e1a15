"""The transformer's KV cache (preallocated rings written in place) against plain backbone forwards.

The reference runs the Llama backbone over every token so far at each imagined step, with the cache's
rolling window as an attention mask (each frame/action pair sees its own and the ``window - 1`` previous
pairs), so the ring's wrap-around, positions and masking are all checked, well past the window.
"""
from __future__ import annotations

import pytest
import torch

from embodied.collect import dataset_spec
from embodied.models import build_model
from embodied.models.base import cat_states, index_state

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"arch": "transformer", "channels": 8, "embed_dim": 32, "proprio_embed": 16, "latent": 32, "d_model": 32,
        "layers": 2, "heads": 2, "hidden": 32, "window": 4, "context": 3}
STEPS = 10  # the ring (2 * window tokens) wraps several times


@pytest.fixture(scope="module")
def spec():
    return dataset_spec("push", 64)


def _model(spec, **over):
    torch.manual_seed(0)
    model = build_model({**TINY, **over}, spec).eval()
    torch.nn.init.normal_(model.out[-1].weight, std=0.3)  # zero at init: make predictions depend on the backbone
    return model


def _inputs(n: int, b: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 255, (b, n, 64, 64, 3), dtype=torch.uint8, generator=g),
            torch.rand(b, n - 1, 2, generator=g) * 2 - 1, torch.randn(b, n, 4, generator=g),
            torch.rand(b, STEPS, 2, generator=g) * 2 - 1)


@torch.no_grad()
def _reference(model, frames, actions, proprio, future) -> torch.Tensor:
    """Imagined latents (B,STEPS,F), each step a full backbone forward over all tokens with a windowed mask."""
    w, b = model.cfg.window, frames.shape[0]
    x = frames[:, -w:].movedim(-1, -3).float() / 255.0
    p, pmask = model._proprio(proprio[:, -w:], x.shape[:2])
    fs, acts, out = list(model._latent(x, p, pmask).unbind(1)), list(actions[:, -(w - 1):].unbind(1)), []
    for a in future.unbind(1):
        acts.append(a)
        tok = model._tokens(torch.stack(fs, 1), torch.stack(acts, 1))
        i = torch.arange(tok.shape[1])
        seen = (i[None] <= i[:, None]) & (i[None] // 2 > i[:, None] // 2 - w)
        hidden = model.backbone(inputs_embeds=tok, attention_mask=seen.expand(b, 1, -1, -1),
                                position_ids=i.expand(b, -1), use_cache=False).last_hidden_state
        fs.append(fs[-1] + model.out(hidden[:, -1]))
        out.append(fs[-1])
    return torch.stack(out, 1)


@torch.no_grad()
def _steps(model, state, future) -> torch.Tensor:
    out = []
    for a in future.unbind(1):
        state = model.step(state, a)
        out.append(model.features(state))
    return torch.stack(out, 1)


@pytest.mark.parametrize("n", [1, 3, 6])  # an empty cache, a partial one, more frames than the window
def test_steps_match_full_forward(spec, n):
    model = _model(spec)
    frames, actions, proprio, future = _inputs(n)
    got = _steps(model, model.encode(frames, actions, proprio), future)
    torch.testing.assert_close(got, _reference(model, frames, actions, proprio, future), rtol=1e-5, atol=1e-5)


def test_rollout_matches_steps_and_leaves_its_input(spec):
    model = _model(spec)
    frames, actions, proprio, future = _inputs(3)
    state = model.encode(frames[:1], actions[:1], proprio[:1])
    before = {k: v.clone() for k, v in state.items()}
    final, rewards = model.rollout(state, future)
    again, _ = model.rollout(state, future)
    tiled = {k: v.expand(3, *v.shape[1:]) for k, v in state.items()}
    stepped = _steps(model, tiled, future)
    for k, v in state.items():
        assert torch.equal(v, before[k]), f"rollout/step wrote into their input state ({k})"
    torch.testing.assert_close(model.features(final), stepped[:, -1])
    torch.testing.assert_close(model.features(again), stepped[:, -1])
    assert rewards.shape == (3, STEPS)


def test_elements_at_different_positions(spec):
    """A fresh state next to an older one (as an imagined env resets some of its envs) steps like each alone."""
    model = _model(spec)
    frames, actions, proprio, future = _inputs(3, b=2)
    fresh = model.encode(frames[:1], actions[:1], proprio[:1])
    older = model.encode(frames[1:], actions[1:], proprio[1:])
    with torch.no_grad():
        for a in future[1:, :3].unbind(1):
            older = model.step(older, a)
    both = _steps(model, cat_states([fresh, older]), future)
    torch.testing.assert_close(both[:1], _steps(model, index_state(cat_states([fresh, older]), 0), future[:1]))
    torch.testing.assert_close(both[1:], _steps(model, older, future[1:]))


def test_training_loss_matches_window_recompute(spec):
    """Within the window the cached open loop and a recompute from position 0 give the same loss and gradients."""
    frames, actions, proprio, _ = _inputs(5)
    batch = {"frames": frames, "actions": actions, "proprio": proprio, "rewards": torch.randn(3, 4)}
    results = []
    for kv_cache in (True, False):
        model = _model(spec, window=5, context=2, kv_cache=kv_cache).train()
        torch.manual_seed(1)  # proprio dropout
        loss, _ = model.loss(batch)
        loss.backward()
        results.append((loss.detach(), {k: p.grad for k, p in model.named_parameters() if p.grad is not None}))
    (cached, g_cached), (recomputed, g_recomputed) = results
    torch.testing.assert_close(cached, recomputed, rtol=1e-5, atol=1e-5)
    assert g_cached.keys() == g_recomputed.keys()
    scale = max(g.abs().max() for g in g_recomputed.values())
    for k, g in g_recomputed.items():
        torch.testing.assert_close(g_cached[k] / scale, g / scale, rtol=0, atol=1e-5, msg=k)
