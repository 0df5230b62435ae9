"""Next-token cross-entropy, over whole logits or over sequence chunks of hidden states."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def next_token_stats(logits_BxTxV: jax.Array, targets_BxT: jax.Array):
    """(per-token cross-entropy, per-token argmax correctness), float32. The target's logit
    minus the log-normalizer: no [B, T, V] log-probabilities are materialized."""
    logits_BxTxV = logits_BxTxV.astype(jnp.float32)
    target_logit_BxT = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    loss_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1) - target_logit_BxT
    correct_BxT = (jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT).astype(jnp.float32)
    return loss_BxT, correct_BxT


def chunked_token_stats(x_BxTxD: jax.Array, targets_BxT: jax.Array,
                        logits_fn: Callable[[jax.Array], jax.Array],
                        chunk: int) -> tuple[jax.Array, jax.Array]:
    """`next_token_stats(logits_fn(x), targets)` over sequence chunks of `chunk` positions."""
    b, t, _ = x_BxTxD.shape
    if not chunk or chunk >= t:
        return next_token_stats(logits_fn(x_BxTxD), targets_BxT)
    n = -(-t // chunk)
    pad = n * chunk - t
    if pad:
        x_BxTxD = jnp.pad(x_BxTxD, ((0, 0), (0, pad), (0, 0)))
        targets_BxT = jnp.pad(targets_BxT, ((0, 0), (0, pad)))

    @jax.checkpoint
    def one_chunk(x_BxCxD, targets_BxC):
        return next_token_stats(logits_fn(x_BxCxD), targets_BxC)

    # [B, n*C, ...] -> [n, B, C, ...]: the batch axis keeps its sharding
    x_NxBxCxD = jnp.moveaxis(x_BxTxD.reshape(b, n, chunk, -1), 1, 0)
    targets_NxBxC = jnp.moveaxis(targets_BxT.reshape(b, n, chunk), 1, 0)
    loss_NxBxC, correct_NxBxC = jax.lax.map(lambda a: one_chunk(*a), (x_NxBxCxD, targets_NxBxC))
    merge = lambda v_NxBxC: jnp.moveaxis(v_NxBxC, 0, 1).reshape(b, n * chunk)[:, :t]
    return merge(loss_NxBxC), merge(correct_NxBxC)
