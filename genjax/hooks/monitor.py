"""Hooks for any training loop: their eval rows placed on a mesh once, one call in the step.

`Monitor(hooks, mesh)` runs the hooks as `monitor.units`: eval hooks that can share a forward
pass fused into one (`genjax.hooks.fused`; `fuse=False` keeps one pass per hook). It pads
every unit's rows to a multiple of the batch mesh axes (zero rows count for nothing), shards
them on their leading axis, never replicated, and places them once (`monitor.place()`).
Inside your own jitted step, `monitor(params, apply_fn, hook_data, ctx)` returns the metrics
pytree (`run_hooks`); its schema is `monitor.schema`. The genjax trainer uses the same object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from genjax.batching import pad_rows
from genjax.hooks.base import ApplyFn, Hook, MetricSpec, StepContext, run_hooks, schema_of
from genjax.hooks.fused import fuse as fuse_passes


class Monitor:
    """`hooks` over `mesh`, rows split over `batch_axes` (the mesh axes the batch uses; None:
    one device)."""

    def __init__(self, hooks: Sequence[Hook], mesh: Mesh | None = None,
                 batch_axes: str | tuple[str, ...] | None = None, fuse: bool = True):
        self.hooks = list(hooks)
        self.schema: list[MetricSpec] = schema_of(self.hooks)
        self.units: list[Hook] = fuse_passes(self.hooks) if fuse else self.hooks
        if mesh is None:
            mesh = Mesh(np.asarray(jax.devices()[:1]), ("batch",))
            batch_axes = "batch"
        self.mesh = mesh
        axes = (batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes or ())
        self.shards = math.prod(mesh.shape[a] for a in axes)
        self._row_spec = PartitionSpec(axes[0] if len(axes) == 1 else (axes or None))
        self.host_data = [jax.tree.map(self._pad, h.data()) for h in self.units]
        self.shardings = [jax.tree.map(self._sharding, d) for d in self.host_data]

    def _pad(self, x) -> np.ndarray:
        x = np.asarray(x)
        if not x.ndim:
            return x
        return pad_rows(x, -(-len(x) // self.shards) * self.shards)

    def _sharding(self, x) -> NamedSharding:
        """Rows over the batch axes, never replicated (a 0-d array: replicated)."""
        return NamedSharding(self.mesh, self._row_spec if np.ndim(x) else PartitionSpec())

    def place(self) -> list[Any]:
        """The units' rows on the devices, once: pass them to every step."""
        return jax.tree.map(
            lambda x, s: jax.make_array_from_callback(np.shape(x), s,
                                                      lambda idx: np.asarray(x)[idx]),
            self.host_data, self.shardings)

    def abstract(self) -> list[Any]:
        """The placed rows as sharded ShapeDtypeStructs (for lowering without allocating)."""
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s),
            self.host_data, self.shardings)

    def __call__(self, params: Any, apply_fn: ApplyFn, hook_data: Sequence[Any],
                 ctx: StepContext) -> dict[str, jax.Array]:
        """Every hook's metrics for this step; call inside a jitted function."""
        return run_hooks(self.units, params, apply_fn, hook_data, ctx)
