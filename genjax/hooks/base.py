"""The hook API: metrics computed inside the jitted train step, returned as arrays.

A hook declares a static schema (`MetricSpec`s) and a pure `compute(params, apply_fn, data,
ctx) -> {name: array}` over its own device-resident eval data and the step context (the train
batch's per-token losses and domains). It never calls back to the host. `run_hooks` composes
hooks into one metrics dict whose structure is fixed for the whole run; a hook with `every=N`
runs under `lax.cond` on steps divisible by N and reports NaN on the others, so changing the
step never recompiles. What a hook combines with the train batch (the held-out gap) goes in its
optional `finish`, outside that gate: a gate that waits on the middle of the train step costs
time even on the steps it skips.

Usable without the genjax trainer: call `run_hooks` inside your own jitted step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from genjax.model import token_stats

FLOAT_DTYPES = ("float32", "float64", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One metric array: its per-step shape, named dimensions, labels and meaning."""

    name: str
    dims: tuple[str, ...] = ()
    shape: tuple[int, ...] = ()
    description: str = ""
    unit: str = ""
    labels: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in FLOAT_DTYPES:  # the stream's fill and a skipped hook's value: NaN
            raise ValueError(f"metric {self.name}: dtype {self.dtype!r} is not supported, "
                             f"metrics are {' | '.join(FLOAT_DTYPES)} (NaN marks steps a hook "
                             "did not run); count in float32 (exact to 2**24) or float64")
        if len(self.dims) != len(self.shape):
            raise ValueError(f"metric {self.name}: dims {self.dims} do not match shape "
                             f"{self.shape}")
        for dim, labels in self.labels.items():
            size = self.shape[self.dims.index(dim)]
            if len(labels) != size:
                raise ValueError(f"metric {self.name}: {len(labels)} labels for dim '{dim}' "
                                 f"of size {size}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepContext:
    """What the train step already computed, for hooks that reuse it at no extra FLOPs."""

    step: jax.Array  # int32 scalar: the step whose params are being evaluated
    token_loss_BxT: jax.Array  # float32 per-token cross-entropy of the train batch
    token_correct_BxT: jax.Array  # float32 1.0 where argmax == target
    loss_mask_BxT: jax.Array  # float32
    domain_B: jax.Array  # int32 domain id per row
    # For gradient monitors (None in loops that do not provide them):
    grads: Any = None  # the train loss's gradient before clipping, a pytree like params
    updates: Any = None  # the update this step applies (new params - params), like params
    batch: Any = None  # the train batch {inputs, targets, loss_mask, domain}


ApplyFn = Callable[..., jax.Array]


class HookError(ValueError):
    """A hook cannot run with this model or data: names the hook and what is missing."""


class Hook(Protocol):
    """What a hook provides. `data()` is placed on device once, its arrays zero-padded to a
    multiple of the batch mesh axes and sharded on their leading (row) axis: a zero row must
    count for nothing. `requires` (optional): the `apply` arguments beyond tokens the hook
    passes (`genjax.model.lm`: positions, segments). `finish(values, ctx)` (optional): the
    metrics that combine `compute`'s values with the train batch's context, run outside the
    every-N gate (`finish_values`)."""

    name: str
    every: int

    def schema(self) -> Sequence[MetricSpec]: ...

    def data(self) -> Any: ...

    def compute(self, params: Any, apply_fn: ApplyFn, data: Any,
                ctx: StepContext) -> dict[str, jax.Array]: ...


def finish_values(hook: Hook, values: dict[str, jax.Array],
                  ctx: StepContext | None) -> dict[str, jax.Array]:
    """`values` updated by the hook's optional `finish(values, ctx)`: metrics that combine its
    (possibly gated, then NaN) values with the train step's context. `run_hooks` calls it after
    the every-N gate, so that the gate depends on the step's parameters and data alone.

    Measured (2 CPU cores, configs/quickstart.py): a held-out gate that read the train batch's
    per-token losses cost ~1 ms per step on the steps it skipped (~4% of the step)."""
    finish = getattr(hook, "finish", None)
    return values if finish is None else {**values, **finish(values, ctx)}


# The pass inputs of a RowsHook's rows; its other row fields are its own.
PASS_FIELDS = ("inputs", "positions", "segments")


class RowsHook(Hook, Protocol):
    """A hook whose metrics come from one forward pass over its rows, so that several such
    hooks can share one pass (`genjax.hooks.fused`). `token_rows()`: numpy arrays with one row
    per leading index: `inputs`, `targets` [N, T] (and `positions`, `segments` for packed
    rows) plus the hook's own per-row fields; `score(loss_NxT, correct_NxT, rows, ctx)`: the
    metrics from the pass's per-token cross-entropy and argmax-correctness, given exactly
    those N rows. `batching` plans its micro-batches."""

    batching: Any

    def token_rows(self) -> dict[str, Any]: ...

    def score(self, loss_NxT: jax.Array, correct_NxT: jax.Array, rows: dict[str, jax.Array],
              ctx: StepContext) -> dict[str, jax.Array]: ...


def rows_stats(apply_fn: ApplyFn, params: Any, rows: dict[str, jax.Array], batching: Any,
               num_rows: int) -> tuple[jax.Array, jax.Array]:
    """Per-token (loss, correct) [padded rows, T] of one forward pass over `rows`, in
    `batching`'s micro-batches."""
    pass_rows = {k: rows[k] for k in (*PASS_FIELDS, "targets") if k in rows}
    return batching.map(lambda d: token_stats(apply_fn, params, d["inputs"], d["targets"],
                                              d.get("positions"), d.get("segments")),
                        pass_rows, num_rows)


def rows_compute(hook: RowsHook, params: Any, apply_fn: ApplyFn, data: dict[str, jax.Array],
                 ctx: StepContext) -> dict[str, jax.Array]:
    """A RowsHook's `compute` on its own: its pass, then `score` on its real rows."""
    n = len(hook.token_rows()["inputs"])
    loss_NxT, correct_NxT = rows_stats(apply_fn, params, data, hook.batching, n)
    rows = {k: v[:n] for k, v in data.items()}
    return hook.score(loss_NxT[:n], correct_NxT[:n], rows, ctx)


def check_capabilities(hooks: Sequence[Hook], model: Any) -> None:
    """Refuses, naming the hook, a hook that needs `apply` arguments the model does not take."""
    for hook in hooks:
        missing = sorted(set(getattr(hook, "requires", ())) - set(model.supports))
        if missing:
            has = ", ".join(sorted(model.supports)) or "tokens only"
            raise HookError(f"hook '{hook.name}' needs a model whose apply takes "
                            f"{', '.join(missing)}; this model's apply takes {has} (disable "
                            f"the hook, or give the model those arguments and list them in "
                            f"LanguageModel.supports)")


def schema_of(hooks: Sequence[Hook]) -> list[MetricSpec]:
    specs = [s for h in hooks for s in h.schema()]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"hooks declare the same metric twice: {dupes}")
    return specs


def _nan_like(specs: Sequence[MetricSpec]) -> dict[str, jax.Array]:
    return {s.name: jnp.full(s.shape, jnp.nan, s.dtype) for s in specs}


def _as_specs(values: dict[str, Any], specs: Sequence[MetricSpec]) -> dict[str, jax.Array]:
    return {s.name: jnp.asarray(values[s.name], s.dtype).reshape(s.shape) for s in specs}


def run_hooks(hooks: Sequence[Hook], params: Any, apply_fn: ApplyFn, data: Sequence[Any],
              ctx: StepContext, due: frozenset[int] | None = None) -> dict[str, jax.Array]:
    """All hooks' metrics for this step; call inside a jitted function. A hook with every > 1
    runs under `lax.cond` on `ctx.step`, or, given `due` (indices into `hooks`, static: one
    compiled program per set), runs unconditionally when in `due` and reports NaN otherwise."""
    out: dict[str, jax.Array] = {}
    for i, (hook, hook_data) in enumerate(zip(hooks, data, strict=True)):
        specs = hook.schema()

        def compute(hook=hook, hook_data=hook_data, specs=specs):
            return _as_specs(hook.compute(params, apply_fn, hook_data, ctx), specs)

        if hook.every == 1 or (due is not None and i in due):
            values = compute()
        elif due is not None:
            values = _nan_like(specs)
        else:
            values = jax.lax.cond(ctx.step % hook.every == 0, compute,
                                  lambda specs=specs: _nan_like(specs))
        out.update(_as_specs(finish_values(hook, values, ctx), specs))
    return out


def domain_sums(values_BxT: jax.Array, mask_BxT: jax.Array, domain_B: jax.Array,
                num_domains: int) -> tuple[jax.Array, jax.Array]:
    """Per-domain (sum of masked values, token count) in one einsum: exact, never mean of means."""
    onehot_BxD = jax.nn.one_hot(domain_B, num_domains, dtype=jnp.float32)
    sums_D = jnp.einsum("bt,bt,bd->d", values_BxT.astype(jnp.float32), mask_BxT, onehot_BxD)
    counts_D = jnp.einsum("bt,bd->d", mask_BxT, onehot_BxD)
    return sums_D, counts_D


def safe_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den, NaN where den == 0 (a domain absent from this batch has no value)."""
    return jnp.where(den > 0, num / jnp.maximum(den, 1e-30), jnp.nan)
