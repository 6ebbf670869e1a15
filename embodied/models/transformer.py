"""Implicit state: a causal transformer over interleaved frame and action tokens, bounded context.

Each frame becomes one latent ``f`` (conv embedding fused with the proprio
embedding); the sequence ``f_0, a_0, f_1, a_1, ...`` goes through a
``transformers`` backbone built from a config with random weights (``LlamaModel``
by default, ``GPT2Model`` with ``backbone="gpt2"``), fed with ``inputs_embeds``.
The output at the token of ``a_t`` predicts ``f_{t+1} = f_t + delta``; in
imagination that prediction is fed back as the next frame token. Decoder,
proprio and reward heads read a frame latent, real or predicted, and
``goal_distance`` is the distance between frame latents.

The context is bounded to ``window`` frames. Two state layouts, both plain
batched tensors so ``repeat_state``/``index_state`` work:

* KV cache (Llama, ``kv_cache=True``, the default): ``{"f": pending latent (B,F),
  "pos": next position (B,), "k0", "v0", ...: (B, heads, L, head_dim)}``. A
  step feeds two tokens (pending frame and action) against the cache; the cache
  is cut to the last ``window-1`` frame/action pairs. Rotary positions make the
  cut exact in relative terms, so a step costs O(window), not O(window^2).
* window recompute (GPT-2, or ``kv_cache=False``): ``{"fwin": (B,n,F),
  "awin": (B,n-1,A)}``, the last n <= window frame latents (the newest is the
  pending one) and the actions between them; each step re-runs the window
  from position 0.

Training (``loss``): foreground-weighted reconstruction of the context frames,
one teacher-forced pass giving latent targets for every frame, and an
open-loop rollout from ``context`` real frames that feeds its own predictions
back (through the same cache/step code as imagination) with pixel, latent,
proprio and reward losses on every predicted frame.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from embodied.errors import UserError
from embodied.models.base import State, repeat_state
from embodied.models.codec import FLOOR_RGB, ConvEncoder, ProprioEncoder, mlp
from embodied.models.learned import PIXEL_LOSSES, LearnedWorldModel, check_fields

BACKBONES = ("llama", "gpt2")


@dataclass
class TransformerConfig:
    """Defaults are the recipe measured on push.

    Training that reached the push targets (held-out, 4 real context frames,
    horizon 8: PSNR 26.9 dB vs copy-last 21.3, pusher error 3.8 px vs 8.9):
    batch 16, seq_len 12 (4 context + 8 open-loop frames; must not exceed
    ``window``), AdamW lr 1e-3, weight decay 1e-4, 100 warm-up steps then cosine
    to 0.1x, grad-norm clip 100, ~1700 steps (900 s at ~340 frames/s on a
    heavily shared 2-core box, one torch thread).
    """

    context: int = 4            # real frames ``encode`` expects (evaluation and training split)
    window: int = 12            # frames kept in the context window (tokens: 2*window-1)
    backbone: str = "llama"     # llama | gpt2
    kv_cache: bool = True       # llama only; gpt2 always recomputes the window
    channels: int = 16
    embed_dim: int = 256
    keypoints: int = 16
    broadcast: int = 0
    proprio_embed: int = 64
    latent: int = 256           # frame latent (decoded, fed back as a token)
    d_model: int = 128
    layers: int = 3
    heads: int = 4
    mlp_ratio: int = 2
    hidden: int = 192           # head MLP width
    composite: bool = True      # decoder paints over the last real frame (mask + colour)
    recon_weight: float = 1.0
    pred_weight: float = 1.0
    latent_weight: float = 1.0
    proprio_weight: float = 1.0
    reward_weight: float = 1.0
    object_weight: float = 0.0  # object-position head on the dataset's object tracks (training signal only)
    fg_weight: float = 10.0
    pixel_loss: str = "mse"      # mse | l1 (l1 measured worse: stuck at copy-last with the compositing decoder)
    proprio_dropout: float = 0.1
    floor_rgb: tuple = FLOOR_RGB

    def __post_init__(self):
        check_fields(self, positive=("context", "channels", "embed_dim", "keypoints", "proprio_embed", "latent",
                                     "d_model", "layers", "heads", "mlp_ratio", "hidden"),
                     non_negative=("broadcast", "recon_weight", "pred_weight", "latent_weight", "proprio_weight",
                                   "reward_weight", "object_weight", "fg_weight"),
                     fractions=("proprio_dropout",), choices={"backbone": BACKBONES, "pixel_loss": PIXEL_LOSSES})
        if self.window < 2:
            raise UserError(f"model.window = {self.window} must be at least 2 (frames in the context window)")
        if self.d_model % self.heads:
            raise UserError(f"model.d_model = {self.d_model} must be a multiple of model.heads = {self.heads}; "
                            "change one of them")


def _backbone(c: TransformerConfig) -> nn.Module:
    """A randomly initialised transformers decoder (no download), used through ``inputs_embeds``."""
    if c.backbone == "llama":
        from transformers import LlamaConfig, LlamaModel

        cfg = LlamaConfig(vocab_size=1, hidden_size=c.d_model, intermediate_size=c.d_model * c.mlp_ratio,
                          num_hidden_layers=c.layers, num_attention_heads=c.heads, num_key_value_heads=c.heads,
                          max_position_embeddings=1 << 20, pad_token_id=None, bos_token_id=None, eos_token_id=None,
                          attention_dropout=0.0)
        cfg._attn_implementation = "sdpa"
        model = LlamaModel(cfg)
        model.embed_tokens = None  # inputs_embeds only: no unused parameters (DDP-friendly)
        return model
    if c.backbone == "gpt2":
        from transformers import GPT2Config, GPT2Model

        cfg = GPT2Config(vocab_size=1, n_embd=c.d_model, n_layer=c.layers, n_head=c.heads,
                         n_inner=c.d_model * c.mlp_ratio, n_positions=2 * c.window, bos_token_id=None,
                         eos_token_id=None, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        cfg._attn_implementation = "sdpa"
        model = GPT2Model(cfg)
        model.wte = None
        return model
    raise ValueError(f"unknown transformer backbone {c.backbone!r}; choose one of {', '.join(BACKBONES)}")


def _cache_kwarg(backbone: nn.Module) -> str:
    """The backbone's name for its KV-cache argument: ``cache`` in recent transformers, else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


class TransformerWorldModel(LearnedWorldModel):
    """Implicit-state world model: frame/action tokens through a causal transformer."""

    arch = "transformer"

    def __init__(self, cfg: TransformerConfig, spec: dict):
        super().__init__(cfg, spec)
        c = cfg
        P = max(self.proprio_dim, 1)
        self.use_cache = c.kv_cache and c.backbone == "llama"
        self.encoder = ConvEncoder(self.image_size, c.channels, c.embed_dim, c.keypoints)
        self.proprio_encoder = ProprioEncoder(P, c.proprio_embed)
        self.fuse = nn.Sequential(nn.Linear(c.embed_dim + c.proprio_embed, c.latent), nn.LayerNorm(c.latent))
        self.frame_in = nn.Linear(c.latent, c.d_model)
        self.action_in = nn.Sequential(nn.Linear(self.action_dim, c.d_model), nn.SiLU(), nn.Linear(c.d_model, c.d_model))
        self.backbone = _backbone(c)
        self.cache_kwarg = _cache_kwarg(self.backbone)  # looked up once: _run is on the planner's hot path
        self.out = nn.Sequential(nn.LayerNorm(c.d_model), nn.Linear(c.d_model, c.hidden), nn.SiLU(),
                                 nn.Linear(c.hidden, c.latent))
        nn.init.zeros_(self.out[-1].weight)  # start as "nothing changes" (copy-last), learn the change
        nn.init.zeros_(self.out[-1].bias)
        self.decoder = self._make_decoder(c.latent)
        self.proprio_head = mlp(c.latent, c.hidden, P, layers=1)
        self.reward_head = mlp(c.latent, c.hidden, 1, layers=1)
        self.object_head = self._make_object_head(c.latent)

    # -- pieces -------------------------------------------------------------------------------
    def _latent(self, x: torch.Tensor, p: torch.Tensor, pmask: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        e = self.encoder(x.reshape(b * t, *x.shape[2:])).view(b, t, -1)
        return self.fuse(torch.cat([e, self.proprio_encoder(p) * pmask], -1))

    def _tokens(self, f: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Interleave frame latents (B,n,F) and actions (B,n,A) into (B,2n,d): f_0, a_0, f_1, a_1, ..."""
        tok = torch.stack([self.frame_in(f), self.action_in(a)], 2)
        return tok.reshape(f.shape[0], 2 * f.shape[1], -1)

    def _run(self, tok: torch.Tensor, past: list | None = None, pos: torch.Tensor | None = None):
        """Backbone over ``tok`` after the cached ``past`` [(k, v)] at positions ``pos`` (B,) onwards."""
        b, n = tok.shape[:2]
        if self.cfg.backbone == "gpt2":
            return self.backbone(inputs_embeds=tok, use_cache=False).last_hidden_state, None
        from transformers.cache_utils import DynamicCache

        start = pos if pos is not None else torch.zeros(b, dtype=torch.long, device=tok.device)
        position_ids = start[:, None] + torch.arange(n, device=tok.device)
        cache = DynamicCache(ddp_cache_data=past) if past else DynamicCache()
        out = self.backbone(inputs_embeds=tok, position_ids=position_ids, use_cache=self.use_cache,
                            **{self.cache_kwarg: cache})
        new = [(layer.keys, layer.values) for layer in cache.layers] if self.use_cache else None  # filled in place
        return out.last_hidden_state, new

    def _limit(self, past: list) -> list:
        keep = 2 * (self.cfg.window - 1)
        return [(k[:, :, -keep:], v[:, :, -keep:]) for k, v in past]

    def _cache_state(self, f: torch.Tensor, pos: torch.Tensor, past: list | None) -> State:
        state = {"f": f, "pos": pos}
        if past is None:  # a 1-frame context: empty cache
            h, hd = self.cfg.heads, self.cfg.d_model // self.cfg.heads
            empty = f.new_zeros(f.shape[0], h, 0, hd)
            past = [(empty, empty)] * self.cfg.layers
        for i, (k, v) in enumerate(past):
            state[f"k{i}"], state[f"v{i}"] = k, v
        return state

    def _past(self, state: State) -> list | None:
        if state["k0"].shape[2] == 0:
            return None
        return [(state[f"k{i}"], state[f"v{i}"]) for i in range(self.cfg.layers)]

    @property
    def max_context(self) -> int:
        """The attention window: encode() uses up to this many real frames."""
        return max(self.context, int(self.cfg.window))

    def features(self, state: State) -> torch.Tensor:
        """The latent feature vector (B, D) the heads and the decoder read."""
        return state["f"] if "f" in state else state["fwin"][:, -1]

    # -- interface ------------------------------------------------------------------------------
    def encode(self, frames: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor | None = None,
               sim_state: torch.Tensor | None = None) -> State:
        dev = self.pnorm.mean.device
        b, t = frames.shape[:2]
        x = frames.to(dev).movedim(-1, -3).float() / 255.0
        p, pmask = self._proprio(proprio, (b, t))
        a = actions.float().to(dev).clamp(-1, 1).reshape(b, -1, self.action_dim)
        w = self.cfg.window
        x, p, a = x[:, -w:], p[:, -w:], a[:, max(0, a.shape[1] - (w - 1)):]
        f = self._latent(x, p, pmask)
        if not self.use_cache:
            return {"fwin": f, "awin": a, **self._ref_state(frames)}
        n = f.shape[1] - 1
        past = self._run(self._tokens(f[:, :-1], a), None)[1] if n > 0 else None
        state = self._cache_state(f[:, -1], torch.full((b,), 2 * n, dtype=torch.long, device=dev), past)
        return {**state, **self._ref_state(frames)}

    def step(self, state: State, action: torch.Tensor) -> State:
        extra = {k: v for k, v in state.items() if k == "ref"}
        f = self.features(state)
        a = action.float().reshape(f.shape[0], self.action_dim).clamp(-1, 1)
        if not self.use_cache:
            fwin = state["fwin"]
            awin = torch.cat([state["awin"], a[:, None]], 1)
            hidden, _ = self._run(self._tokens(fwin, awin))
            fnew = f + self.out(hidden[:, -1])
            w = self.cfg.window
            fwin = torch.cat([fwin, fnew[:, None]], 1)[:, -w:]
            return {"fwin": fwin, "awin": awin[:, -(w - 1):], **extra}
        hidden, past = self._run(self._tokens(f[:, None], a[:, None]), self._past(state), state["pos"])
        return {**self._cache_state(f + self.out(hidden[:, -1]), state["pos"] + 2, self._limit(past)), **extra}

    def goal_distance(self, state: State, goal: State) -> torch.Tensor:
        f = self.features(state)
        g = self.features(repeat_state(goal, f.shape[0]))
        return (f - g).norm(dim=-1)

    # -- training -----------------------------------------------------------------------------
    def loss(self, batch: dict, step: int = 0) -> tuple[torch.Tensor, dict]:
        c = self.cfg
        d = self._prepare(batch)
        x, p, a, r = d["x"], d["p"], d["a"], d["r"]
        b, t = x.shape[:2]
        if t > c.window:
            raise ValueError(f"training windows of {t} frames exceed the model's context window {c.window}; "
                             f"shorten train.seq_len or raise model.window")
        ctx = max(1, min(c.context, t - 1))
        f = self._latent(x, p, d["pmask"])  # (B,T,F)
        ref = x[:, ctx - 1]
        recon = self._render(f[:, :ctx].flatten(0, 1), ref.repeat_interleave(ctx, 0)).view(b, ctx, *x.shape[2:])
        l_rec = self._pixel_loss(recon, x[:, :ctx])

        # teacher forcing over the whole window: a one-step prediction for every frame
        hidden, past = self._run(self._tokens(f[:, :-1], a))
        f_tf = f[:, :-1] + self.out(hidden[:, 1::2])  # predictions of frames 1..T-1
        # open loop from the real context, predictions fed back (same code path as step())
        preds = [f_tf[:, ctx - 1]]
        if self.use_cache:
            past = [(k[:, :, :2 * ctx], v[:, :, :2 * ctx]) for k, v in past]
            pos = torch.full((b,), 2 * ctx, dtype=torch.long, device=x.device)
            for k in range(1, t - ctx):
                h, past = self._run(self._tokens(preds[-1][:, None], a[:, ctx - 1 + k][:, None]), past, pos)
                preds.append(preds[-1] + self.out(h[:, -1]))
                pos = pos + 2
        else:
            for k in range(1, t - ctx):
                fwin = torch.cat([f[:, :ctx], torch.stack(preds, 1)], 1)
                h, _ = self._run(self._tokens(fwin, a[:, :ctx + k]))
                preds.append(preds[-1] + self.out(h[:, -1]))
        ol = torch.stack(preds, 1)  # (B,K,F) frames ctx..T-1
        pred = self._render(ol.flatten(0, 1), ref.repeat_interleave(t - ctx, 0)).view(b, t - ctx, *x.shape[2:])
        l_pred = self._pixel_loss(pred, x[:, ctx:], prev=x[:, ctx - 1:-1])

        tgt = f.detach()
        l_lat = ((f_tf - tgt[:, 1:]) ** 2).mean() + ((ol - tgt[:, ctx:]) ** 2).mean()
        both = torch.cat([f, ol], 1)
        p_tgt = torch.cat([p, p[:, ctx:]], 1)
        l_prop = (((self.proprio_head(both) - p_tgt) ** 2) * d["pmask"]).mean() if self.proprio_dim else x.new_zeros(())
        r_feat = torch.cat([f[:, 1:], ol], 1)
        r_tgt = torch.cat([r, r[:, ctx - 1:]], 1)
        l_rew = ((self.reward_head(r_feat)[..., 0] - r_tgt) ** 2).mean()
        l_obj = self._object_loss(both, d, ctx)

        total = (c.recon_weight * l_rec + c.pred_weight * l_pred + c.latent_weight * l_lat
                 + c.proprio_weight * l_prop + c.reward_weight * l_rew + c.object_weight * l_obj)
        with torch.no_grad():
            mse_last = ((pred[:, -1].clamp(0, 1) - x[:, -1]) ** 2).mean()
        metrics = {"loss": total.item(), "recon": l_rec.item(), "pred": l_pred.item(), "latent": l_lat.item(),
                   "proprio": l_prop.item(), "reward": l_rew.item(), "objects": l_obj.item(),
                   "psnr_last": (-10 * torch.log10(mse_last + 1e-10)).item()}
        return total, metrics
