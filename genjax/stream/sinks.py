"""Where host-side metric rows go: the Sink interface and simple sinks."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from genjax.hooks.base import MetricSpec


class Sink(Protocol):
    """Receives one row per step: `{metric name: np.ndarray}` plus `tokens_seen`. This is every
    attribute the trainer uses; `BaseSink` gives the optional ones their defaults."""

    warning: str  # after `open`: a line the trainer prints ("" for none)
    checkpoint_requested: bool  # set to ask for a checkpoint now; the trainer resets it

    def open(self, schema: Sequence[MetricSpec], meta: dict[str, Any], start_step: int) -> None:
        ...

    def write(self, step: int, row: dict[str, np.ndarray]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def first_missing_row(self, schema: Sequence[MetricSpec], before: int) -> int | None:
        """A durable sink: the first step < `before` it holds no row for (the trainer resumes
        from a checkpoint at or before it); None: nothing missing."""
        ...

    def unwritten(self) -> dict[str, np.ndarray] | None:
        """After a write failure: the rows it could not write, stacked, or None."""
        ...


class BaseSink:
    """Defaults for a `Sink`'s optional parts: subclass it and write `write` (and `open`)."""

    warning = ""
    checkpoint_requested = False

    def open(self, schema: Sequence[MetricSpec], meta: dict[str, Any], start_step: int) -> None:
        pass

    def write(self, step: int, row: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def first_missing_row(self, schema: Sequence[MetricSpec], before: int) -> int | None:
        return None

    def unwritten(self) -> dict[str, np.ndarray] | None:
        return None


def check_sink(sink: Any) -> Any:
    """`sink` if it has every `Sink` method and attribute, else a TypeError naming them."""
    names = ("open", "write", "flush", "close", "first_missing_row", "unwritten", "warning",
             "checkpoint_requested")
    missing = [n for n in names if not hasattr(sink, n)]
    if missing:
        raise TypeError(f"sink {type(sink).__name__} lacks {', '.join(missing)}: subclass "
                        f"genjax.stream.BaseSink for their defaults")
    return sink


class MemorySink(BaseSink):
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

    def series(self, name: str) -> np.ndarray:
        """[steps, ...] values of one metric in step order."""
        return np.stack([self.rows[s][name] for s in sorted(self.rows)])


class ConsoleSink(BaseSink):
    """Prints the scalar metrics of every `every`-th row."""

    def __init__(self, every: int = 10, stream=None):
        self.every, self.stream = every, stream or sys.stdout

    def open(self, schema, meta, start_step):
        self.scalars = [s.name for s in schema if not s.shape]

    def write(self, step, row):
        if step % self.every == 0:
            vals = "  ".join(f"{n}={float(row[n]):.4g}" for n in self.scalars)
            print(f"[metrics] step {step}  {vals}", file=self.stream, flush=True)
