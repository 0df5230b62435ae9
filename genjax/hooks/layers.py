"""Per-layer reductions over a params-shaped pytree (weights, gradients, updates).

Groups: one per transformer block (`layer_i`), whether the blocks are a list (`blocks/i/...`)
or stacked on a leading axis by `scan_layers` (`blocks/...` with [L, ...] leaves), and one per
other top-level entry (`embed`, `final_norm`, `unembed`; any other model: its top-level keys).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

BLOCKS = "blocks"


def _key(k) -> Any:
    return getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))


def _leaves(tree: Any) -> list[tuple[tuple, jax.Array]]:
    return [(tuple(_key(k) for k in path), leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _stacked(path: tuple) -> bool:
    """A leaf of scanned blocks: under `blocks` without a layer index."""
    return path[0] == BLOCKS and not (len(path) > 1 and isinstance(path[1], int))


def layer_labels(params: Any) -> tuple[str, ...]:
    """The group names of `params`, in a fixed order."""
    labels: list[str] = []
    for path, leaf in _leaves(params):
        if _stacked(path):
            names = [f"layer_{i}" for i in range(leaf.shape[0])]
        elif path[0] == BLOCKS:
            names = [f"layer_{path[1]}"]
        else:
            names = [str(path[0])]
        labels += [n for n in names if n not in labels]
    return tuple(labels)


def layer_sums(tree: Any, leaf_fn: Callable[[jax.Array], jax.Array],
               labels: tuple[str, ...], layer_axis: int = 0) -> jax.Array:
    """[groups, ...]: for each group the sum over its leaves of `leaf_fn(leaf)`. Stacked
    leaves are split on `layer_axis` (0 for params; 1 for per-example trees [N, L, ...])."""
    index = {name: i for i, name in enumerate(labels)}
    parts: dict[int, jax.Array] = {}

    def add(i, value):
        parts[i] = value if i not in parts else parts[i] + value

    for path, leaf in _leaves(tree):
        if _stacked(path):
            per_layer = jax.vmap(leaf_fn, in_axes=layer_axis)(leaf)
            for layer in range(leaf.shape[layer_axis]):
                add(index[f"layer_{layer}"], per_layer[layer])
        elif path[0] == BLOCKS:
            add(index[f"layer_{path[1]}"], leaf_fn(leaf))
        else:
            add(index[str(path[0])], leaf_fn(leaf))
    return jnp.stack([parts[i] for i in range(len(labels))])


def sum_squares(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(x.astype(jnp.float32)))
