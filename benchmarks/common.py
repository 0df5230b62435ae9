"""Shared pieces of the benchmarks: interleaved timing, machine facts, configs, tables, JSON.

Timing rule for every script: compile and warm up first, then run the variants in rounds,
rotating their order each round, and report medians, so that noise from a shared machine
lands on all variants alike and ratios measured side by side stay meaningful.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from genjax.config import ConfigDict, base_config
from genjax.perf import keep_large_allocations_in_heap
from genjax.train.trainer import TrainProgram

Row = dict[str, Any]
RunSteps = Callable[[int], Any]  # runs n steps, returns something to block on

# Model sizes for the grids: (d_model, n_layers, n_heads, n_kv_heads, head_dim, d_ff).
SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "micro": (16, 1, 2, 1, 8, 32),  # smoke tests: the fastest compile
    "tiny": (32, 2, 4, 2, 8, 64),
    "quickstart": (64, 2, 4, 2, 16, 192),
    "small": (128, 4, 4, 2, 32, 384),
    "medium": (256, 6, 8, 4, 32, 768),
}

# Built-in synthetic domain kinds, cycled to make a mixture of any number of domains.
_DOMAIN_CYCLE = (("arith", "modular_arithmetic"), ("grammar", "grammar"), ("kv", "kv_lookup"))
_MODULI = (23, 29, 31, 37, 41, 43, 47, 53)


def bench_config(size: str, num_domains: int = 3, batch_size: int = 16,
                 seq_len: int = 64) -> ConfigDict:
    """A quickstart-like config of a named model size over `num_domains` synthetic domains."""
    d, layers, heads, kv, hd, ff = SIZES[size]
    c = base_config()
    c.model.update(d_model=d, n_layers=layers, n_heads=heads, n_kv_heads=kv, head_dim=hd,
                   d_ff=ff)
    c.train.update(steps=100_000, batch_size=batch_size, seq_len=seq_len)
    c.optim.update(warmup_steps=10)
    domains = {}
    for i in range(num_domains):
        name, kind = _DOMAIN_CYCLE[i % len(_DOMAIN_CYCLE)]
        copy = i // len(_DOMAIN_CYCLE)  # later copies of a kind get harder variants
        spec: dict[str, Any] = {"kind": kind, "weight": 1.0}
        if kind == "modular_arithmetic":
            spec["modulus"] = _MODULI[copy % len(_MODULI)]
        elif kind == "kv_lookup":
            spec["num_pairs"] = 3 + copy
        domains[f"{name}{copy}"] = spec
    c.data.domains = ConfigDict(domains)
    c.log.progress = "none"
    c.checkpoint.update(every=10**9, async_save=False)
    return c


def device_batches(program: TrainProgram, n: int) -> list[dict[str, jax.Array]]:
    """The first `n` global train batches, placed on device once (timed loops cycle them, so
    the data pipeline stays out of step times)."""
    it = program.data.train_batches(program.config.train.batch_size, prefetch=0)
    return [program.global_batch(next(it)) for _ in range(n)]


@dataclasses.dataclass
class Samples:
    """Per-step timings of one variant, one value per round."""

    wall_ms: list[float] = dataclasses.field(default_factory=list)
    cpu_ms: list[float] = dataclasses.field(default_factory=list)  # user + system, all threads
    page_faults: list[float] = dataclasses.field(default_factory=list)  # minor faults

    @property
    def ms(self) -> float:
        return median(self.wall_ms)

    def summary(self) -> Row:
        """Medians (and the wall-time spread) as row fields."""
        return {"step_ms": self.ms, "best_ms": min(self.wall_ms), "cpu_ms": median(self.cpu_ms),
                "page_faults": median(self.page_faults), "spread": spread(self.wall_ms)}


def _usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, float(r.ru_minflt)


def interleaved(variants: Mapping[str, RunSteps], rounds: int, steps: int,
                warmup: int = 2) -> dict[str, Samples]:
    """Per-step wall time, process CPU time and page faults of each variant, per round.

    Every variant first runs `warmup` steps (compilation, allocator warm-up); then each round
    runs `steps` steps of every variant, in an order rotated by one each round, and blocks on
    the result before stopping the clock. CPU time and page faults count every thread of the
    process: on a machine shared with other jobs they show the work done, where wall time also
    shows the waiting.
    """
    names = list(variants)
    for name in names:
        jax.block_until_ready(variants[name](warmup))
    samples = {name: Samples() for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            cpu0, faults0 = _usage()
            start = time.perf_counter()
            jax.block_until_ready(variants[name](steps))
            wall = time.perf_counter() - start
            cpu1, faults1 = _usage()
            s = samples[name]
            s.wall_ms.append(wall / steps * 1e3)
            s.cpu_ms.append((cpu1 - cpu0) / steps * 1e3)
            s.page_faults.append((faults1 - faults0) / steps)
    return samples


def median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> float:
    """Relative interquartile range of timing samples: how noisy the machine was."""
    if len(values) < 4:
        return float("nan")
    q1, _, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / statistics.median(values)


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def paired_ratio(num: Sequence[float], den: Sequence[float], draws: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(median, 2.5th and 97.5th percentiles of a bootstrap of that median) of the per-round
    ratios num/den: two variants timed in the same round share that round's machine state."""
    r = np.asarray(num, np.float64) / np.asarray(den, np.float64)
    medians = np.median(np.random.default_rng(seed).choice(r, (draws, r.size)), axis=1)
    return float(np.median(r)), float(np.percentile(medians, 2.5)), \
        float(np.percentile(medians, 97.5))


def machine(host_malloc: str = "default") -> dict[str, Any]:
    """What the numbers were measured on."""
    dev = jax.devices()[0]
    return {"device_kind": dev.device_kind, "platform": dev.platform,
            "num_devices": jax.device_count(), "jax_version": jax.__version__,
            "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "python": platform.python_version(),
            "ld_preload": os.environ.get("LD_PRELOAD", ""), "host_malloc": host_malloc}


def start(args: argparse.Namespace) -> tuple[list[jax.Device], dict[str, Any]]:
    """(devices, machine facts) for a parsed command line. On the CPU backend the process's
    malloc is set up as `genjax train` sets it (unless --default-malloc), so that the timed
    steps are the ones a CPU run has."""
    host_malloc = "default"
    if jax.default_backend() == "cpu" and not args.default_malloc:
        host_malloc = "heap" if keep_large_allocations_in_heap() else "default"
    return devices(args.devices), machine(host_malloc)


def describe_machine(info: Mapping[str, Any]) -> str:
    preload = f", LD_PRELOAD={info['ld_preload']}" if info["ld_preload"] else ""
    return (f"{info['device_kind']} ({info['platform']}) x{info['num_devices']}, "
            f"{info['cpu_cores']} CPU cores, jax {info['jax_version']}, "
            f"python {info['python']}, malloc {info['host_malloc']}{preload}")


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick, --out, --rounds, --steps, --devices."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="a small grid and few rounds: minutes on 2 CPU cores")
    p.add_argument("--out", type=pathlib.Path, help="write the rows as a JSON list here")
    p.add_argument("--rounds", type=int, help="timing rounds per variant (median reported)")
    p.add_argument("--steps", type=int, help="steps per variant per round")
    p.add_argument("--devices", type=int, default=0,
                   help="use the first N devices (default: all)")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc malloc as it is (see genjax.perf."
                        "keep_large_allocations_in_heap)")
    return p


def devices(n: int) -> list[jax.Device]:
    return jax.devices()[:n] if n else jax.devices()


def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def print_table(rows: Sequence[Row], columns: Sequence[tuple[str, str, str]],
                title: str = "", file=None) -> None:
    """Prints rows as an aligned markdown table; columns are (key, header, format spec)."""
    file = file or sys.stdout
    cells = [[fmt(r.get(key), spec) for key, _, spec in columns] for r in rows]
    headers = [h for _, h, _ in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    line = lambda vals: "| " + " | ".join(v.rjust(w) for v, w in zip(vals, widths)) + " |"
    if title:
        print(f"\n{title}", file=file)
    print(line(headers), file=file)
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|", file=file)
    for c in cells:
        print(line(c), file=file)
    file.flush()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_rows(path: pathlib.Path | None, rows: Sequence[Row]) -> None:
    """Writes the rows as a JSON list (non-finite numbers become null)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: _jsonable(v) for k, v in r.items()} for r in rows]
    path.write_text(json.dumps(clean, indent=1) + "\n")
    print(f"\nwrote {len(clean)} rows to {path}")
