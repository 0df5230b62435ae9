"""Decoder-only transformer LM in Flax NNX.

RoPE, RMSNorm, grouped-query causal attention via `jax.nn.dot_product_attention`, SwiGLU MLP,
optional tied embeddings and rematerialization. Every parameter carries logical axis names
(`sharding=`); `genjax.sharding` maps them to mesh axes. Activations are constrained through an
optional `constrain(x, logical_axes)` callable so that the module itself knows no mesh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

Constrain = Callable[[jax.Array, tuple[str | None, ...]], jax.Array]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
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
    remat: bool = False

    @classmethod
    def from_config(cls, model_cfg) -> ModelConfig:
        return cls(**{f.name: model_cfg[f.name] for f in dataclasses.fields(cls)})

    def num_params(self, include_embedding: bool = True) -> int:
        d, h, kv, hd, f = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.d_ff
        per_layer = d * hd * (h + 2 * kv) + h * hd * d + 3 * d * f + 2 * d
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return self.n_layers * per_layer + d + (emb if include_embedding else 0)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 x non-embedding matmul params + unembedding + attention."""
        matmul = self.num_params(include_embedding=False) + self.vocab_size * self.d_model
        attention = 2 * self.n_layers * seq_len * self.n_heads * self.head_dim  # QK^T and AV, fwd
        return 6.0 * matmul + 3.0 * attention


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
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, constrain: Constrain):
        dt = jnp.dtype(cfg.param_dtype)
        d, h, kv, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = _param(rngs, (d, h, hd), ("embed", "heads", "head_dim"), dt)
        self.wk = _param(rngs, (d, kv, hd), ("embed", "kv_heads", "head_dim"), dt)
        self.wv = _param(rngs, (d, kv, hd), ("embed", "kv_heads", "head_dim"), dt)
        out_scale = (h * hd) ** -0.5 / (2 * cfg.n_layers) ** 0.5
        self.wo = _param(rngs, (h, hd, d), ("heads", "head_dim", "embed"), dt, scale=out_scale)
        self.cfg, self.constrain = cfg, constrain

    def __call__(self, x_BxTxD: jax.Array, positions_BxT: jax.Array,
                 mask_BxTxS: jax.Array | None) -> jax.Array:
        ct = jnp.dtype(self.cfg.compute_dtype)
        q = jnp.einsum("btd,dnh->btnh", x_BxTxD, self.wq[...].astype(ct))
        k = jnp.einsum("btd,dkh->btkh", x_BxTxD, self.wk[...].astype(ct))
        v = jnp.einsum("btd,dkh->btkh", x_BxTxD, self.wv[...].astype(ct))
        q = self.constrain(rope(q, positions_BxT, self.cfg.rope_theta),
                           ("batch", None, "heads", None))
        k = self.constrain(rope(k, positions_BxT, self.cfg.rope_theta),
                           ("batch", None, "kv_heads", None))
        if mask_BxTxS is None:
            out_BxTxNxH = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        else:  # explicit mask, e.g. probe continuations that must not see each other
            out_BxTxNxH = jax.nn.dot_product_attention(q, k, v, mask=mask_BxTxS[:, None])
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
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, constrain: Constrain):
        dt = jnp.dtype(cfg.param_dtype)
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps, dt, rngs)
        self.attn = Attention(cfg, rngs, constrain)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps, dt, rngs)
        self.mlp = MLP(cfg, rngs, constrain)
        self.constrain = constrain

    def __call__(self, x_BxTxD, positions_BxT, mask_BxTxS):
        x_BxTxD = x_BxTxD + self.attn(self.attn_norm(x_BxTxD), positions_BxT, mask_BxTxS)
        x_BxTxD = x_BxTxD + self.mlp(self.mlp_norm(x_BxTxD))
        return self.constrain(x_BxTxD, ("batch", None, "embed"))


class Transformer(nnx.Module):
    """`model(tokens_BxT) -> logits_BxTxV` (float32 logits)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, constrain: Constrain = _identity):
        dt = jnp.dtype(cfg.param_dtype)
        self.embed = _param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), dt,
                            scale=cfg.d_model**-0.5)
        self.blocks = nnx.List([Block(cfg, rngs, constrain) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, dt, rngs)
        if not cfg.tie_embeddings:
            self.unembed = _param(rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), dt)
        self.cfg, self.constrain = cfg, constrain

    def __call__(self, tokens_BxT: jax.Array, positions_BxT: jax.Array | None = None,
                 mask_BxTxS: jax.Array | None = None,
                 logits_at_BxK: jax.Array | None = None) -> jax.Array:
        """Logits [B, T, V], or [B, K, V] at the row positions `logits_at_BxK` only (scoring a
        few tokens of a long row: the unembedding is then paid for K positions, not T)."""
        cfg, ct = self.cfg, jnp.dtype(self.cfg.compute_dtype)
        if positions_BxT is None:
            positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
        # FSDP: gather the table's embed dim before the lookup (its gradient is then
        # reduce-scattered) instead of letting the partitioner replicate activations.
        table_VxD = self.constrain(self.embed[...].astype(ct), ("vocab", None))
        x_BxTxD = self.constrain(table_VxD[tokens_BxT], ("batch", None, "embed"))
        for block in self.blocks:
            if cfg.remat:
                x_BxTxD = nnx.remat(Block.__call__)(block, x_BxTxD, positions_BxT, mask_BxTxS)
            else:
                x_BxTxD = block(x_BxTxD, positions_BxT, mask_BxTxS)
        if logits_at_BxK is not None:
            x_BxTxD = jnp.take_along_axis(x_BxTxD, logits_at_BxK[..., None], axis=1)
        x_BxTxD = self.final_norm(x_BxTxD)
        if cfg.tie_embeddings:
            logits_BxTxV = jnp.einsum("btd,vd->btv", x_BxTxD, self.embed[...].astype(ct))
        else:
            logits_BxTxV = x_BxTxD @ self.unembed[...].astype(ct)
        logits_BxTxV = self.constrain(logits_BxTxV, ("batch", None, "vocab"))
        return logits_BxTxV.astype(jnp.float32)
