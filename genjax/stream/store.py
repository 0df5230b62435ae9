"""The metric stream: every step's metrics as zarr3 arrays in TensorStore.

Layout under the store root (any TensorStore kvstore: a local path, file://, gs://, memory://):
  zarr.json            group; attributes["genjax"] = version, schema, config, domains
  step, tokens_seen    int64 [step]
  <hook>/<metric>      one array per metric, dims ("step", *its own dims)
  <hook>/<dim>         string labels of a labelled dim (a coordinate for xarray)

Every array carries `dimension_names` and per-array attributes (description, unit, labels), so
zarr-python and xarray read a run without genjax. Rows are buffered on the host and written as
chunk-aligned blocks by a background thread: metric arrays first, `step` last, so a reader that
takes the rows whose stored `step` is >= 0 never sees a row whose metrics are not yet written
(a row never written, a hole, reads as step -1 and is skipped, not taken as the end). A block is
also handed off when `flush_every_s` has passed (stretched if writing a block is slow, see
`flush_interval_s`), so that a live reader is never more than that behind. Arrays grow by
doubling, in whole chunks (a resize rewrites each array's metadata): while a run writes, rows
past the last written one read as step -1 and NaN (fill values, not stored); a clean exit trims
every array to the rows written.

Writes are not fsync'ed unless `fsync=True`: what a killed process wrote stays (the OS has it),
a machine crash can lose the rows of the last seconds (the Trainer then resumes from a
checkpoint before the first missing row and recomputes them: see `first_missing_row`).
Per-write fsync was most of the cost of many small arrays on local disk.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import operator
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorstore as ts

from genjax.hooks.base import MetricSpec
from genjax.paths import kvstore_url
from genjax.stream.sinks import BaseSink

SPECIAL = ("step", "tokens_seen")
FLUSH_BUDGET = 0.0025  # time-based hand-offs may keep the writer busy this share of wall time


class StreamError(RuntimeError):
    """The metric store cannot be written or does not match this run."""


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=1).encode()


def _spec_to_json(spec: MetricSpec) -> dict:
    return {"name": spec.name, "dims": list(spec.dims), "shape": list(spec.shape),
            "description": spec.description, "unit": spec.unit, "dtype": spec.dtype,
            "labels": {k: list(v) for k, v in spec.labels.items()}}


def _array_spec(url: str, name: str, dims: Sequence[str], shape: Sequence[int], dtype: str,
                chunk_steps: int, attributes: dict, fill: Any) -> dict:
    return {
        "driver": "zarr3",
        "kvstore": url + name + "/",
        "metadata": {
            "shape": [0, *shape],
            "chunk_grid": {"name": "regular",
                           "configuration": {"chunk_shape": [chunk_steps, *shape]}},
            "data_type": dtype,
            "dimension_names": ["step", *dims],
            "fill_value": fill,
            # plain chunks: TensorStore's default for a [0, ...] shape shards each chunk into
            # 1-step inner chunks, ~5x the CPU per block (benchmarks/stream_overhead.py)
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            "attributes": attributes,
        },
    }


def _vlen_utf8_array(labels: Sequence[str], dim: str) -> tuple[bytes, bytes]:
    """(zarr.json, chunk c/0) of a 1-d zarr3 string array: TensorStore's zarr3 driver has no
    string type, so the one-chunk array is written as the spec lays it out (data type
    "string", codec vlen-utf8: a uint32 count, then each item's uint32 length and bytes)."""
    meta = {"zarr_format": 3, "node_type": "array", "shape": [len(labels)],
            "data_type": "string", "fill_value": "",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [len(labels)]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "codecs": [{"name": "vlen-utf8", "configuration": {}}],
            "dimension_names": [dim], "attributes": {}}
    parts = [np.uint32(len(labels)).tobytes()]
    for label in labels:
        raw = label.encode()
        parts += [np.uint32(len(raw)).tobytes(), raw]
    return _json_bytes(meta), b"".join(parts)


def _label_coords(schema: Sequence[MetricSpec]):
    """(key, bytes) of a coordinate array `<group>/<dim>` for every labelled dim of a group's
    metrics, so that xarray (`xr.open_datatree(path, engine="zarr")`) can `.sel(domain="kv")`.
    A dim whose labels differ between two metrics of one group, or whose name is a metric's,
    gets none (the labels stay in each array's attributes)."""
    by_group: dict[tuple[str, str], set[tuple[str, ...]]] = {}
    names = {s.name for s in schema}
    for s in schema:
        group = s.name.rsplit("/", 1)[0] if "/" in s.name else ""
        for dim, labels in s.labels.items():
            by_group.setdefault((group, dim), set()).add(tuple(labels))
    for (group, dim), labels in sorted(by_group.items()):
        key = f"{group}/{dim}" if group else dim
        if len(labels) != 1 or key in names or key in SPECIAL:
            continue
        meta, chunk = _vlen_utf8_array(next(iter(labels)), dim)
        yield f"{key}/zarr.json", meta
        yield f"{key}/c/0", chunk


class TensorStoreSink(BaseSink):
    """Writes rows to a zarr3 store in the background; process 0 only (caller's choice)."""

    def __init__(self, path: str | os.PathLike, chunk_steps: int = 4096,
                 overwrite: bool = False, queue_blocks: int = 2, flush_every_s: float = 5.0,
                 fsync: bool = False):
        self.url = kvstore_url(path)
        self.chunk_steps, self.overwrite = chunk_steps, overwrite
        self.flush_every_s = flush_every_s
        self._last_block_s = 0.0  # wall time of the last block write
        self._context = ts.Context({"file_io_sync": fsync})
        self._queue: queue.Queue = queue.Queue(maxsize=queue_blocks)
        self._error: BaseException | None = None
        self._failed: list[dict[str, np.ndarray]] = []  # blocks not written after a failure
        self._thread: threading.Thread | None = None
        self.warning = ""
        self.written_through = -1  # last step written

    # ---------------------------------------------------------------------------- opening
    def open(self, schema: Sequence[MetricSpec], meta: dict[str, Any], start_step: int) -> None:
        import genjax

        self.schema = list(schema)
        specs = [_spec_to_json(s) for s in self.schema]
        kv = self._kvstore()
        state = self._store_state(kv, specs)
        fresh = state != "same"
        if state == "other":  # stream.overwrite=True: start a clean store, no stale arrays
            try:
                kv.delete_range(ts.KvStore.KeyRange()).result()
            except ValueError as e:
                raise StreamError(f"cannot clear metric store {self.url}: {e}") from e
            self.warning = (f"metric store {self.url} held another schema and was recreated "
                            "(stream.overwrite=True)" + (f"; it holds rows from step {start_step} "
                                                         "on" if start_step else ""))
        attrs = {"genjax": {"version": genjax.__version__, "schema": specs,
                            "chunk_steps": self.chunk_steps, **meta}}
        self._write_groups(kv, attrs)
        self.arrays: dict[str, ts.TensorStore] = {}
        for name, dims, shape, dtype, desc, unit, labels, fill in self._array_defs():
            if fresh:
                spec = _array_spec(self.url, name, dims, shape, dtype, self.chunk_steps,
                                   {"description": desc, "unit": unit, "labels": labels}, fill)
                mode = {"create": True, "delete_existing": True}
            else:
                spec, mode = {"driver": "zarr3", "kvstore": self.url + name + "/"}, {"open": True}
            try:
                self.arrays[name] = ts.open(spec, context=self._context, **mode).result()
            except ValueError as e:
                raise StreamError(f"cannot open metric array {self.url}{name}: {e}") from e
        self._scalars_by_dtype: dict[np.dtype, list[str]] = {}
        for name, arr in self.arrays.items():
            if arr.rank == 1 and name != "step":
                self._scalars_by_dtype.setdefault(arr.dtype.numpy_dtype, []).append(name)
        if not fresh:
            missing = _missing_rows(self.arrays["step"], start_step)
            if len(missing):  # the Trainer recomputes these first; other callers are told
                self.warning = (f"metric store {self.url} has no rows for {len(missing)} of "
                                f"steps {missing[0]}..{missing[-1]} (before step {start_step}, "
                                "where this run starts writing)")
        self._truncate(start_step)  # rows >= start_step are rewritten; never below it
        self.written_through = start_step - 1
        self.next_step = start_step
        self._block_start = start_step
        self._rows: list[dict[str, np.ndarray]] = []
        self._handed_off_at = time.monotonic()
        self._thread = threading.Thread(target=self._writer, name="genjax-stream", daemon=True)
        self._thread.start()

    def _store_state(self, kv: ts.KvStore, specs: list[dict]) -> str:
        """"new" (no store), "same" (this schema) or "other" (another schema, overwrite=True);
        another schema without `overwrite` is refused."""
        existing = kv.read("zarr.json").result()
        if existing.state != "value":
            return "new"
        stored = json.loads(existing.value).get("attributes", {}).get("genjax", {})
        if stored.get("schema") == specs:
            return "same"
        if not self.overwrite:
            old = {s["name"] for s in stored.get("schema", [])}
            new = {s["name"] for s in specs}
            diff = sorted(old ^ new) or ["shapes, dims or labels differ"]
            raise StreamError(
                f"metric store {self.url} holds a different schema ({', '.join(diff[:6])}); "
                "set --config.stream.overwrite=True or use a new workdir")
        return "other"

    def first_missing_row(self, schema: Sequence[MetricSpec], before: int) -> int | None:
        """The first step < `before` this store has no row for, or None (none missing, or a
        store that `open` will create or recreate). The Trainer resumes from a checkpoint at or
        before it, so that the missing rows are recomputed instead of left as a hole."""
        if before <= 0:
            return None
        kv = self._kvstore()
        if self._store_state(kv, [_spec_to_json(s) for s in schema]) != "same":
            return None
        try:
            step = ts.open({"driver": "zarr3", "kvstore": self.url + "step/"},
                           context=self._context, open=True).result()
        except ValueError:
            return 0
        missing = _missing_rows(step, before)
        return int(missing[0]) if len(missing) else None

    def _kvstore(self) -> ts.KvStore:
        try:
            return ts.KvStore.open(self.url, context=self._context).result()
        except ValueError as e:
            raise StreamError(f"cannot open metric store {self.url}: {e}") from e

    def _write_groups(self, kv: ts.KvStore, attrs: dict) -> None:
        """The root and hook groups, and each group's label coordinates (`_label_coords`)."""
        groups = sorted({s.name.rsplit("/", 1)[0] for s in self.schema if "/" in s.name})
        try:
            kv.write("zarr.json", _json_bytes({"zarr_format": 3, "node_type": "group",
                                               "attributes": attrs})).result()
            for g in groups:
                kv.write(f"{g}/zarr.json", _json_bytes({"zarr_format": 3, "node_type": "group",
                                                        "attributes": {}})).result()
            for key, value in _label_coords(self.schema):
                kv.write(key, value).result()
        except ValueError as e:
            raise StreamError(f"cannot write metric store {self.url}: {e}") from e

    def _array_defs(self):
        yield ("tokens_seen", (), (), "int64", "tokens the row's params were trained on "
               "(step x batch x seq_len)", "tokens", {}, 0)
        for s in self.schema:
            yield (s.name, s.dims, s.shape, s.dtype, s.description, s.unit,
                   {k: list(v) for k, v in s.labels.items()}, "NaN")
        yield "step", (), (), "int64", "train step (0-based) of this row", "", {}, -1

    def _truncate(self, rows: int) -> None:
        """Drops rows >= `rows` (`step` first), so a resumed run rewrites them once and a
        finished run's arrays hold exactly its rows."""
        names = sorted((n for n, a in self.arrays.items() if a.shape[0] > rows),
                       key=lambda n: n != "step")
        for n in names:
            arr = self.arrays[n]
            self.arrays[n] = arr.resize(exclusive_max=[rows, *arr.shape[1:]],
                                        shrink_only=True).result()

    # ---------------------------------------------------------------------------- writing
    def write(self, step: int, row: dict[str, np.ndarray]) -> None:
        """Buffers the row (kept even when a failure is then reported) and hands off full
        chunks, or what is buffered every `flush_every_s`, to the writer thread."""
        if step > self.next_step:  # resumed past a hole in the store: start the block here
            self._hand_off()
            self.next_step = self._block_start = step
        if step != self.next_step:
            raise StreamError(f"metric rows must arrive in order: got step {step}, "
                              f"expected {self.next_step}")
        self._rows.append(row)
        self.next_step = step + 1
        self._raise_if_failed()
        if (self.next_step % self.chunk_steps == 0
                or time.monotonic() - self._handed_off_at > self.flush_interval_s()):
            self._hand_off()

    def flush_interval_s(self) -> float:
        """Seconds between time-based hand-offs: `flush_every_s`, stretched so that writing
        partial blocks keeps the writer busy at most FLUSH_BUDGET of the time (a store of
        ~1,000 arrays on a slow disk takes ~0.5 s per block)."""
        return max(self.flush_every_s, self._last_block_s / FLUSH_BUDGET)

    def _take_rows(self) -> tuple[int, list[dict[str, np.ndarray]]] | None:
        """The buffered rows and the step of the first; empties the buffer."""
        if not self._rows:
            return None
        item = self._block_start, self._rows
        self._block_start, self._rows = self.next_step, []
        return item

    def _stack(self, start: int, rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Rows as one block of [rows, ...] arrays in the stored dtypes (writer thread).
        Scalars of one dtype are gathered in a single pass: with ~1,000 scalar metrics this is
        ~5x cheaper than stacking them one by one."""
        block = {}
        for dtype, names in self._scalars_by_dtype.items():
            get = operator.itemgetter(*names, names[0])  # always a tuple; drop the extra
            values = itertools.chain.from_iterable(get(r)[:-1] for r in rows)
            table = np.fromiter(values, dtype, len(rows) * len(names)).reshape(len(rows), -1)
            block.update((name, table[:, i]) for i, name in enumerate(names))
        for name, arr in self.arrays.items():
            if name not in block and name != "step":
                block[name] = np.array([r[name] for r in rows], dtype=arr.dtype.numpy_dtype)
        block["step"] = np.arange(start, start + len(rows), dtype=np.int64)
        return block

    def _hand_off(self) -> None:
        item = self._take_rows()
        self._handed_off_at = time.monotonic()
        if item is not None:
            self._queue.put(item)

    def _writer(self) -> None:
        while True:
            item, block = self._queue.get(), None
            try:
                if item is None:
                    return
                block = self._stack(*item)
                if self._error is None:
                    start = time.monotonic()
                    self._write_block(item[0], block)
                    self._last_block_s = time.monotonic() - start
                else:
                    self._failed.append(block)
            except BaseException as e:  # noqa: BLE001 - reported on the training thread
                self._error = e
                if block is not None:
                    self._failed.append(block)
            finally:
                self._queue.task_done()

    def _write_block(self, start: int, block: dict[str, np.ndarray]) -> None:
        end = start + len(block["step"])
        names = [n for n in self.arrays if n != "step"]
        for group in (names, ["step"]):  # metrics first, `step` last: readers trust step
            grow = [n for n in group if self.arrays[n].shape[0] < end]
            resized = [self.arrays[n].resize(
                exclusive_max=[self._capacity(self.arrays[n].shape[0], end),
                               *self.arrays[n].shape[1:]], expand_only=True) for n in grow]
            for n, fut in zip(grow, resized):
                self.arrays[n] = fut.result()
            writes = [self.arrays[n][start:end].write(block[n]) for n in group]
            for w in writes:
                w.result()
        self.written_through = end - 1

    def _capacity(self, rows: int, end: int) -> int:
        """Grows at least 2x, in whole chunks: each resize rewrites the array's metadata file,
        so ~1,000 metric arrays resized per block would double the files written."""
        return -(-max(end, 2 * rows) // self.chunk_steps) * self.chunk_steps

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise StreamError(f"writing metrics to {self.url} failed after step "
                              f"{self.written_through}: {self._error}") from self._error

    def flush(self) -> None:
        """Blocks until every row handed over so far is written (to disk with `fsync`)."""
        self._hand_off()
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        """Writes what is buffered, trims the arrays to the rows written, stops the writer."""
        if self._thread is None:
            return
        try:
            self.flush()
            self._truncate(self.written_through + 1)
        finally:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def unwritten(self) -> dict[str, np.ndarray] | None:
        """After a failure: every row not durably written (failed blocks and the buffer)."""
        item = self._take_rows()
        if item is not None:
            self._failed.append(self._stack(*item))
        if not self._failed:
            return None
        return {k: np.concatenate([b[k] for b in self._failed]) for k in self._failed[0]}


def _written_rows(steps: np.ndarray) -> np.ndarray:
    """Indices of the rows written: stored `step` >= 0. Rows not yet written, and holes (rows
    never written), hold the fill -1 and are skipped; row i holds step i."""
    return np.flatnonzero(steps >= 0)


def _missing_rows(step: ts.TensorStore, before: int) -> np.ndarray:
    """Steps < `before` that have no row."""
    n = min(before, step.shape[0])
    have = np.zeros(before, bool)
    have[_written_rows(step[:n].read().result())] = True
    return np.flatnonzero(~have)


@dataclasses.dataclass
class Series:
    """One metric over steps: values [step, *dims], with dimension labels."""

    values: np.ndarray
    dims: tuple[str, ...]
    labels: dict[str, list[str]]
    description: str = ""
    unit: str = ""


@dataclasses.dataclass
class Run:
    """A run's metric stream read back: steps, tokens seen, metrics and run attributes."""

    steps: np.ndarray
    tokens_seen: np.ndarray
    metrics: dict[str, Series]
    attrs: dict[str, Any]

    def __len__(self) -> int:
        return len(self.steps)

    def to_xarray(self):
        import xarray as xr

        data_vars, coords = {}, {"step": self.steps, "tokens_seen": ("step", self.tokens_seen)}
        for name, s in self.metrics.items():
            data_vars[name] = xr.Variable(("step", *s.dims), s.values,
                                          {"description": s.description, "unit": s.unit})
            for dim in s.dims:
                if dim in s.labels:
                    if dim in coords and list(coords[dim]) != s.labels[dim]:
                        raise ValueError(f"dim {dim!r} has different labels across metrics")
                    coords[dim] = s.labels[dim]
        return xr.Dataset(data_vars, coords=coords,
                          attrs={k: json.dumps(v) if not isinstance(v, str) else v
                                 for k, v in self.attrs.items()})


def read(path: str | os.PathLike) -> Run:
    """Reads the whole stream: every row written, by its stored step (holes and rows being
    written are skipped)."""
    url = kvstore_url(path)
    try:
        kv = ts.KvStore.open(url).result()
        root = kv.read("zarr.json").result()
    except ValueError as e:
        raise StreamError(f"cannot open metric store {url}: {e}") from e
    if root.state != "value":
        raise StreamError(f"no genjax metric store at {url}")
    attrs = json.loads(root.value).get("attributes", {}).get("genjax", {})
    if "schema" not in attrs:
        raise StreamError(f"{url} is a zarr group but not a genjax metric store")
    error = None
    for _ in range(5):  # a writer trimming its arrays at close can race one read
        try:
            return _read_arrays(url, attrs)
        except ValueError as e:
            error = e
            time.sleep(0.05)
    raise StreamError(f"cannot read metric store {url}: {error}") from error


def _read_arrays(url: str, attrs: dict[str, Any]) -> Run:
    open_ro = lambda name: ts.open({"driver": "zarr3", "kvstore": url + name + "/",
                                    "recheck_cached_metadata": True}, open=True).result()
    steps = open_ro("step").read().result()
    rows = _written_rows(steps)
    n = int(rows[-1]) + 1 if len(rows) else 0
    dense = len(rows) == n  # no hole: plain slices, no gather
    steps = steps[rows]
    take = lambda name: (lambda v: v if dense else v[rows])(open_ro(name)[:n].read().result())
    metrics = {}
    for spec in attrs["schema"]:
        metrics[spec["name"]] = Series(take(spec["name"]), tuple(spec["dims"]), spec["labels"],
                                       spec["description"], spec["unit"])
    return Run(steps, take("tokens_seen"), metrics, attrs)


def follow(path: str | os.PathLike, interval_s: float = 1.0, timeout_s: float | None = None):
    """Yields a fresh `Run` each time the store has grown (a run still writing)."""
    seen, start = -1, time.monotonic()
    while timeout_s is None or time.monotonic() - start < timeout_s:
        try:
            run = read(path)
        except StreamError:
            run = None
        if run is not None and len(run) > seen:
            seen = len(run)
            yield run
        time.sleep(interval_s)


def open(path: str | os.PathLike):  # noqa: A001 - `genjax.stream.open` is the public name
    """The run's metrics as an xarray Dataset when xarray is installed, else a `Run`."""
    run = read(path)
    try:
        return run.to_xarray()
    except ImportError:
        return run
