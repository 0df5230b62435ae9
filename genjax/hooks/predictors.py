"""Hop predictors per layer: spectra of activation and per-example-gradient Gram matrices.

The measures the mode-hopping work tested (DESIGN.md, "The predictors they tested"), on N fixed
rows (held-out rows, or probe items scored on their correct continuation):

- activations, per block `layer_i`: the representation of row n is the mean over its loss-mask
  tokens of the block's output (the residual stream after it), h_n in R^D; s are the
  eigenvalues of the uncentered Gram K = H H^T [N, N] (= the squared singular values of H).
  `rankme` = exp(-sum p log p), p = s / sum s; `participation_ratio` = (sum s)^2 / sum s^2.
- per-example gradients, per parameter group of `layer_labels` (blocks, embed, final_norm, ...):
  g_n = the gradient of row n's mean token loss, restricted to the group's params;
  G = [<g_i, g_j>] [N, N]. `log_fisher_trace` = log tr G = log sum_n ||g_n||^2 (the empirical
  Fisher trace, summed, not averaged, over rows), `top_eig_over_trace` = s_1(G) / tr G,
  `mean_abs_cos` = mean over pairs i < j of |G_ij| / sqrt(G_ii G_jj).

Eigenvalues come from `jnp.linalg.eigvalsh` in float32 with tiny negatives clamped to 0. Padded
rows (zero loss mask) are sliced off before any Gram is formed.

Cost: one forward pass over the N rows for the activations, and N backward passes of one row
each (`jax.vmap(jax.grad(...))` over rows, `hooks.micro_batch` rows at a time), plus the N
per-example gradients held at once (N x params floats) for the Gram. Measured on CPU (2 shared
cores, configs/tiny.py: 2 layers, d_model 32, train batch 8 x 32 tokens; N = 16 held-out rows
of 32 tokens; best of 5 x 20 steps): the train step took 5.4 ms without hooks and 21.3 ms with
this hook every step (the hook alone, jitted: 16.5 ms), i.e. about 3x a train step: 16 one-row
backward passes cost about what 2 train steps of 8 rows do, plus the Grams and eigvalsh.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from genjax.batching import EvalBatching
from genjax.hooks.base import HookError, MetricSpec
from genjax.hooks.layers import layer_labels, layer_sums
from genjax.hooks.probes import answer_tokens
from genjax.model import token_stats
from genjax.model.lm import LAYER_OUTPUTS

HIGHEST = jax.lax.Precision.HIGHEST


def _round_robin(group_N: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` rows taking one row of each group in turn (groups as even as the
    count allows), in that order."""
    group_N = np.asarray(group_N)
    rank_N = np.zeros(len(group_N), np.int64)
    for g in np.unique(group_N):
        where = np.flatnonzero(group_N == g)
        rank_N[where] = np.arange(len(where))
    order = np.lexsort((group_N, rank_N))
    return order[:count]


def heldout_rows(data, examples: int) -> dict[str, np.ndarray]:
    """`examples` held-out rows taken from the domains in turn (inputs, targets, loss_mask)."""
    per_domain = -(-examples // len(data.names))
    rows = data.heldout_rows(per_domain)
    pick = _round_robin(rows["domain"], examples)
    return {k: np.asarray(rows[k])[pick] for k in ("inputs", "targets", "loss_mask")}


def probe_rows(items, tokenizer, examples: int, prompt_len: int = 0,
               length_multiple: int = 1) -> dict[str, np.ndarray]:
    """`examples` probe items taken from the families in turn, each as one row [context |
    correct answer] whose loss mask covers the correct answer's tokens only (the row's loss is
    the answer's mean token cross-entropy). `prompt_len` > 0 keeps the context's last tokens.
    Rows are right-padded (zero mask) to the longest, a multiple of `length_multiple`."""
    families = sorted({it.family for it in items})
    pick = _round_robin(np.asarray([families.index(it.family) for it in items]), examples)
    seqs = []
    for i in pick:
        context, answer = answer_tokens(tokenizer, items[i].prompt, items[i].correct)
        if not answer:
            raise HookError(f"predictors: probe item of family {items[i].family!r} has an "
                            "empty correct answer")
        context = context[-prompt_len:] if prompt_len else context
        seqs.append((context, answer))
    t = max(len(c) + len(a) - 1 for c, a in seqs)
    t += -t % length_multiple
    n = len(seqs)
    inputs = np.full((n, t), tokenizer.pad_id, np.int32)
    targets = np.full((n, t), tokenizer.pad_id, np.int32)
    mask = np.zeros((n, t), np.float32)
    for r, (context, answer) in enumerate(seqs):
        seq = context + answer
        inputs[r, : len(seq) - 1], targets[r, : len(seq) - 1] = seq[:-1], seq[1:]
        mask[r, len(context) - 1: len(seq) - 1] = 1.0  # positions predicting answer tokens
    return {"inputs": inputs, "targets": targets, "loss_mask": mask}


def spectrum(gram_LxNxN: jax.Array) -> jax.Array:
    """Eigenvalues [L, N] (ascending) of symmetric PSD matrices, float32, negatives -> 0."""
    return jnp.maximum(jnp.linalg.eigvalsh(gram_LxNxN.astype(jnp.float32)), 0.0)


def rankme(s_LxN: jax.Array) -> jax.Array:
    """exp(entropy of s / sum s), with 0 log 0 = 0."""
    p = s_LxN / jnp.sum(s_LxN, -1, keepdims=True)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1))


def participation_ratio(s_LxN: jax.Array) -> jax.Array:
    return jnp.sum(s_LxN, -1) ** 2 / jnp.sum(s_LxN**2, -1)


def gradient_measures(gram_GxNxN: jax.Array) -> dict[str, jax.Array]:
    """log trace, top eigenvalue over trace and mean |cos| over pairs of per-example gradient
    Grams [groups, N, N]."""
    n = gram_GxNxN.shape[-1]
    diag_GxN = jnp.diagonal(gram_GxNxN, axis1=-2, axis2=-1)
    trace_G = jnp.sum(diag_GxN, -1)
    den_GxNxN = diag_GxN[:, :, None] * diag_GxN[:, None, :]
    cos_GxNxN = jnp.where(den_GxNxN > 0, jnp.abs(gram_GxNxN)
                          / jnp.sqrt(jnp.maximum(den_GxNxN, 1e-30)), jnp.nan)
    upper = np.triu(np.ones((n, n), bool), k=1)
    return {"predictors/log_fisher_trace": jnp.log(trace_G),
            "predictors/top_eig_over_trace": spectrum(gram_GxNxN)[:, -1] / trace_G,
            "predictors/mean_abs_cos": jnp.sum(jnp.where(upper, cos_GxNxN, 0.0), (1, 2))
            / upper.sum()}


def _gram(x: jax.Array) -> jax.Array:
    """[N, ...] -> [N, N] inner products of the flattened rows, float32."""
    x = x.reshape(x.shape[0], -1).astype(jnp.float32)
    return jnp.einsum("nk,mk->nm", x, x, precision=HIGHEST)


@dataclasses.dataclass
class PredictorHook:
    """Per-layer hop predictors on fixed rows {inputs, targets, loss_mask} (module docstring).

    `num_layers`: the model's blocks (activation measures, labels `layer_i`); `param_groups`:
    `layer_labels(params)` of the model's params (gradient measures). Both are checked against
    the params and the layer outputs at trace time."""

    rows: dict[str, np.ndarray]
    num_layers: int
    param_groups: tuple[str, ...]
    every: int = 1
    batching: EvalBatching = EvalBatching()
    source: str = "heldout"
    name: str = "predictors"
    requires = frozenset({LAYER_OUTPUTS})

    def __post_init__(self):
        self.rows = {k: np.asarray(self.rows[k]) for k in ("inputs", "targets", "loss_mask")}
        self.num_rows = len(self.rows["inputs"])
        if self.num_rows < 2:
            raise HookError(f"hook 'predictors' needs at least 2 rows (pairs of examples), "
                            f"got {self.num_rows}")
        if not np.all(self.rows["loss_mask"].sum(1) > 0):
            raise HookError("hook 'predictors': a row has no loss-mask tokens (its "
                            "representation and loss are undefined)")
        self.param_groups = tuple(self.param_groups)

    def schema(self):
        blocks = tuple(f"layer_{i}" for i in range(self.num_layers))
        groups = self.param_groups
        n, src = self.num_rows, self.source

        def spec(name, labels, desc):
            return MetricSpec(name, ("layer",), (len(labels),), desc,
                              labels={"layer": labels})

        act = (f"of the block output averaged over each row's loss-mask tokens, {n} {src} "
               "rows: eigenvalues s of the uncentered Gram H H^T")
        grad = (f"per-example gradients g_n of each of {n} {src} rows' mean token loss, "
                "restricted to the layer's params")
        return (
            spec("predictors/rankme", blocks, f"RankMe exp(-sum p log p), p = s / sum s, {act}"),
            spec("predictors/participation_ratio", blocks,
                 f"participation ratio (sum s)^2 / sum s^2, {act}"),
            spec("predictors/log_fisher_trace", groups,
                 f"log sum_n ||g_n||^2 (empirical Fisher trace), {grad}"),
            spec("predictors/top_eig_over_trace", groups,
                 f"top eigenvalue of the Gram <g_i, g_j> over its trace, {grad}"),
            spec("predictors/mean_abs_cos", groups,
                 f"mean over pairs i < j of |cos(g_i, g_j)|, {grad}"),
        )

    def data(self):
        return self.batching.pad(self.rows)

    def compute(self, params, apply_fn, data, ctx):
        labels = layer_labels(params)
        if labels != self.param_groups:
            raise HookError(f"hook 'predictors' was built for parameter groups "
                            f"{self.param_groups}, the params have {labels}")

        def row_grad(inputs_T, targets_T, mask_T):
            def loss(p):
                loss_1xT, _ = token_stats(apply_fn, p, inputs_T[None], targets_T[None])
                return jnp.sum(loss_1xT[0] * mask_T) / jnp.maximum(jnp.sum(mask_T), 1.0)

            return jax.grad(loss)(params)

        def per_rows(d):
            mask_BxT = d["loss_mask"]
            layers_LxBxTxD = apply_fn.layer_outputs(params, d["inputs"]).astype(jnp.float32)
            reps_BxLxD = (jnp.einsum("lbtd,bt->bld", layers_LxBxTxD, mask_BxT, precision=HIGHEST)
                          / jnp.maximum(jnp.sum(mask_BxT, 1), 1.0)[:, None, None])
            grads = jax.vmap(row_grad)(d["inputs"], d["targets"], mask_BxT)
            return reps_BxLxD, grads

        n = self.num_rows
        reps_NxLxD, grads = self.batching.map(per_rows, data, n)
        if reps_NxLxD.shape[1] != self.num_layers:
            raise HookError(f"hook 'predictors' was built for {self.num_layers} layers, the "
                            f"model's layer_outputs has {reps_NxLxD.shape[1]}")
        reps_LxNxD = jnp.swapaxes(reps_NxLxD[:n], 0, 1)  # padded rows sliced off
        s_LxN = spectrum(jnp.einsum("lnd,lmd->lnm", reps_LxNxD, reps_LxNxD, precision=HIGHEST))
        grads = jax.tree.map(lambda g: g[:n], grads)
        gram_GxNxN = layer_sums(grads, _gram, labels, layer_axis=1)
        return {"predictors/rankme": rankme(s_LxN),
                "predictors/participation_ratio": participation_ratio(s_LxN),
                **gradient_measures(gram_GxNxN)}
