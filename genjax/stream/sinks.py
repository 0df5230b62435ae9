"""Where host-side metric rows go: the Sink interface and simple sinks."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from genjax.hooks.base import MetricSpec


class Sink(Protocol):
    """Receives one row per step: `{metric name: np.ndarray}` plus `step` and `tokens_seen`."""

    def open(self, schema: Sequence[MetricSpec], meta: dict[str, Any], start_step: int) -> None:
        ...

    def write(self, step: int, row: dict[str, np.ndarray]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps every row in memory (tests, notebooks, small embedded runs)."""

    def __init__(self):
        self.schema: list[MetricSpec] = []
        self.meta: dict[str, Any] = {}
        self.rows: dict[int, dict[str, np.ndarray]] = {}

    def open(self, schema, meta, start_step):
        self.schema, self.meta = list(schema), dict(meta)
        self.rows = {s: r for s, r in self.rows.items() if s < start_step}

    def write(self, step, row):
        self.rows[step] = row

    def flush(self):
        pass

    def close(self):
        pass

    def series(self, name: str) -> np.ndarray:
        """[steps, ...] values of one metric in step order."""
        return np.stack([self.rows[s][name] for s in sorted(self.rows)])


class ConsoleSink:
    """Prints the scalar metrics of every `every`-th row."""

    def __init__(self, every: int = 10, stream=None):
        self.every, self.stream = every, stream or sys.stdout

    def open(self, schema, meta, start_step):
        self.scalars = [s.name for s in schema if not s.shape]

    def write(self, step, row):
        if step % self.every == 0:
            vals = "  ".join(f"{n}={float(row[n]):.4g}" for n in self.scalars)
            print(f"[metrics] step {step}  {vals}", file=self.stream, flush=True)

    def flush(self):
        pass

    def close(self):
        pass
