"""Tokens/s and MFU of genjax without hooks against a minimal hand-written jax + optax loop of
the same model and batch: the framework tax.

Two levels, each pair timed side by side in interleaved rounds:
  step level  `TrainProgram.step_fn` against a hand-written jitted step (same NNX model and
              init, cross-entropy, clip + AdamW with the same schedule and decay mask), both
              on the same device-resident batches, each fetching its loss one step late;
  loop level  `Trainer.run` itself (grain data, global-batch assembly, metric fetch, progress;
              its step period read from a sink's timestamps) against the hand-written step fed
              from the same grain iterator with `jax.device_put`.
MFU = analytic train FLOPs per step / step time / (peak FLOP/s x devices); `genjax.perf` has
the peak table (a measured matmul on CPUs). No variant runs hooks, so `overhead_vs_no_hooks`,
`flop_bound` and `eval_alone` are 0 here (kept so that every benchmark row has them).

    python benchmarks/throughput.py --quick --out throughput.json
"""

from __future__ import annotations

import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from genjax.model import init_model, make_apply
from genjax.perf import mfu, peak_flops, train_step_flops
from genjax.stream.sinks import BaseSink
from genjax.train.trainer import Trainer, TrainProgram

REQUIRED = ("variant", "step_ms", "overhead_vs_no_hooks", "flop_bound", "eval_alone")
QUICK_SIZES = ("quickstart", "small")
FULL_SIZES = ("quickstart", "small", "medium")
SKIP = 2  # loop level: first step periods of a round left out (iterator start-up)


class Handwritten:
    """The minimal loop a user would write: plain jit, data-parallel over the devices."""

    def __init__(self, program: TrainProgram):
        c = program.config
        graphdef, params = init_model(program.model_cfg, c.seed)
        apply_fn = make_apply(graphdef)
        o = c.optim
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, o.lr, max(o.warmup_steps, 1), c.train.steps, o.lr * o.end_lr_fraction)
        self.tx = optax.chain(
            optax.clip_by_global_norm(o.clip_norm),
            optax.adamw(schedule, o.b1, o.b2, o.eps, o.weight_decay,
                        mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
        mesh = jax.make_mesh((program.mesh.size,), ("data",),
                             axis_types=(jax.sharding.AxisType.Auto,),
                             devices=list(program.mesh.devices.flat))
        self.batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
        params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        self.state = (params, self.tx.init(params))

        def loss_fn(params, batch):
            logits = apply_fn(params, batch["inputs"])
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
            mask = batch["loss_mask"]
            return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)

        def step(state, batch):
            params, opt_state = state
            loss, grads = jax.value_and_grad(loss_fn)(params, batch)
            updates, opt_state = self.tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        self.step = jax.jit(step, donate_argnums=(0,))

    def put(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.device_put(v, self.batch_sharding) for k, v in batch.items()
                if k != "domain"}

    def run_steps(self, batches: Sequence[dict[str, jax.Array]]) -> common.RunSteps:
        box = {"i": 0}

        def run(n: int):
            pending = None
            for _ in range(n):
                box["i"] += 1
                self.state, loss = self.step(self.state, batches[box["i"] % len(batches)])
                if pending is not None:
                    float(pending)
                pending = loss
            return pending

        return run

    def run_loop(self, data, batch_size: int) -> Callable[[int], float]:
        """Per-step ms of `n` steps fed from a fresh grain iterator (as the Trainer does)."""
        start = {"step": 0}

        def run(n: int) -> float:
            it = data.train_batches(batch_size, start["step"], prefetch=4)
            stamps, pending = [], None
            for _ in range(n + SKIP + 1):
                self.state, loss = self.step(self.state, self.put(next(it)))
                if pending is not None:
                    float(pending)
                    stamps.append(time.perf_counter())
                pending = loss
            float(pending)
            stamps.append(time.perf_counter())
            start["step"] += n + SKIP + 1
            return period_ms(stamps, n)

        return run


def period_ms(stamps: list[float], n: int) -> float:
    """Median of the last `n` step periods, from one timestamp per fetched row: the steady
    per-step cost of a loop, without one-off stalls (a restart, a collection) in the window."""
    return float(np.median(np.diff(stamps[-n - 1:]))) * 1e3


class StepClock(BaseSink):
    """A sink that timestamps every row: the Trainer's real step period, data included."""

    def __init__(self):
        self.stamps: list[float] = []

    def open(self, schema, meta, start_step) -> None:
        self.stamps = []

    def write(self, step: int, row: dict[str, Any]) -> None:
        self.stamps.append(time.perf_counter())


def genjax_steps(program: TrainProgram, batches) -> common.RunSteps:
    box = {"state": program.init_state(), "i": 0}

    def run(n: int):
        pending = None
        for _ in range(n):
            box["i"] += 1
            box["state"], metrics = program.step_fn(box["state"],
                                                    batches[box["i"] % len(batches)], [])
            if pending is not None:
                jax.device_get(pending)
            pending = metrics
        return pending

    return run


def trainer_loop(trainer: Trainer, clock: StepClock) -> Callable[[int], float]:
    def run(n: int) -> float:
        done = trainer.checkpointer.latest_step() or 0
        trainer.run(stop_after=done + n + SKIP + 1)
        return period_ms(clock.stamps, n)

    return run


def self_timed_rounds(variants: dict[str, Callable[[int], float]], rounds: int,
                      steps: int) -> dict[str, list[float]]:
    """Interleaved rounds of variants that time their own steps (loop level)."""
    names = list(variants)
    for name in names:
        variants[name](1)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(variants[name](steps))
    return out


def xla_cost(lowered) -> dict[str, float]:
    """XLA's own count of the compiled step's work (a cache hit: it is already compiled), a
    noise-free view of what the framework adds on the device."""
    compiled = lowered.compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {"xla_gflop": cost.get("flops", 0.0) / 1e9,
            "xla_gb": cost.get("bytes accessed", 0.0) / 1e9,
            "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20}


def measure_size(size: str, args, devices: Sequence[jax.Device], workdir: pathlib.Path,
                 info: dict[str, Any]) -> list[common.Row]:
    config = common.bench_config(size, 3, args.batch_size, args.seq_len)
    clock = StepClock()
    trainer = Trainer(config, workdir / size, hooks=[], sinks=[clock], devices=devices)
    program = trainer.program
    hand = Handwritten(program)
    batches = common.device_batches(program, 4)
    hand_batches = [hand.put({k: np.asarray(v) for k, v in b.items()}) for b in batches]
    xla = {"handwritten_step": xla_cost(hand.step.lower(hand.state, hand_batches[0])),
           "genjax_step": xla_cost(program.step_fn.lower(*program.abstract_args()))}
    xla.update(handwritten_loop=xla["handwritten_step"], genjax_trainer=xla["genjax_step"])
    step_samples = common.interleaved({
        "handwritten_step": hand.run_steps(hand_batches),
        "genjax_step": genjax_steps(program, batches),
    }, args.rounds, args.steps)
    loop_samples = self_timed_rounds({
        "handwritten_loop": hand.run_loop(program.data, config.train.batch_size),
        "genjax_trainer": trainer_loop(trainer, clock),
    }, args.loop_rounds, args.steps)
    tokens = config.train.batch_size * config.train.seq_len
    flops = train_step_flops(program.model_cfg, config.train.batch_size, config.train.seq_len)
    peak, source = peak_flops(devices[0])
    ms = {k: s.ms for k, s in step_samples.items()}
    ms.update({k: common.median(v) for k, v in loop_samples.items()})
    tax = {"handwritten_step": common.ratio(ms["genjax_step"], ms["handwritten_step"]) - 1,
           "handwritten_loop": common.ratio(ms["genjax_trainer"], ms["handwritten_loop"]) - 1}
    tax.update(genjax_step=tax["handwritten_step"], genjax_trainer=tax["handwritten_loop"])
    rows = []
    for name, step_ms in ms.items():
        timing = (step_samples[name].summary() if name in step_samples
                  else {"step_ms": step_ms, "spread": common.spread(loop_samples[name])})
        rows.append({"table": "throughput", "size": size,
                     "num_params": program.model_cfg.num_params(), "variant": name,
                     "batch_size": config.train.batch_size, "seq_len": config.train.seq_len,
                     **timing, **xla[name], "tokens_per_s": tokens / step_ms * 1e3,
                     "mfu": mfu(flops, step_ms / 1e3, peak * len(devices)),
                     "framework_tax": tax[name], "overhead_vs_no_hooks": 0.0,
                     "flop_bound": 0.0, "eval_alone": 0.0, "peak_flops": peak,
                     "peak_source": source, **info})
    return rows


COLUMNS = (
    ("size", "model", "s"), ("num_params", "params", ","), ("variant", "variant", "s"),
    ("step_ms", "step ms", ".2f"), ("cpu_ms", "cpu ms", ".2f"), ("spread", "IQR/med", ".2f"),
    ("tokens_per_s", "tokens/s", ",.0f"), ("mfu", "MFU", ".2%"),
    ("xla_gflop", "XLA GFLOP", ".4f"), ("xla_gb", "XLA GB", ".4f"), ("temp_mib", "temp MiB", ".1f"),
    ("framework_tax", "genjax tax", "+.1%"),
)


def main(argv: Sequence[str] | None = None) -> list[common.Row]:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="", help="model sizes, comma-separated "
                   f"(of {', '.join(common.SIZES)}; default: by --quick)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--loop-rounds", type=int, help="rounds of the loop-level pair")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (7 if args.quick else 21)
    args.steps = args.steps or (10 if args.quick else 20)
    args.loop_rounds = args.loop_rounds or (3 if args.quick else 7)
    sizes = args.sizes.split(",") if args.sizes else QUICK_SIZES if args.quick else FULL_SIZES
    devices, info = common.start(args)
    peak, source = peak_flops(devices[0])
    print(f"throughput on {common.describe_machine(info)}; peak {peak / 1e9:,.0f} GFLOP/s "
          f"per device ({source}); batch {args.batch_size} x {args.seq_len}", flush=True)
    rows: list[common.Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            size_rows = measure_size(size, args, devices, pathlib.Path(tmp), info)
            common.print_table(size_rows, COLUMNS)
            rows += size_rows
    common.print_table(rows, COLUMNS, "framework tax: genjax step / hand-written step - 1 "
                       "(step level), Trainer.run / hand-written loop - 1 (loop level)")
    common.write_rows(args.out, rows)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
