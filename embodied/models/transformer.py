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
  "pos": next position (B,), "kv0", "kv1", ...: (B, heads, 2, 2*window, head_dim)}``:
  per layer, one preallocated ring of keys (``[:, :, 0]``) and values. A step runs
  the Llama layers itself on two tokens (pending frame and action): it writes
  their keys/values into the slots ``position % (2*window)``, over the oldest
  frame/action pair, and attends over the slots written so far. The ring thus
  holds the last ``window`` pairs, each at the rotary position it was written
  with, and a step costs O(window), not O(window^2). ``step`` copies the rings
  (its input state stays valid); ``rollout`` copies them once, then writes in
  place.
* window recompute (GPT-2, or ``kv_cache=False``): ``{"fwin": (B,n,F),
  "awin": (B,n-1,A)}``, the last n <= window frame latents (the newest is the
  pending one) and the actions between them; each step re-runs the backbone
  over the window from position 0.

Training (``loss``): foreground-weighted reconstruction of the context frames,
one teacher-forced pass giving latent targets for every frame, and an
open-loop rollout from ``context`` real frames that feeds its own predictions
back (through ``step`` with the KV cache, as in imagination) with pixel, latent,
proprio and reward losses on every predicted frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from embodied.errors import UserError
from embodied.models.base import State, repeat_state, state_batch
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
        self.action_in = nn.Sequential(nn.Linear(self.action_dim, c.d_model), nn.SiLU(),
                                       nn.Linear(c.d_model, c.d_model))
        self.backbone = _backbone(c)
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

    def _run(self, tok: torch.Tensor) -> torch.Tensor:
        """Backbone over ``tok`` (B,n,d) from position 0, no cache: the window-recompute path."""
        return self.backbone(inputs_embeds=tok, use_cache=False).last_hidden_state

    def _empty_cache(self, b: int, like: torch.Tensor) -> dict:
        """Zeroed KV rings ``kv<layer>`` (b, heads, 2, 2*window, head_dim): room for ``window`` frame/action pairs."""
        c = self.cfg
        return {f"kv{i}": like.new_zeros(b, c.heads, 2, 2 * c.window, c.d_model // c.heads) for i in range(c.layers)}

    @staticmethod
    def _ring(qpos: torch.Tensor, size: int) -> tuple[slice | torch.Tensor, torch.Tensor]:
        """Where tokens at positions ``qpos`` (B,n) go in a ring of ``size`` slots, and what each query sees.

        The target is one slice when every element writes the same consecutive slots, else the slots (B,n).
        Once written, slot s holds the latest position p <= the newest with p = s (mod size); a query sees
        (mask (B,1,n,size)) the slots whose position is in [0, its own].
        """
        n, last = qpos.shape[1], qpos[:, -1:]
        held = last - (last - torch.arange(size, device=qpos.device)) % size
        seen = (held[:, None, :] <= qpos[:, :, None]) & (held[:, None, :] >= 0)
        start = int(qpos[0, 0]) % size
        same = start + n <= size and bool((qpos[:, 0] == qpos[0, 0]).all())
        return (slice(start, start + n) if same else qpos % size), seen[:, None]

    @staticmethod
    def _write(kv: torch.Tensor, new: torch.Tensor, where: slice | torch.Tensor) -> None:
        """Keys and values ``new`` (B,n,2,heads,head_dim) into the ring ``kv`` (B,heads,2,size,head_dim)."""
        rows = kv.permute(0, 3, 2, 1, 4)  # (B,size,2,heads,head_dim), a view
        if isinstance(where, slice):
            rows[:, where] = new
        else:
            rows.index_put_((torch.arange(kv.shape[0], device=kv.device)[:, None], where), new)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Llama's rotary embedding of ``x`` (B,n,...,head_dim) with ``cos``/``sin`` (B,n,head_dim)."""
        shape = (*cos.shape[:2], *[1] * (x.dim() - 3), cos.shape[-1])
        half = x.shape[-1] // 2
        return x * cos.view(shape) + torch.cat([-x[..., half:], x[..., :half]], -1) * sin.view(shape)

    def _layer(self, layer: nn.Module, x: torch.Tensor, rope: tuple, kv: torch.Tensor, where: slice | torch.Tensor,
               seen: torch.Tensor, keep: slice) -> torch.Tensor:
        """One Llama decoder layer: new tokens ``x`` (B,n,d) write their keys/values into the ring ``kv``, and
        the tokens ``x[:, keep]`` attend over the ring (mask ``seen``); returns their outputs."""
        attn, norm, mlp = layer.self_attn, layer.input_layernorm, layer.mlp
        (b, n, d), (_, heads, _, _, hd) = x.shape, kv.shape
        w = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])  # one matmul; Llama: no biases
        qkv = F.linear(F.rms_norm(x, (d,), norm.weight, norm.variance_epsilon), w).view(b, n, 3, heads, hd)
        qk = self._rotate(qkv[:, :, :2], *rope)
        self._write(kv, torch.stack([qk[:, :, 1], qkv[:, :, 2]], 2), where)
        q = qk[:, keep, 0].transpose(1, 2)  # (B,heads,m,head_dim)
        out = F.scaled_dot_product_attention(q, kv[:, :, 0], kv[:, :, 1], attn_mask=seen[:, :, keep],
                                             scale=attn.scaling)
        x = x[:, keep] + attn.o_proj(out.transpose(1, 2).reshape(b, q.shape[2], d))
        norm = layer.post_attention_layernorm
        gate, up = F.linear(F.rms_norm(x, (d,), norm.weight, norm.variance_epsilon),
                            torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])).chunk(2, -1)
        return x + mlp.down_proj(mlp.act_fn(gate) * up)

    def _cached_run(self, tok: torch.Tensor, pos: torch.Tensor, cache: dict,
                    keep: slice = slice(None)) -> torch.Tensor:
        """Llama layers over ``tok`` (B,n,d) at positions ``pos`` (B,) onwards, against and into the KV rings
        ``cache`` (written in place); the final-normed hidden states of the tokens ``tok[:, keep]``, whose
        last-layer outputs are the only ones computed."""
        bb = self.backbone
        qpos = pos[:, None] + torch.arange(tok.shape[1], device=tok.device)
        rope = bb.rotary_emb(tok, qpos)
        where, seen = self._ring(qpos, 2 * self.cfg.window)
        x, last = tok, len(bb.layers) - 1
        for i, layer in enumerate(bb.layers):
            x = self._layer(layer, x, rope, cache[f"kv{i}"], where, seen, keep if i == last else slice(None))
        return bb.norm(x)

    def _own(self, state: State, n: int) -> State:
        """``state`` tiled to batch ``n`` with its own copy of the KV rings, which may then be written in place."""
        out = repeat_state({k: v for k, v in state.items() if not k.startswith("kv")}, n)
        out.update({k: v.expand(n, *v.shape[1:]).clone() for k, v in state.items() if k.startswith("kv")})
        return out

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
        cache = self._empty_cache(b, f)
        if n > 0:
            start = torch.zeros(b, dtype=torch.long, device=dev)
            self._cached_run(self._tokens(f[:, :-1], a), start, cache, slice(0))  # keys/values only
        pos = torch.full((b,), 2 * n, dtype=torch.long, device=dev)
        return {"f": f[:, -1], "pos": pos, **cache, **self._ref_state(frames)}

    def step(self, state: State, action: torch.Tensor) -> State:
        """One imagined step; ``state`` is left as it was (the KV rings are copied)."""
        return self._advance(self._own(state, state_batch(state)), action)

    @torch.no_grad()
    def rollout(self, state: State, actions: torch.Tensor) -> tuple[State, torch.Tensor]:
        """As ``WorldModel.rollout``, copying the KV rings once and then writing them in place."""
        state = self._own(state, actions.shape[0])
        rewards = []
        for t in range(actions.shape[1]):
            state = self._advance(state, actions[:, t])
            rewards.append(self.reward(state))
        return state, torch.stack(rewards, dim=1)

    def _advance(self, state: State, action: torch.Tensor) -> State:
        """One imagined step, writing into ``state``'s KV rings."""
        f = self.features(state)
        a = action.float().reshape(f.shape[0], self.action_dim).clamp(-1, 1)
        if not self.use_cache:
            fwin = state["fwin"]
            awin = torch.cat([state["awin"], a[:, None]], 1)
            fnew = f + self.out(self._run(self._tokens(fwin, awin))[:, -1])
            w = self.cfg.window
            fwin = torch.cat([fwin, fnew[:, None]], 1)[:, -w:]
            return {"fwin": fwin, "awin": awin[:, -(w - 1):], **{k: v for k, v in state.items() if k == "ref"}}
        hidden = self._cached_run(self._tokens(f[:, None], a[:, None]), state["pos"], state, slice(1, None))
        return {**state, "f": f + self.out(hidden[:, 0]), "pos": state["pos"] + 2}

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
        tok = self._tokens(f[:, :-1], a)
        if self.use_cache:
            cache = self._empty_cache(b, f)
            start = torch.zeros(b, dtype=torch.long, device=x.device)
            hidden = self._cached_run(tok, start, cache, slice(1, None, 2))  # the action tokens predict
        else:
            hidden = self._run(tok)[:, 1::2]
        f_tf = f[:, :-1] + self.out(hidden)  # predictions of frames 1..T-1
        # open loop from the real context, predictions fed back (as step() does)
        preds = [f_tf[:, ctx - 1]]
        if self.use_cache:  # the teacher-forced tokens after the context are masked as stale, then overwritten
            state = {"f": preds[0], "pos": torch.full((b,), 2 * ctx, dtype=torch.long, device=x.device), **cache}
            for k in range(1, t - ctx):
                state = self.step(state, a[:, ctx - 1 + k])
                preds.append(state["f"])
        else:
            for k in range(1, t - ctx):
                fwin = torch.cat([f[:, :ctx], torch.stack(preds, 1)], 1)
                h = self._run(self._tokens(fwin, a[:, :ctx + k]))
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
