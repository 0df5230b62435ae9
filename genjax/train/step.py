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

from genjax import batching
from genjax.hooks.base import ApplyFn, Hook, MetricSpec, StepContext, run_hooks
from genjax.model import token_stats

# (logits_BxTxV, targets_BxT) -> (per-token loss, per-token correctness)
LossFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a step changes, as explicit pytrees (checkpointed as a whole)."""

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
    MetricSpec("train/nonfinite", description="1 when this step's loss or gradient norm is not "
               "finite (with train.on_nonfinite=skip its update was not applied), else 0"),
)


def init_state(params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(jax.random.key(seed)))


def make_train_step(apply_fn: ApplyFn, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, hooks: Sequence[Hook] = (), grad_accum: int = 1,
                    loss_fn: LossFn | None = None, skip_nonfinite: bool = False):
    """Builds the pure step. Model, optimizer, loss and hooks are all arguments; without a
    `loss_fn` the model's own cross-entropy is used (chunked for genjax's transformer)."""

    def per_token(params, batch):
        if loss_fn is None:
            return token_stats(apply_fn, params, batch["inputs"], batch["targets"])
        return loss_fn(apply_fn(params, batch["inputs"]), batch["targets"])

    def mean_loss(params, batch, num_tokens):
        """This (micro-)batch's loss summed over its tokens, over the whole batch's count: the
        gradient comes out already averaged, and micro-batch gradients simply add up."""
        token_loss_BxT, token_correct_BxT = per_token(params, batch)
        loss = jnp.sum(token_loss_BxT * batch["loss_mask"]) / num_tokens
        return loss, (token_loss_BxT, token_correct_BxT)

    grad_fn = jax.value_and_grad(mean_loss, has_aux=True)

    def gradients(params, batch, num_tokens):
        if grad_accum == 1:
            (loss, aux), grads = grad_fn(params, batch, num_tokens)
            return loss, grads, aux

        def body(acc, micro):
            (loss, aux), grads = grad_fn(params, micro, num_tokens)
            acc = jax.tree.map(jnp.add, acc, (loss, grads))
            return acc, aux

        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        micro = jax.tree.map(lambda x: batching.split(x, grad_accum), batch)
        (loss, grads), aux = jax.lax.scan(body, zeros, micro)
        return loss, grads, jax.tree.map(batching.merge, aux)

    def train_step(state: TrainState, batch: dict[str, jax.Array], hook_data: Sequence[Any],
                   due: frozenset[int] | None = None):
        """`due`: see `run_hooks` (None: every-N hooks under `lax.cond`)."""
        num_tokens = jnp.sum(batch["loss_mask"])
        loss, grads, (token_loss_BxT, token_correct_BxT) = gradients(
            state.params, batch, jnp.maximum(num_tokens, 1.0))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)  # checked by the host one step late
        if skip_nonfinite:  # keep the old params and optimizer state: the update is not applied
            params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                             (params, opt_state), (state.params, state.opt_state))
            updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        metrics = {
            "train/loss": loss,
            "train/grad_norm": grad_norm,
            "train/nonfinite": jnp.where(finite, 0.0, 1.0).astype(jnp.float32),
            "train/lr": jnp.asarray(schedule(state.step), jnp.float32),
            "train/tokens": num_tokens,
        }
        ctx = StepContext(step=state.step, token_loss_BxT=token_loss_BxT,
                          token_correct_BxT=token_correct_BxT,
                          loss_mask_BxT=batch["loss_mask"], domain_B=batch["domain"],
                          grads=grads, updates=updates, batch=batch)
        metrics.update(run_hooks(hooks, state.params, apply_fn, hook_data, ctx, due))
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                               rng=state.rng)
        return new_state, metrics

    return train_step
