"""Gradient monitors: which data moved which domain this step, and per-layer norms.

`AttributionHook`: for each domain d, the gradient g_d of its held-out loss at the pre-update
params, its cosine with the update the optimizer actually applied (Δθ, after clipping, Adam's
scaling, weight decay) and the first-order predicted change of that held-out loss from this
step, g_d · Δθ (compare with the next row's `heldout/loss` minus this row's). Optionally the
cosines between the train batch's per-domain gradients (which domains pull together or apart).
Cost: one forward and backward over the held-out rows, `domains_at_once` domains at a time
(`lax.map`; 0: all, vmapped), about 3x their forward FLOPs; train cosines add one backward over
the train batch per domain and hold D gradients. It reads the step's update, so with every > 1
under `lax.cond` (`hooks.gate=cond`) its gated steps run it after the update, alone; fused every
step, or under `hooks.gate=programs`, its forward and backward overlap with the train step's on
a multi-core CPU (benchmarks/README.md, "Gradient monitors").

`NormsHook`: weight, gradient and update norms per layer (`genjax.hooks.layers`), from the
step's own gradient and update: no extra FLOPs beyond the reductions.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from genjax.hooks.base import MetricSpec, StepContext
from genjax.hooks.layers import layer_sums, sum_squares
from genjax.model.lm import token_stats


def tree_dot(a, b) -> jax.Array:
    """<a, b> over every leaf of two params-shaped pytrees, float32."""
    return sum(jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _cos(dot, sq_a, sq_b) -> jax.Array:
    return dot / jnp.sqrt(jnp.maximum(sq_a * sq_b, 1e-30))


def _mean_loss(apply_fn, params, rows, num_domains: int | None = None):
    """Mean token loss of `rows`, or [D] per domain (`num_domains`)."""
    loss_BxT, _ = token_stats(apply_fn, params, rows["inputs"], rows["targets"])
    weighted_BxT = loss_BxT * rows["loss_mask"]
    if num_domains is None:
        return jnp.sum(weighted_BxT) / jnp.maximum(jnp.sum(rows["loss_mask"]), 1.0)
    onehot_BxD = jax.nn.one_hot(rows["domain"], num_domains, dtype=jnp.float32)
    count_D = jnp.einsum("bt,bd->d", rows["loss_mask"], onehot_BxD)
    return jnp.einsum("bt,bd->d", weighted_BxT, onehot_BxD) / jnp.maximum(count_D, 1.0)


@dataclasses.dataclass
class AttributionHook:
    """Per-domain held-out gradients against this step's update (see the module doc)."""

    rows: dict[str, np.ndarray]  # held-out rows grouped by domain, equal counts per domain
    domains: list[str]
    shards: int = 1  # rows are padded per domain so that D x rows divides the batch shards
    train_cosines: bool = False
    every: int = 1
    domains_at_once: int = 0  # held-out gradients computed together (0: all): memory for speed
    name: str = "attribution"

    def __post_init__(self):
        d = len(self.domains)
        counts = np.bincount(self.rows["domain"], minlength=d)
        step = self.shards // math.gcd(d, self.shards)
        self.per_domain = -(-int(counts.max()) // step) * step
        grouped = []
        for i in range(d):  # each domain's rows, then zero rows (zero loss mask) to the count
            sel = {k: v[self.rows["domain"] == i] for k, v in self.rows.items()}
            pad = self.per_domain - len(sel["domain"])
            grouped.append({k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                            for k, v in sel.items()})
        self.grouped = {k: np.concatenate([g[k] for g in grouped]) for k in self.rows}

    def schema(self):
        dom = tuple(self.domains)
        per = lambda n, desc, unit="": MetricSpec(n, ("domain",), (len(dom),), desc, unit,
                                                  labels={"domain": dom})
        specs = [
            per("attribution/predicted_change", "g_d . update: first-order change of domain "
                "d's held-out loss from this step's update", "nats/token"),
            per("attribution/update_cos", "cosine of g_d (held-out loss gradient) with the "
                "applied update (negative: the update lowers that loss)"),
            per("attribution/grad_norm", "norm of g_d, the held-out loss gradient"),
        ]
        if self.train_cosines:
            pair = lambda n, desc, dims: MetricSpec(n, dims, (len(dom), len(dom)), desc,
                                                    labels=dict.fromkeys(dims, dom))
            specs += [pair("attribution/train_grad_cos", "cosine between the train batch's "
                           "per-domain loss gradients", ("domain", "train_domain")),
                      pair("attribution/heldout_train_cos", "cosine of domain d's held-out "
                           "gradient with train domain e's batch gradient (negative: "
                           "training on e lowers d's held-out loss)",
                           ("domain", "train_domain"))]
        return specs

    def data(self):
        return self.grouped

    def compute(self, params, apply_fn, data, ctx: StepContext):
        d = len(self.domains)
        by_domain = jax.tree.map(lambda x: x.reshape(d, self.per_domain, *x.shape[1:]), data)
        update_sq = tree_dot(ctx.updates, ctx.updates)
        train_grads = None
        if self.train_cosines:  # the train batch's per-domain gradients: D backward passes
            per_domain, vjp = jax.vjp(lambda p: _mean_loss(apply_fn, p, ctx.batch, d), params)
            train_grads = jax.vmap(vjp)(jnp.eye(d, dtype=per_domain.dtype))[0]

        def one_domain(rows):
            g = jax.grad(lambda p: _mean_loss(apply_fn, p, rows))(params)
            with_train = (jax.vmap(lambda t: tree_dot(g, t))(train_grads)
                          if train_grads is not None else jnp.zeros(d))
            return tree_dot(g, ctx.updates), tree_dot(g, g), with_train

        at_once = min(self.domains_at_once or d, d)  # that many gradients live at once
        dot_D, sq_D, heldout_train_DxD = jax.lax.map(one_domain, by_domain, batch_size=at_once)
        out = {"attribution/predicted_change": dot_D,
               "attribution/update_cos": _cos(dot_D, sq_D, update_sq),
               "attribution/grad_norm": jnp.sqrt(sq_D)}
        if self.train_cosines:
            gram_DxD = jax.vmap(lambda a: jax.vmap(lambda b: tree_dot(a, b))(train_grads))(
                train_grads)
            train_sq_D = jnp.diag(gram_DxD)
            out["attribution/train_grad_cos"] = _cos(gram_DxD, train_sq_D[:, None],
                                                     train_sq_D[None, :])
            out["attribution/heldout_train_cos"] = _cos(heldout_train_DxD, sq_D[:, None],
                                                        train_sq_D[None, :])
        return out


@dataclasses.dataclass
class NormsHook:
    """L2 norms per layer of the weights, the gradient (before clipping) and the update."""

    labels: tuple[str, ...]  # `layer_labels(params)`
    every: int = 1
    name: str = "norms"

    def schema(self):
        per = lambda n, desc: MetricSpec(n, ("layer",), (len(self.labels),), desc,
                                         labels={"layer": self.labels})
        return (per("norms/weight", "L2 norm of the layer's parameters (pre-update)"),
                per("norms/grad", "L2 norm of the layer's gradient, before clipping"),
                per("norms/update", "L2 norm of the update applied to the layer"))

    def data(self):
        return ()

    def compute(self, params, apply_fn, data, ctx: StepContext):
        norm = lambda tree: jnp.sqrt(layer_sums(tree, sum_squares, self.labels))
        return {"norms/weight": norm(params), "norms/grad": norm(ctx.grads),
                "norms/update": norm(ctx.updates)}
