"""Host side of in-step metrics: fetch each step's metrics one step late, hand rows to sinks.

Dispatch step t, then `fetcher.push(t, metrics_t)`: it fetches step t-1's metrics, which the
device finished while step t was being queued, so the fetch never stalls the device (the
double buffer MaxText's metric logger and nanodo's evaluator use), and writes that row to
every sink. `flush()` after the last step hands over the one still pending.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from genjax.stream.sinks import Sink

Row = dict[str, np.ndarray]


def fetch_row(metrics: Any) -> Row:
    """A step's metrics pytree as host numpy arrays (one transfer)."""
    return {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}


class RowFetcher:
    """Rows to `sinks`, one step late. `extra(step)` adds host-side values to each row (for
    instance `tokens_seen`); `on_row(step, row)` sees each row after the sinks."""

    def __init__(self, sinks: Sequence[Sink], extra: Callable[[int], Row] | None = None,
                 on_row: Callable[[int, Row], None] | None = None):
        self.sinks, self.extra, self.on_row = list(sinks), extra, on_row
        self.pending: tuple[int, Any] | None = None

    def push(self, step: int, metrics: Any) -> tuple[int, Row] | None:
        """Queue step `step`'s (device) metrics; emit the previous step's row, if any."""
        previous, self.pending = self.pending, (step, metrics)
        return None if previous is None else self.emit(*previous)

    def flush(self) -> tuple[int, Row] | None:
        """Emit the pending row now (before a checkpoint, at the end of a run)."""
        pending, self.pending = self.pending, None
        return None if pending is None else self.emit(*pending)

    def emit(self, step: int, metrics: Any) -> tuple[int, Row]:
        row = fetch_row(metrics)
        if self.extra is not None:
            row.update(self.extra(step))
        for sink in self.sinks:
            sink.write(step, row)
        if self.on_row is not None:
            self.on_row(step, row)
        return step, row
