"""Micro-batch plans, zero padding and micro-batched maps against direct computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.batching import EvalBatching, map_rows, merge, pad_rows, split


@pytest.mark.parametrize("rows,micro,shards,expected", [
    (10, 0, 4, (12, 12)),      # one micro-batch, padded to the shards
    (10, 4, 4, (4, 12)),
    (10, 6, 4, (8, 16)),       # micro-batch rounded up to a multiple of the shards
    (10, 64, 4, (12, 12)),     # never larger than the padded rows
    (3, 2, 1, (2, 4)),
])
def test_plan(rows, micro, shards, expected):
    assert EvalBatching(micro, shards).plan(rows) == expected


def test_split_merge_round_trip_and_row_order():
    x = np.arange(12 * 3).reshape(12, 3)
    parts = np.asarray(split(jnp.asarray(x), 3))
    assert parts.shape == (3, 4, 3)
    np.testing.assert_array_equal(parts[1], x[1::3])  # micro-batch a: rows a, a+3, ...
    np.testing.assert_array_equal(np.asarray(merge(jnp.asarray(parts))), x)


def test_map_rows_equals_one_pass():
    x = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    fn = lambda r: {"sq": r["x"] ** 2, "sum": r["x"].sum(-1)}
    whole = jax.jit(lambda r: fn(r))({"x": x})
    micro = jax.jit(lambda r: map_rows(fn, r, 4))({"x": x})
    for k in whole:
        np.testing.assert_array_equal(np.asarray(whole[k]), np.asarray(micro[k]))
    with pytest.raises(ValueError, match="not a multiple"):
        map_rows(fn, {"x": x[:10]}, 4)


def test_pad_rows_adds_zero_rows():
    rows = {"a": np.ones((3, 2), np.float32), "b": np.arange(3, dtype=np.int32)}
    padded = pad_rows(rows, 5)
    assert padded["a"].shape == (5, 2) and padded["b"].dtype == np.int32
    assert not padded["a"][3:].any() and not padded["b"][3:].any()
    np.testing.assert_array_equal(padded["a"][:3], rows["a"])
