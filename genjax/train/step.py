"""The train step: a pure function of explicit state, jitted once with explicit shardings.

`train_step(state, batch, hook_data) -> (new_state, metrics)`: forward/backward on the global
batch (optionally in micro-batches), an optax update, and the fused hooks evaluated on the
*pre-update* params, i.e. the same params whose train loss the step reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from genjax.hooks.base import (
    ApplyFn,
    Hook,
    MetricSpec,
    StepContext,
    next_token_stats,
    run_hooks,
)

LossFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    step: jax.Array  # int32 scalar: number of updates applied so far
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32 raw key data, for anything stochastic a hook or loss may need


TRAIN_SCHEMA = (
    MetricSpec("train/loss", description="token-weighted cross-entropy of the train batch",
               unit="nats/token"),
    MetricSpec("train/grad_norm", description="global L2 norm of the gradient before clipping"),
    MetricSpec("train/lr", description="learning rate used by this step's update"),
    MetricSpec("train/tokens", description="loss tokens in this step's global batch",
               unit="tokens"),
)


def init_state(params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(jax.random.key(seed)))


def make_train_step(apply_fn: ApplyFn, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, hooks: Sequence[Hook] = (), grad_accum: int = 1,
                    loss_fn: LossFn = next_token_stats):
    """Builds the pure step. Model, optimizer, loss and hooks are all arguments."""

    def mean_loss(params, batch, num_tokens):
        """This (micro-)batch's loss summed over its tokens, over the whole batch's count: the
        gradient comes out already averaged, and micro-batch gradients simply add up."""
        logits_BxTxV = apply_fn(params, batch["inputs"])
        token_loss_BxT, token_correct_BxT = loss_fn(logits_BxTxV, batch["targets"])
        loss = jnp.sum(token_loss_BxT * batch["loss_mask"]) / num_tokens
        return loss, (token_loss_BxT, token_correct_BxT)

    grad_fn = jax.value_and_grad(mean_loss, has_aux=True)

    def gradients(params, batch, num_tokens):
        if grad_accum == 1:
            (loss, aux), grads = grad_fn(params, batch, num_tokens)
            return loss, grads, aux

        def split(x):  # [B, ...] -> [A, B/A, ...]; micro-batch a takes rows a, a+A, ...
            return jnp.swapaxes(x.reshape(x.shape[0] // grad_accum, grad_accum, *x.shape[1:]),
                                0, 1)

        def merge(x):
            return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])

        def body(acc, micro):
            (loss, aux), grads = grad_fn(params, micro, num_tokens)
            acc = jax.tree.map(jnp.add, acc, (loss, grads))
            return acc, aux

        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        (loss, grads), aux = jax.lax.scan(body, zeros, jax.tree.map(split, batch))
        return loss, grads, jax.tree.map(merge, aux)

    def train_step(state: TrainState, batch: dict[str, jax.Array], hook_data: Sequence[Any]):
        num_tokens = jnp.sum(batch["loss_mask"])
        loss, grads, (token_loss_BxT, token_correct_BxT) = gradients(
            state.params, batch, jnp.maximum(num_tokens, 1.0))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "train/loss": loss,
            "train/grad_norm": optax.global_norm(grads),
            "train/lr": jnp.asarray(schedule(state.step), jnp.float32),
            "train/tokens": num_tokens,
        }
        ctx = StepContext(step=state.step, token_loss_BxT=token_loss_BxT,
                          token_correct_BxT=token_correct_BxT,
                          loss_mask_BxT=batch["loss_mask"], domain_B=batch["domain"])
        metrics.update(run_hooks(hooks, state.params, apply_fn, hook_data, ctx))
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                               rng=state.rng)
        return new_state, metrics

    return train_step
