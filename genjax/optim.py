"""AdamW with warmup + cosine/constant schedule, global-norm clipping and a decay mask."""

from __future__ import annotations

import jax
import optax
from flax import nnx


def make_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    warmup = min(optim_cfg.warmup_steps, max(total_steps - 1, 0))
    if optim_cfg.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, optim_cfg.lr, max(warmup, 1)),
             optax.constant_schedule(optim_cfg.lr)],
            [max(warmup, 1)],
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=optim_cfg.lr,
        warmup_steps=max(warmup, 1),
        decay_steps=max(total_steps, warmup + 1),
        end_value=optim_cfg.lr * optim_cfg.end_lr_fraction,
    )


def decay_mask(params):
    """Weight decay on matrices only: norms' scales (1-D) are not decayed."""
    return jax.tree.map(lambda v: v.ndim >= 2, params,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation,
                                                         optax.Schedule]:
    schedule = make_schedule(optim_cfg, total_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(optim_cfg.clip_norm),
        optax.adamw(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                    weight_decay=optim_cfg.weight_decay, mask=decay_mask),
    )
    return tx, schedule
