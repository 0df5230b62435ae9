"""One forward pass for several eval hooks: the held-out, memorization and probe rows together.

Each hook of an eval pass otherwise runs its own forward over its own rows, and every pass
reads (on a sharded slice: gathers) every weight matrix again. On a large slice, with few rows
per chip, that weight traffic costs more than the rows' FLOPs: on llama_1b at v5e-256 the
short probe pass carried 1.3% of the step's FLOPs and 14% of its HBM bytes (genjax/tpu/
RESULTS.md). `fuse(hooks)` replaces every group of `RowsHook`s that run on the same steps with
rows of the same length by one `FusedPass`: their rows concatenated (and padded once, not once
per hook), one `token_stats` pass in micro-batches, and each hook's `score` on its own slice of
the per-token losses. A hook's metrics are the same fused or not.

`hooks.fuse_passes=auto` fuses on accelerators only: on CPU (2 cores, 2026-12-04,
benchmarks/hook_overhead.py) the fused eval took 1.04-1.18x the time of one pass per hook
(1.05x without the packed probe rows, so most of it comes with the segment mask that every
row then goes through), while on v5e-256 (XLA's cost model) it took llama_1b's step from 189
to 144 ms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from genjax.hooks.base import PASS_FIELDS, Hook, MetricSpec, StepContext, finish_values, rows_stats


def _is_rows_hook(hook: Hook) -> bool:
    return callable(getattr(hook, "token_rows", None)) and callable(getattr(hook, "score", None))


@dataclasses.dataclass
class FusedPass:
    """`members` (RowsHooks with the same `every`, row length and `batching`) as one hook: one
    forward pass over all their rows."""

    members: Sequence[Hook]

    def __post_init__(self):
        self.members = list(self.members)
        self.every = self.members[0].every
        self.batching = self.members[0].batching
        self.name = "+".join(h.name for h in self.members)
        self.requires = frozenset().union(*(getattr(h, "requires", ()) for h in self.members))
        self._rows = [h.token_rows() for h in self.members]
        self._counts = [len(r["inputs"]) for r in self._rows]

    def schema(self) -> list[MetricSpec]:
        return [s for h in self.members for s in h.schema()]

    def data(self) -> dict[str, Any]:
        """{"pass": every member's pass rows, concatenated and padded to the batching plan;
        "members": each member's other row fields (its targets and own fields)}."""
        packed = any("segments" in r for r in self._rows)
        pass_rows = [{k: r[k] for k in ("inputs", "targets")} for r in self._rows]
        if packed:  # unpacked rows join as one segment each, positions from 0
            for rows, out in zip(self._rows, pass_rows, strict=True):
                n, t = rows["inputs"].shape
                out["segments"] = rows.get("segments", np.ones((n, t), np.int32))
                out["positions"] = rows.get("positions", np.broadcast_to(
                    np.arange(t, dtype=np.int32), (n, t)))
        joined = {k: np.concatenate([r[k] for r in pass_rows]) for k in pass_rows[0]}
        members = tuple({k: v for k, v in r.items() if k not in PASS_FIELDS} for r in self._rows)
        return {"pass": self.batching.pad(joined), "members": members}

    def compute(self, params: Any, apply_fn, data: dict[str, Any],
                ctx: StepContext) -> dict[str, jax.Array]:
        loss_NxT, correct_NxT = rows_stats(apply_fn, params, data["pass"], self.batching,
                                           sum(self._counts))
        out, start = {}, 0
        for hook, rows, n in zip(self.members, data["members"], self._counts, strict=True):
            own = jax.tree.map(lambda x, n=n: x[:n], rows)
            out.update(hook.score(loss_NxT[start:start + n], correct_NxT[start:start + n], own,
                                  ctx))
            start += n
        return out

    def finish(self, values: dict[str, jax.Array],
               ctx: StepContext | None) -> dict[str, jax.Array]:
        """Each member's own `finish` on its own values."""
        out = dict(values)
        for hook in self.members:
            own = {s.name: out[s.name] for s in hook.schema()}
            out.update(finish_values(hook, own, ctx))
        return out


def fuse_setting(setting: str, platform: str) -> bool:
    """`hooks.fuse_passes` (auto | on | off) for a mesh of `platform` devices."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"hooks.fuse_passes must be auto, on or off, got {setting!r}")
    return setting == "on" or (setting == "auto" and platform != "cpu")


def fuse(hooks: Sequence[Hook]) -> list[Hook]:
    """`hooks` with each group of two or more RowsHooks of equal `every`, row length and
    `batching` replaced by one FusedPass, placed where the group's first hook was."""
    groups: dict[tuple, list[Hook]] = {}
    for hook in hooks:
        if _is_rows_hook(hook):
            key = (hook.every, np.shape(hook.token_rows()["inputs"])[1], hook.batching)
            groups.setdefault(key, []).append(hook)
    first = {id(g[0]): g for g in groups.values() if len(g) > 1}
    fused_ids = {id(h) for g in first.values() for h in g}
    out = []
    for hook in hooks:
        if id(hook) in first:
            out.append(FusedPass(first[id(hook)]))
        elif id(hook) not in fused_ids:
            out.append(hook)
    return out
