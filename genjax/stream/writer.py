"""The stream alone: write any dict of arrays per step to TensorStore from any loop.

    with MetricWriter("runs/mine/metrics") as w:
        for step in range(n):
            w.write(step, {"loss": loss, "probe/margin": margins_N}, tokens_seen=...)

The schema is declared (`MetricSpec`s) or inferred from the first row (float32 arrays of that
row's shapes); later rows must match it. The store is the one `genjax train` writes, so
`genjax metrics`, `genjax analyze`, `genjax.stream.open`, xarray and zarr-python read it.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from genjax.hooks.base import MetricSpec
from genjax.stream.store import StreamError, TensorStoreSink


def infer_schema(row: Mapping[str, Any]) -> list[MetricSpec]:
    """One float32 `MetricSpec` per entry, shaped like its value; dims named `<name>_<i>`."""
    specs = []
    for name, value in row.items():
        shape = np.shape(value)
        leaf = name.rsplit("/", 1)[-1]
        specs.append(MetricSpec(name, tuple(f"{leaf}_{i}" for i in range(len(shape))),
                                tuple(int(s) for s in shape)))
    return specs


class MetricWriter:
    """Rows of any loop to a TensorStore metric store at `path` (local, file://, gs://)."""

    def __init__(self, path: str | pathlib.Path, schema: Sequence[MetricSpec] | None = None,
                 meta: dict[str, Any] | None = None, chunk_steps: int = 4096,
                 flush_every_s: float = 60.0, overwrite: bool = False):
        self.schema = list(schema) if schema is not None else None
        self.meta = dict(meta or {})
        self.sink = TensorStoreSink(path, chunk_steps, overwrite, flush_every_s=flush_every_s)
        self._open = False

    def write(self, step: int, row: Mapping[str, Any], tokens_seen: int = 0) -> None:
        """One step's values (numbers or arrays), steps in increasing order."""
        if self.schema is None:
            self.schema = infer_schema(row)
        if not self._open:
            self.sink.open(self.schema, self.meta, step)
            self._open = True
        names = {s.name for s in self.schema}
        if set(row) != names:
            raise StreamError(f"step {step}: row has {sorted(row)}, the schema {sorted(names)}")
        host = {s.name: np.asarray(row[s.name], s.dtype).reshape(s.shape) for s in self.schema}
        host["tokens_seen"] = np.int64(tokens_seen)
        self.sink.write(step, host)

    def close(self) -> None:
        if self._open:
            self.sink.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
