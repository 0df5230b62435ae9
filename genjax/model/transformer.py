"""Decoder-only transformer LM in Flax NNX.

RoPE, RMSNorm, grouped-query causal attention (`genjax.model.attention`: XLA, splash on TPU,
cuDNN flash on GPU), SwiGLU MLP, optional tied embeddings. Layers run as a Python loop or as one
`lax.scan` over stacked parameters (`scan_layers`: HLO size and compile time independent of
depth), each under an optional remat policy. The cross-entropy is computed over sequence
chunks of the final hidden states (`token_stats`), so no [B, T, V] float32 logits exist.
Every parameter carries logical axis names (`sharding=`; stacked layers add a leading
'layers' axis); `genjax.sharding` maps them to mesh axes. Activations are constrained through
an optional `constrain(x, logical_axes)` callable so that the module itself knows no mesh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from genjax.model.attention import AttentionFn, make_attention
from genjax.model.loss import chunked_token_stats

Constrain = Callable[[jax.Array, tuple[str | None, ...]], jax.Array]

# jax.checkpoint_policies that are policies themselves (the others are factories needing names)
REMAT_POLICIES = ("dots_saveable", "dots_with_no_batch_dims_saveable", "checkpoint_dots",
                  "checkpoint_dots_with_no_batch_dims", "everything_saveable",
                  "nothing_saveable")
REMAT_CHOICES = ("none", "full", *REMAT_POLICIES)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The transformer's shape and numerics (`config.model`)."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    tie_embeddings: bool = True
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    remat: str = "none"  # none | full (save nothing) | a name in REMAT_POLICIES
    scan_layers: bool = False
    loss_chunk: int = 512  # sequence positions per cross-entropy chunk (0: the whole row)

    @classmethod
    def from_config(cls, model_cfg) -> ModelConfig:
        return cls(**{f.name: model_cfg[f.name] for f in dataclasses.fields(cls)})

    def num_params(self, include_embedding: bool = True) -> int:
        d, h, kv, hd, f = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.d_ff
        per_layer = d * hd * (h + 2 * kv) + h * hd * d + 3 * d * f + 2 * d
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return self.n_layers * per_layer + d + (emb if include_embedding else 0)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 x non-embedding matmul params + unembedding + attention
        (causal: half of the T x T square, as MaxText counts it)."""
        matmul = self.num_params(include_embedding=False) + self.vocab_size * self.d_model
        attention = 2 * self.n_layers * seq_len * self.n_heads * self.head_dim  # QK^T and AV, fwd
        return 6.0 * matmul + 3.0 * attention


def remat_policy(name: str):
    """`jax.checkpoint` policy for `model.remat` (None: save nothing, recompute all)."""
    if name == "full":
        return None
    if name not in REMAT_POLICIES:
        raise ValueError(f"model.remat must be one of {', '.join(REMAT_CHOICES)}, got {name!r}")
    return getattr(jax.checkpoint_policies, name)


def _param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str | None, ...], dtype,
           scale: float | None = None, ones: bool = False) -> nnx.Param:
    if ones:
        value = jnp.ones(shape, dtype)
    else:
        std = scale if scale is not None else shape[0] ** -0.5
        value = (std * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape)).astype(dtype)
    return nnx.Param(value, sharding=axes, eager_sharding=False)


def _identity(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
    del axes
    return x


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, dtype, rngs: nnx.Rngs):
        self.scale = _param(rngs, (dim,), ("norm",), dtype, ones=True)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def rope(x_BxTxNxH: jax.Array, positions_BxT: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding over the last axis (split-halves convention)."""
    half = x_BxTxNxH.shape[-1] // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_BxTxH = positions_BxT[..., None].astype(jnp.float32) * freqs
    sin, cos = jnp.sin(angles_BxTxH)[:, :, None, :], jnp.cos(angles_BxTxH)[:, :, None, :]
    x1, x2 = jnp.split(x_BxTxNxH.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxTxNxH.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, constrain: Constrain,
                 attend: AttentionFn):
        dt = jnp.dtype(cfg.param_dtype)
        d, h, kv, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = _param(rngs, (d, h, hd), ("embed", "heads", "head_dim"), dt)
        self.wk = _param(rngs, (d, kv, hd), ("embed", "kv_heads", "head_dim"), dt)
        self.wv = _param(rngs, (d, kv, hd), ("embed", "kv_heads", "head_dim"), dt)
        out_scale = (h * hd) ** -0.5 / (2 * cfg.n_layers) ** 0.5
        self.wo = _param(rngs, (h, hd, d), ("heads", "head_dim", "embed"), dt, scale=out_scale)
        self.cfg, self.constrain, self.attend = cfg, constrain, attend

    def __call__(self, x_BxTxD: jax.Array, positions_BxT: jax.Array,
                 segments_BxT: jax.Array | None) -> jax.Array:
        ct = jnp.dtype(self.cfg.compute_dtype)
        q = jnp.einsum("btd,dnh->btnh", x_BxTxD, self.wq[...].astype(ct))
        k = jnp.einsum("btd,dkh->btkh", x_BxTxD, self.wk[...].astype(ct))
        v = jnp.einsum("btd,dkh->btkh", x_BxTxD, self.wv[...].astype(ct))
        q = self.constrain(rope(q, positions_BxT, self.cfg.rope_theta),
                           ("batch", None, "heads", None))
        k = self.constrain(rope(k, positions_BxT, self.cfg.rope_theta),
                           ("batch", None, "kv_heads", None))
        out_BxTxNxH = self.attend(q, k, v, segments_BxT)
        return jnp.einsum("btnh,nhd->btd", out_BxTxNxH, self.wo[...].astype(ct))


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, constrain: Constrain):
        dt = jnp.dtype(cfg.param_dtype)
        self.w_gate = _param(rngs, (cfg.d_model, cfg.d_ff), ("embed", "mlp"), dt)
        self.w_up = _param(rngs, (cfg.d_model, cfg.d_ff), ("embed", "mlp"), dt)
        out_scale = cfg.d_ff**-0.5 / (2 * cfg.n_layers) ** 0.5
        self.w_down = _param(rngs, (cfg.d_ff, cfg.d_model), ("mlp", "embed"), dt, scale=out_scale)
        self.cfg, self.constrain = cfg, constrain

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        ct = jnp.dtype(self.cfg.compute_dtype)
        gate = x_BxTxD @ self.w_gate[...].astype(ct)
        up = x_BxTxD @ self.w_up[...].astype(ct)
        hidden_BxTxF = self.constrain(jax.nn.silu(gate) * up, ("batch", None, "mlp"))
        return hidden_BxTxF @ self.w_down[...].astype(ct)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, constrain: Constrain,
                 attend: AttentionFn):
        dt = jnp.dtype(cfg.param_dtype)
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps, dt, rngs)
        self.attn = Attention(cfg, rngs, constrain, attend)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps, dt, rngs)
        self.mlp = MLP(cfg, rngs, constrain)
        self.constrain = constrain

    def __call__(self, x_BxTxD, positions_BxT, segments_BxT):
        x_BxTxD = x_BxTxD + self.attn(self.attn_norm(x_BxTxD), positions_BxT, segments_BxT)
        x_BxTxD = x_BxTxD + self.mlp(self.mlp_norm(x_BxTxD))
        return self.constrain(x_BxTxD, ("batch", None, "embed"))


class Transformer(nnx.Module):
    """`model(tokens_BxT) -> logits_BxTxV` (float32); `model.token_stats(inputs, targets)` ->
    per-token cross-entropy and argmax-correctness without materializing the logits."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, constrain: Constrain = _identity,
                 attend: AttentionFn | None = None):
        dt = jnp.dtype(cfg.param_dtype)
        attend = attend if attend is not None else make_attention("xla")
        self.embed = _param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), dt,
                            scale=cfg.d_model**-0.5)
        if cfg.scan_layers:  # one Block whose parameters are stacked on a leading 'layers' axis
            @nnx.split_rngs(splits=cfg.n_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def stacked(rngs):
                return Block(cfg, rngs, constrain, attend)

            self.blocks = stacked(rngs)
        else:
            self.blocks = nnx.List([Block(cfg, rngs, constrain, attend)
                                    for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, dt, rngs)
        if not cfg.tie_embeddings:
            self.unembed = _param(rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), dt)
        self.cfg, self.constrain = cfg, constrain

    def hidden(self, tokens_BxT: jax.Array, positions_BxT: jax.Array | None = None,
               segments_BxT: jax.Array | None = None) -> jax.Array:
        """Final-normed hidden states [B, T, D] in the compute dtype."""
        return self.final_norm(self._trunk(tokens_BxT, positions_BxT, segments_BxT)[0])

    def layer_outputs(self, tokens_BxT: jax.Array) -> jax.Array:
        """Every block's output (the residual stream after it), [L, B, T, D]."""
        return self._trunk(tokens_BxT, None, None, keep_layers=True)[1]

    def _trunk(self, tokens_BxT, positions_BxT, segments_BxT, keep_layers: bool = False):
        """(last residual stream [B, T, D], every block's output [L, B, T, D] or None)."""
        cfg, ct = self.cfg, jnp.dtype(self.cfg.compute_dtype)
        if positions_BxT is None:
            positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
        # FSDP: gather the table's embed dim before the lookup (its gradient is then
        # reduce-scattered) instead of letting the partitioner replicate activations.
        table_VxD = self.constrain(self.embed[...].astype(ct), ("vocab", None))
        x_BxTxD = self.constrain(table_VxD[tokens_BxT], ("batch", None, "embed"))

        def apply_block(block_graph, block_state, x_BxTxD):
            return nnx.merge(block_graph, block_state)(x_BxTxD, positions_BxT, segments_BxT)

        if cfg.remat != "none":
            apply_block = jax.checkpoint(apply_block, policy=remat_policy(cfg.remat),
                                         static_argnums=(0,), prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            block_graph, stacked_state = nnx.split(self.blocks)

            def body(x, layer_state):
                x = apply_block(block_graph, layer_state, x)
                return x, (x if keep_layers else None)

            x_BxTxD, layers_LxBxTxD = jax.lax.scan(body, x_BxTxD, stacked_state)
        else:
            layers = []
            for block in self.blocks:
                x_BxTxD = apply_block(*nnx.split(block), x_BxTxD)
                layers.append(x_BxTxD)
            layers_LxBxTxD = jnp.stack(layers) if keep_layers else None
        return x_BxTxD, layers_LxBxTxD

    def unembedding(self) -> jax.Array:
        """The output projection [D, V] in the compute dtype."""
        ct = jnp.dtype(self.cfg.compute_dtype)
        if self.cfg.tie_embeddings:
            return self.embed[...].astype(ct).T
        return self.unembed[...].astype(ct)

    def logits(self, x_BxTxD: jax.Array) -> jax.Array:
        logits_BxTxV = jnp.einsum("btd,dv->btv", x_BxTxD, self.unembedding(),
                                  preferred_element_type=jnp.float32)
        return self.constrain(logits_BxTxV, ("batch", None, "vocab"))

    def __call__(self, tokens_BxT: jax.Array, positions_BxT: jax.Array | None = None,
                 segments_BxT: jax.Array | None = None) -> jax.Array:
        """Logits [B, T, V]; with `segments_BxT`, each segment of a packed row attends only
        to itself (pass its restarting `positions_BxT` too)."""
        return self.logits(self.hidden(tokens_BxT, positions_BxT, segments_BxT))

    def token_stats(self, inputs_BxT: jax.Array, targets_BxT: jax.Array,
                    positions_BxT: jax.Array | None = None,
                    segments_BxT: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """(per-token cross-entropy, per-token argmax == target), float32 [B, T], computed
        `loss_chunk` positions at a time under remat: the forward keeps one chunk's
        [B, chunk, V] logits, the backward recomputes them chunk by chunk."""
        x_BxTxD = self.hidden(inputs_BxT, positions_BxT, segments_BxT)
        return chunked_token_stats(x_BxTxD, targets_BxT, self.logits, self.cfg.loss_chunk)
