"""Optimizers by name (AdamW, SGD with momentum, Lion, Muon) with warmup + cosine/constant
schedule, global-norm clipping and weight decay on matrices only."""

from __future__ import annotations

import jax
import optax
from flax import nnx


def make_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    """Learning rate of the update with count c (0-based): linear warmup lr (c + 1) / W over
    the first W updates (the first update is not a no-op: lr / W, not 0), then constant or
    a cosine decay reaching lr * end_lr_fraction at the last update."""
    base = _base_schedule(optim_cfg, total_steps)
    return lambda count: base(count + 1)


def _base_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
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
    def is_matrix(v) -> bool:  # Muon hands its AdamW part a tree with masked-out leaves
        return len(getattr(v, "shape", ())) >= 2

    return jax.tree.map(is_matrix, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def muon_dimensions(params):
    """Which axes Muon orthogonalizes, per parameter: the projection's input (reduction) and
    output axes (`wq` [embed, heads, head_dim] -> reduction 0, output (1, 2); stacked layers
    add a leading batch axis, which Muon vmaps over). None: that parameter gets Muon's AdamW
    (embeddings, norms, biases, anything not a plain matrix)."""
    from optax.contrib import MuonDimensionNumbers

    known = {"wq": (0, (1, 2)), "wk": (0, (1, 2)), "wv": (0, (1, 2)), "wo": ((0, 1), 2)}

    def dims(path, var):
        name = str(getattr(path[-1], "key", path[-1]))
        ndim = len(getattr(var, "shape", ()))
        if name in ("embed", "unembed", "embedding", "scale", "bias") or ndim < 2:
            return None
        reduction, output = known.get(name, (0, 1))
        base = 3 if name in known else 2
        shift = ndim - base  # stacked layers: a leading batch axis
        if shift < 0:
            return None
        up = lambda a: tuple(x + shift for x in a) if isinstance(a, tuple) else a + shift
        return MuonDimensionNumbers(up(reduction), up(output))

    return jax.tree_util.tree_map_with_path(dims, params,
                                            is_leaf=lambda x: isinstance(x, nnx.Variable))


def _by_name(o, schedule) -> optax.GradientTransformation:
    if o.name == "adamw":
        return optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps,
                           weight_decay=o.weight_decay, mask=decay_mask)
    if o.name == "lion":
        return optax.lion(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                          mask=decay_mask)
    if o.name == "sgd":
        return optax.chain(optax.add_decayed_weights(o.weight_decay, decay_mask),
                           optax.sgd(schedule, momentum=o.momentum or None))
    if o.name == "muon":
        from optax.contrib import muon

        return muon(schedule, beta=o.momentum, weight_decay=o.weight_decay,
                    weight_decay_mask=decay_mask, adam_b1=o.b1, adam_b2=o.b2,
                    muon_weight_dimension_numbers=muon_dimensions,
                    consistent_rms=o.muon_rms or None)
    raise ValueError(f"optim.name must be adamw, sgd, lion or muon, got {o.name!r}")


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation,
                                                         optax.Schedule]:
    """(clipping + the optimizer `optim.name`, its learning-rate schedule)."""
    schedule = make_schedule(optim_cfg, total_steps)
    tx = optax.chain(optax.clip_by_global_norm(optim_cfg.clip_norm),
                     _by_name(optim_cfg, schedule))
    return tx, schedule
