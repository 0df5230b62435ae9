"""Rows in micro-batches: the train step's gradient accumulation and the hooks' eval passes.

Micro-batch `a` of `A` takes rows a, a+A, a+2A, ...: reshaping a batch-sharded [N, ...] to
[N/A, A, ...] and swapping the two axes keeps every shard's rows on its own device, so no
micro-batch moves data between chips (each shard holds N/A/shards rows of every micro-batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def split(x: jax.Array, num: int) -> jax.Array:
    """[N, ...] -> [num, N/num, ...]: micro-batch a holds rows a, a+num, ..."""
    return jnp.swapaxes(x.reshape(x.shape[0] // num, num, *x.shape[1:]), 0, 1)


def merge(x: jax.Array) -> jax.Array:
    """Inverse of `split`: [num, N/num, ...] -> [N, ...] in the original row order."""
    return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])


def map_rows(fn: Callable[[Any], Any], rows: Any, micro_batch: int) -> Any:
    """`fn(rows)` computed `micro_batch` rows at a time (a `lax.map`, so activations exist for
    one micro-batch only); `fn` maps row-major pytrees to row-major pytrees. `micro_batch` 0 or
    >= the row count: one call."""
    n = jax.tree.leaves(rows)[0].shape[0]
    if not micro_batch or micro_batch >= n:
        return fn(rows)
    if n % micro_batch:
        raise ValueError(f"{n} rows are not a multiple of the micro-batch {micro_batch}")
    out = jax.lax.map(fn, jax.tree.map(lambda x: split(x, n // micro_batch), rows))
    return jax.tree.map(merge, out)


@dataclasses.dataclass(frozen=True)
class EvalBatching:
    """How a hook's eval rows are laid out: sharded `shards` ways (the batch mesh axes) and
    evaluated `micro_batch` rows at a time (0: all at once), so that hook activation memory is
    bounded whatever the number of rows."""

    micro_batch: int = 0
    shards: int = 1

    def plan(self, num_rows: int) -> tuple[int, int]:
        """(rows per micro-batch, padded row count): the micro-batch is a multiple of the shard
        count (every chip evaluates its share of every micro-batch), at most the padded rows."""
        multiple = max(self.shards, 1)
        whole = -(-num_rows // multiple) * multiple
        micro = (whole if not self.micro_batch
                 else min(-(-self.micro_batch // multiple) * multiple, whole))
        return micro, -(-num_rows // micro) * micro

    def pad(self, rows: Any) -> Any:
        """Numpy rows padded with zeros to the planned count (see `pad_rows`)."""
        return pad_rows(rows, self.plan(len(jax.tree.leaves(rows)[0]))[1])

    def map(self, fn: Callable[[Any], Any], rows: Any, num_rows: int) -> Any:
        """`fn` over padded `rows` in planned micro-batches (`map_rows`)."""
        return map_rows(fn, rows, self.plan(num_rows)[0])


def pad_rows(rows: Any, num_rows: int) -> Any:
    """Numpy rows padded with zeros to `num_rows` along the leading axis: a zero loss mask
    (and a zero segment) makes a padded row count for nothing."""
    def pad(x):
        x = np.asarray(x)
        return np.concatenate([x, np.zeros((num_rows - len(x), *x.shape[1:]), x.dtype)])

    return jax.tree.map(pad, rows)
