"""Amortized cost of streaming metrics to TensorStore per train step, as a fraction of the
quickstart's step time.

Loads, each fed row by row to a fresh `genjax.stream.TensorStoreSink` on local disk and then
closed (the final flush is counted):
  quickstart  the quickstart config's own schema and a real metrics row from its step
  synthetic   1,000 scalar metrics plus one 512-item per-item array every step
Each load runs twice: chunk-aligned blocks only, and "live": rows taken to arrive one per
measured step time, with the sink's time-based hand-off (`stream.flush_every_s`, stretched by
the sink when blocks are slow to write) firing on that clock, which is what a live run pays.
Per row: `write_ms` is main-thread CPU inside `write()` (paid in line by the training loop),
`background_ms` the CPU of every other thread (the writer thread, TensorStore's pools),
`stream_ms` their sum (the amortized cost, counted on every core), `wall_ms` the wall time per
row of writing as fast as possible and flushing (the rate the sink sustains). `fraction` is
stream_ms over the quickstart step time (its fused hooks on), measured in the same run;
`fraction_cpu` over the step's CPU time (steadier on a machine shared with other jobs).

    python benchmarks/stream_overhead.py --quick --out stream_overhead.json
"""

from __future__ import annotations

import itertools
import pathlib
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import common
import jax
import numpy as np

from genjax.config import base_config, load
from genjax.hooks.base import MetricSpec
from genjax.stream import TensorStoreSink
from genjax.train.trainer import TrainProgram

REQUIRED = ("variant", "step_ms", "stream_ms", "fraction")
QUICKSTART = pathlib.Path(__file__).resolve().parents[1] / "configs" / "quickstart.py"


def synthetic_load(scalars: int = 1000, items: int = 512,
                   seed: int = 0) -> tuple[list[MetricSpec], dict[str, np.ndarray]]:
    """A schema of `scalars` scalar metrics and one [items] array, and one row of values."""
    schema = [MetricSpec(f"synthetic/metric_{i:04d}") for i in range(scalars)]
    schema.append(MetricSpec("synthetic/item_margin", ("item",), (items,),
                             labels={"item": tuple(f"item/{i}" for i in range(items))}))
    rng = np.random.default_rng(seed)
    row = {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in schema}
    row["tokens_seen"] = np.int64(0)
    return schema, row


def quickstart_load(config_path: pathlib.Path, rounds: int, steps: int,
                    devices: Sequence[jax.Device]):
    """(schema, one real metrics row, median step wall ms and CPU ms) of a config's step."""
    program = TrainProgram(load(config_path), devices=devices)
    batches = common.device_batches(program, 4)
    hook_data = program.place_hook_data()
    box = {"state": program.init_state(), "i": 0, "metrics": None}

    def run(n: int):
        for _ in range(n):
            box["i"] += 1
            previous = box["metrics"]
            box["state"], box["metrics"] = program.step_fn(
                box["state"], batches[box["i"] % len(batches)], hook_data)
            if previous is not None:  # the Trainer fetches each row one step late
                jax.device_get(previous)
        return box["metrics"]

    step = common.interleaved({"step": run}, rounds, steps)["step"]
    row = {k: np.asarray(v) for k, v in jax.device_get(box["metrics"]).items()}
    row["tokens_seen"] = np.int64(0)
    return program.schema, row, step.ms, common.median(step.cpu_ms)


def measure_sink(path: pathlib.Path, schema: Sequence[MetricSpec], row: dict[str, np.ndarray],
                 rows: int, chunk_steps: int, flush_every_s: float = float("inf"),
                 step_ms: float = 0.0) -> dict[str, float]:
    """Feeds `rows` copies of `row` to a fresh sink and closes it; per-row costs in ms. With
    `step_ms`, rows are taken to arrive one per `step_ms` and the sink's time-based hand-off
    (its own `flush_interval_s()` rule) fires on that simulated clock."""
    sink = TensorStoreSink(path, chunk_steps=chunk_steps, flush_every_s=flush_every_s)
    start = time.perf_counter()
    sink.open(schema, {"benchmark": "stream_overhead"}, 0)
    open_ms = (time.perf_counter() - start) * 1e3
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    main_cpu, since_flush, flushes = 0.0, 0, 0
    for step in range(rows):
        t = time.thread_time()
        sink.write(step, row)
        since_flush = 0 if (step + 1) % chunk_steps == 0 else since_flush + 1
        if step_ms and since_flush * step_ms >= sink.flush_interval_s() * 1e3:
            sink.flush()  # the time-based hand-off, on the simulated clock
            since_flush, flushes = 0, flushes + 1
        main_cpu += time.thread_time() - t
    t = time.thread_time()
    sink.close()
    main_cpu += time.thread_time() - t
    wall = time.perf_counter() - wall0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return {"open_ms": open_ms, "write_ms": main_cpu / rows * 1e3,
            "background_ms": max(cpu - main_cpu, 0.0) / rows * 1e3,
            "stream_ms": max(cpu, main_cpu) / rows * 1e3, "wall_ms": wall / rows * 1e3,
            "timed_flushes": flushes}


COLUMNS = (
    ("variant", "load", "s"), ("arrays", "arrays", "d"), ("values", "values/row", ","),
    ("rows", "rows", "d"), ("timed_flushes", "timed flushes", "d"),
    ("write_ms", "write() ms", ".3f"),
    ("background_ms", "background ms", ".3f"), ("stream_ms", "stream ms", ".3f"),
    ("wall_ms", "wall ms", ".3f"), ("step_ms", "step ms", ".1f"),
    ("step_cpu_ms", "step cpu ms", ".1f"), ("fraction", "of step", ".2%"),
    ("fraction_cpu", "of step cpu", ".2%"),
)


def main(argv: Sequence[str] | None = None) -> list[common.Row]:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--config", type=pathlib.Path, default=QUICKSTART,
                   help="config whose step time and schema are the reference")
    p.add_argument("--rows", type=int, help="rows written per load (default: by --quick)")
    p.add_argument("--chunk-steps", type=int, default=base_config().stream.chunk_steps)
    p.add_argument("--flush-every-s", type=float, default=base_config().stream.flush_every_s)
    p.add_argument("--scalars", type=int, default=1000)
    p.add_argument("--items", type=int, default=512)
    args = p.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    steps = args.steps or (5 if args.quick else 10)
    rows = args.rows or (4 if args.quick else 16) * args.chunk_steps
    devices, info = common.start(args)
    print(f"stream overhead on {common.describe_machine(info)}; {rows} rows per load, "
          f"{args.chunk_steps}-step chunks", flush=True)
    schema, real_row, step_ms, step_cpu_ms = quickstart_load(args.config, rounds, steps,
                                                             devices)
    loads = {f"{args.config.stem}": (schema, real_row),
             f"synthetic_{args.scalars}_scalars_{args.items}_items":
             synthetic_load(args.scalars, args.items)}
    out: list[common.Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for (name, (specs, row)), live in itertools.product(loads.items(), (False, True)):
            cost = measure_sink(pathlib.Path(tmp) / f"{name}_{live}", specs, row, rows,
                                args.chunk_steps, args.flush_every_s if live else float("inf"),
                                step_ms if live else 0.0)
            values = sum(int(np.prod(s.shape)) for s in specs)
            result: dict[str, Any] = {
                "table": "stream", "variant": name, "arrays": len(specs), "values": values,
                "rows": rows, "chunk_steps": args.chunk_steps, "live": live,
                "flush_every_s": args.flush_every_s if live else None, **cost,
                "step_ms": step_ms,
                "step_cpu_ms": step_cpu_ms, "fraction": cost["stream_ms"] / step_ms,
                "fraction_cpu": cost["stream_ms"] / step_cpu_ms, **info}
            out.append(result)
    common.print_table(out, COLUMNS, "streaming cost per step (CPU ms, all threads) against "
                       f"the {args.config.stem} step")
    common.write_rows(args.out, out)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
