"""What the eval hooks cost: fused into the train step, against their own compute, the FLOP
bound and the usual alternatives.

Variants, timed side by side in interleaved rounds on the same device-resident batches:
  a  no_hooks         the train step alone
  b  fused            genjax: every hook inside the jitted step, every step
  c  fused_every_n    the same hooks under `lax.cond`, run every N steps
  c2 two_programs     the same hooks every N steps under `hooks.gate=programs`: one compiled
                      step per set of hooks due together, chosen on the host (Levanter's way)
  d  separate_async   train step, then a separate jitted eval call, every step; both results
                      fetched one step late after `copy_to_host_async`
  e  separate_sync    the naive loop: separate eval call and a host read (`float()`) of every
                      value every step, as most trainers log
  f  eval_alone       the eval call by itself: the eval's own cost
  g  attribution      the attribution hook alone (`hooks.attribution`, per-domain held-out
                      gradients against the applied update) fused, every step
  g10 attribution_every10  the same at `every=10` (`lax.cond`)
  g10p attribution_every10_programs  g10 under `hooks.gate=programs`
  h  norms            the per-layer weight/grad/update norms hook alone, every step
The separate eval (d, e, f) runs exactly the fused hooks through `run_hooks`, so it does the
same eval forward passes. The fused hooks reuse the train step's per-token losses (train-domain
metrics, held-out gap); the separate call gets zeros in their place instead of recomputing
them, which spares it a forward pass: the comparison favours the alternatives.

Per grid point: flop_bound = analytic eval-forward FLOPs / train-step FLOPs (~ eval tokens / (3
train tokens)), eval_alone = f/a, and each variant's overhead t/a - 1. The attribution hook's
bound is one forward and one backward over its held-out rows, 3x their forward FLOPs (/10 at
every=10); the norms hook's is 0 (reductions only). The g10 throughput (a / g10) comes with a
95% interval (bootstrap over the rounds' paired ratios), and a blocking per-step timing splits
g10 and g10p into their gated steps and the others. Also: the held-out, memorization and probe
rows in one fused forward pass (`hooks.fuse_passes`, the default) against one pass per hook,
with the largest difference between their metrics. `--variants` times a subset (a always).

    python benchmarks/hook_overhead.py --quick --out hook_overhead.json
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import common
import jax
import jax.numpy as jnp
import numpy as np

from genjax.data import Data, build_data
from genjax.hooks.base import StepContext, run_hooks
from genjax.perf import forward_flops, train_step_flops
from genjax.train.trainer import TrainProgram

REQUIRED = ("variant", "step_ms", "overhead_vs_no_hooks", "flop_bound", "eval_alone")


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: model size, number of domains, probe items in total."""

    size: str
    domains: int
    items: int


QUICK_GRID = (Point("tiny", 3, 128), Point("quickstart", 3, 32), Point("quickstart", 9, 128))
FULL_GRID = tuple(Point(s, d, n) for s in ("quickstart", "small", "medium") for d in (3, 9)
                  for n in (32, 128, 512))
QUICK_FUSION = ("quickstart",)  # model sizes of the pass-fusion comparison
FULL_FUSION = ("quickstart", "small")


def hook_config(point: Point, every: int = 1, gate: str = "cond", batch_size: int = 16,
                seq_len: int = 64):
    """Every built-in hook on (as in the quickstart), probes sized to `point.items`."""
    c = common.bench_config(point.size, point.domains, batch_size, seq_len)
    for name in ("heldout", "train_domains", "probes", "memorization"):
        c.hooks[name].enabled = True
        c.hooks[name].every = every
    c.hooks.memorization.examples = 12
    c.hooks.gate = gate
    return c


def set_probe_items(config, data: Data, items: int) -> None:
    """Items per built-in family so that all families together hold about `items` items."""
    families = sum(len(d.probe_families()) for d in data.domains)
    config.hooks.probes.builtin_items = max(1, math.ceil(items / families))


ATTR_EVERY = 10  # the attribution hook's every-N variant (the target)
VARIANTS = ("no_hooks", "fused", "fused_every_n", "two_programs", "separate_async",
            "separate_sync", "eval_alone", "attribution", "attribution_every10",
            "attribution_every10_programs", "norms")


def gradient_config(point: Point, hook: str, every: int, gate: str = "cond",
                    batch_size: int = 16, seq_len: int = 64):
    """Only `hooks.<hook>` on (attribution: its defaults, 4 held-out rows per domain)."""
    c = common.bench_config(point.size, point.domains, batch_size, seq_len)
    for name in ("heldout", "train_domains", "probes", "memorization"):
        c.hooks[name].enabled = False
    c.hooks[hook].enabled = True
    c.hooks[hook].every = every
    c.hooks.gate = gate
    return c


def eval_forward_flops(program: TrainProgram) -> tuple[float, int]:
    """(analytic forward FLOPs, tokens) of every eval pass's rows, padding included."""
    flops, tokens = 0.0, 0
    for data in program.monitor.host_data:
        if isinstance(data, dict) and "pass" in data:  # a fused pass
            data = data["pass"]
        rows = data.get("inputs") if isinstance(data, dict) else None
        if rows is not None:
            n, t = np.shape(rows)
            flops += forward_flops(program.model_cfg, n, t)
            tokens += n * t
    return flops, tokens


class Bench:
    """Builds the programs of one grid point and the step loops of every variant."""

    def __init__(self, point: Point, every: int, devices: Sequence[jax.Device],
                 bare: dict[str, TrainProgram]):
        config = hook_config(point)
        config_n, config_p = hook_config(point, every), hook_config(point, every, "programs")
        data = build_data(config)
        for c in (config, config_n, config_p):
            set_probe_items(c, data, point.items)
        self.fused = TrainProgram(config, data=data, devices=devices)
        self.every_n = TrainProgram(config_n, data=data, devices=devices)
        self.every_n_programs = TrainProgram(config_p, data=data, devices=devices)
        if point.size not in bare:  # the hook-free step depends on the model size only
            bare[point.size] = TrainProgram(config, data=data, hooks=[], devices=devices)
        self.bare = bare[point.size]
        self.point, self.every = point, every
        self.batches = common.device_batches(self.bare, 4)
        self.hook_data = self.fused.place_hook_data()
        self.hook_data_n = self.every_n.place_hook_data()
        self.hook_data_p = self.every_n_programs.place_hook_data()
        hooks, apply_fn = self.fused.monitor.units, self.fused.apply_fn
        self.eval_fn = jax.jit(lambda params, data, ctx: run_hooks(hooks, params, apply_fn,
                                                                   data, ctx))
        zeros = jnp.zeros((config.train.batch_size, config.train.seq_len), jnp.float32)
        self.contexts = [  # the train-batch parts a separate eval call does not have
            lambda step, b=b: StepContext(step=step, token_loss_BxT=zeros,
                                          token_correct_BxT=zeros,
                                          loss_mask_BxT=b["loss_mask"], domain_B=b["domain"])
            for b in self.batches]
        model, c = self.fused.model_cfg, config.train
        self.train_flops = train_step_flops(model, c.batch_size, c.seq_len)
        self.eval_flops, self.eval_tokens = eval_forward_flops(self.fused)
        self.train_tokens = c.batch_size * c.seq_len
        self.probe_items = sum(len(h.items) for h in self.fused.hooks if h.name == "probes")
        # the gradient monitors, each alone (on the same data and model as the others)
        self.attribution = TrainProgram(gradient_config(point, "attribution", 1), data=data,
                                        devices=devices)
        self.attribution_n = TrainProgram(gradient_config(point, "attribution", ATTR_EVERY),
                                          data=data, devices=devices)
        self.attribution_p = TrainProgram(
            gradient_config(point, "attribution", ATTR_EVERY, "programs"), data=data,
            devices=devices)
        self.norms = TrainProgram(gradient_config(point, "norms", 1), data=data,
                                  devices=devices)
        self.attr_data = self.attribution.place_hook_data()
        self.attr_data_n = self.attribution_n.place_hook_data()
        self.attr_data_p = self.attribution_p.place_hook_data()
        self.norms_data = self.norms.place_hook_data()
        attr_flops, self.attr_tokens = eval_forward_flops(self.attribution)
        self.attr_bound = 3.0 * attr_flops / self.train_flops  # forward + backward

    def variants(self) -> dict[str, common.RunSteps]:
        b = self
        return {
            "no_hooks": b.loop(b.bare, []),
            "fused": b.loop(b.fused, b.hook_data),
            "fused_every_n": b.loop(b.every_n, b.hook_data_n),
            "two_programs": b.loop(b.every_n_programs, b.hook_data_p),
            "separate_async": b.separate(sync=False),
            "separate_sync": b.separate(sync=True),
            "eval_alone": b.eval_alone(),
            "attribution": b.loop(b.attribution, b.attr_data),
            "attribution_every10": b.loop(b.attribution_n, b.attr_data_n),
            "attribution_every10_programs": b.loop(b.attribution_p, b.attr_data_p),
            "norms": b.loop(b.norms, b.norms_data),
        }

    def temp_mb(self, names: Sequence[str]) -> dict[str, float]:
        """XLA's temporary buffer per executable of the variants `names` (already compiled: a
        cache hit). On CPU one above glibc's 32 MiB mmap ceiling is mapped and faulted in
        afresh on every call."""
        mb = lambda compiled: compiled.memory_analysis().temp_size_in_bytes / 2**20

        def step_mb(p: TrainProgram) -> float:  # hooks.gate=programs: its largest program's
            programs = p.compile_programs()
            return (max(map(mb, programs.values())) if programs
                    else mb(p.step_fn.lower(*p.abstract_args()).compile()))

        eval_mb = lambda: mb(self.eval_fn.lower(self.bare.init_state().params, self.hook_data,
                                                self.contexts[0](jnp.int32(0))).compile())
        temp = {"no_hooks": lambda: step_mb(self.bare), "fused": lambda: step_mb(self.fused),
                "fused_every_n": lambda: step_mb(self.every_n),
                "two_programs": lambda: step_mb(self.every_n_programs),
                "separate_async": lambda: max(step_mb(self.bare), eval_mb()),
                "separate_sync": lambda: max(step_mb(self.bare), eval_mb()),
                "eval_alone": eval_mb, "attribution": lambda: step_mb(self.attribution),
                "attribution_every10": lambda: step_mb(self.attribution_n),
                "attribution_every10_programs": lambda: step_mb(self.attribution_p),
                "norms": lambda: step_mb(self.norms)}
        return {name: temp[name]() for name in names}

    def _next_batch(self, box: dict[str, Any]) -> int:
        box["i"] += 1
        return box["i"] % len(self.batches)

    def loop(self, program: TrainProgram, hook_data: Any) -> common.RunSteps:
        """The genjax loop: dispatch step t (`program.step_at(t)`), then fetch step t-1's
        metrics."""
        box = {"state": program.init_state(), "i": 0, "step": 0}

        def run(n: int):
            pending = None
            for _ in range(n):
                batch = self.batches[self._next_batch(box)]
                step_fn = program.step_at(box["step"])
                box["state"], metrics = step_fn(box["state"], batch, hook_data)
                box["step"] += 1
                if pending is not None:
                    jax.device_get(pending)
                pending = metrics
            return pending

        return run

    def separate(self, sync: bool) -> common.RunSteps:
        """Train step, then the eval call on the new params; fetch late (async) or now."""
        box = {"state": self.bare.init_state(), "i": 0}

        def run(n: int):
            pending = None
            for _ in range(n):
                i = self._next_batch(box)
                box["state"], metrics = self.bare.step_fn(box["state"], self.batches[i], [])
                state = box["state"]
                evals = self.eval_fn(state.params, self.hook_data, self.contexts[i](state.step))
                if sync:  # what `loss = float(loss)` logging does every step
                    box["logged"] = {"train/loss": float(metrics["train/loss"]),
                                     **{k: np.asarray(v).tolist() for k, v in evals.items()}}
                    continue
                for leaf in jax.tree.leaves((metrics, evals)):
                    leaf.copy_to_host_async()
                if pending is not None:
                    jax.device_get(pending)
                pending = (metrics, evals)
            return pending

        return run

    def eval_alone(self) -> common.RunSteps:
        params = self.bare.init_state().params
        box = {"i": 0}

        def run(n: int):
            out = None
            for _ in range(n):
                i = self._next_batch(box)
                out = self.eval_fn(params, self.hook_data, self.contexts[i](jnp.int32(0)))
            return out

        return run


def gated_steps(bench: Bench, rounds: int) -> dict[str, float]:
    """Where g10's and g10p's time goes: median wall ms of single steps, each blocked on
    before the next is dispatched, of (a), (g), and of the gated steps and the other steps of
    g10 and g10p, with the throughput they imply."""
    runs = {"a": (bench.bare, []), "g": (bench.attribution, bench.attr_data),
            "g10": (bench.attribution_n, bench.attr_data_n),
            "g10p": (bench.attribution_p, bench.attr_data_p)}
    states = {name: program.init_state() for name, (program, _) in runs.items()}
    times: dict[str, list[float]] = {}
    for r in range(rounds + 1):  # round 0 warms up
        for name, (program, data) in runs.items():
            for step in range(r * ATTR_EVERY, (r + 1) * ATTR_EVERY):
                start = time.perf_counter()
                states[name], metrics = program.step_at(step)(states[name],
                                                              bench.batches[step % 4], data)
                jax.block_until_ready((states[name], metrics))
                ms = (time.perf_counter() - start) * 1e3
                key = name if name in ("a", "g") else (
                    f"{name}_gated" if step % ATTR_EVERY == 0 else f"{name}_other")
                if r:
                    times.setdefault(key, []).append(ms)
    out = {f"blocking_{k}_ms": common.median(v) for k, v in times.items()}
    for name in ("g10", "g10p"):
        out[f"{name}_implied_throughput"] = common.ratio(
            ATTR_EVERY * out["blocking_a_ms"], (ATTR_EVERY - 1) * out[f"blocking_{name}_other_ms"]
            + out[f"blocking_{name}_gated_ms"])
    return out


def measure_point(bench: Bench, rounds: int, steps: int, info: dict[str, Any],
                  names: Sequence[str]) -> tuple[list[common.Row], common.Row]:
    """Rows (one per variant in `names`) and the summary line of one grid point; what needs a
    variant that did not run is NaN."""
    period = math.lcm(bench.every, ATTR_EVERY)
    steps = math.ceil(steps / period) * period  # whole every-N periods per round
    variants = bench.variants()
    samples = common.interleaved({k: variants[k] for k in names}, rounds, steps)
    nan = float("nan")
    ms = {k: samples[k].ms if k in samples else nan for k in variants}
    cpu = {k: common.median(samples[k].cpu_ms) if k in samples else nan for k in variants}
    temp = bench.temp_mb(names)
    base = ms["no_hooks"]
    bound = bench.eval_flops / bench.train_flops
    eval_alone = common.ratio(ms["eval_alone"], base)
    p = bench.point
    point = {"size": p.size, "num_params": bench.fused.model_cfg.num_params(),
             "domains": p.domains, "probe_items": bench.probe_items,
             "train_tokens": bench.train_tokens, "eval_tokens": bench.eval_tokens,
             "every_n": bench.every}
    attr_n_bound = bench.attr_bound / ATTR_EVERY
    bounds = {"no_hooks": 0.0, "fused_every_n": bound / bench.every,
              "two_programs": bound / bench.every, "attribution": bench.attr_bound,
              "attribution_every10": attr_n_bound,
              "attribution_every10_programs": attr_n_bound, "norms": 0.0}
    sync_over_fused = common.ratio(ms["separate_sync"], ms["fused"])
    rows = []
    for name, s in samples.items():
        rows.append({"table": "hooks", **point, "variant": name, **s.summary(),
                     "temp_mib": temp[name],
                     "overhead_vs_no_hooks": common.ratio(ms[name], base) - 1.0,
                     "flop_bound": bounds.get(name, bound), "eval_alone": eval_alone,
                     "sync_over_fused": sync_over_fused, **info})
    over = {k: common.ratio(v, base) - 1.0 for k, v in ms.items()}
    summary = {**point, "no_hooks_ms": base, "flop_bound": bound, "eval_alone": eval_alone,
               **{f"{k}_over": v for k, v in over.items()},
               "sync_over_fused": sync_over_fused,
               "async_over_fused": common.ratio(ms["separate_async"], ms["fused"]),
               "fused_cpu_over": common.ratio(cpu["fused"], cpu["no_hooks"]) - 1,
               "eval_alone_cpu": common.ratio(cpu["eval_alone"], cpu["no_hooks"]),
               "fused_faults": (common.median(samples["fused"].page_faults)
                                if "fused" in samples else nan),
               "fused_temp": temp.get("fused", nan),
               "separate_temp": temp.get("separate_sync", nan),
               "attr_tokens": bench.attr_tokens, "attr_bound": bench.attr_bound,
               "attr_every10_bound": 1.0 / (1.0 + attr_n_bound),
               "attr_every10_throughput": common.ratio(base, ms["attribution_every10"]),
               "attr_every10_programs_throughput": common.ratio(
                   base, ms["attribution_every10_programs"]),
               "attr_cpu_over": common.ratio(cpu["attribution"], cpu["no_hooks"]) - 1}
    if "attribution_every10" in samples:
        summary["attr_every10_paired"], summary["attr_every10_lo"], \
            summary["attr_every10_hi"] = common.paired_ratio(
                samples["no_hooks"].wall_ms, samples["attribution_every10"].wall_ms)
        summary.update(gated_steps(bench, rounds))
    checks = {"target_fused": (("fused", "eval_alone"),
                               lambda: over["fused"] <= eval_alone + 0.03),
              "target_order": (("fused", "separate_async", "separate_sync"),
                               lambda: ms["fused"] <= min(ms["separate_async"],
                                                          ms["separate_sync"])),
              "target_fused_cpu": (("fused", "eval_alone"), lambda: summary["fused_cpu_over"]
                                   <= summary["eval_alone_cpu"] + 0.03),
              "target_attribution": (("attribution",),
                                     lambda: over["attribution"] <= bench.attr_bound + 0.03),
              "target_attr_every10": (("attribution_every10",),
                                      lambda: summary["attr_every10_throughput"] >= 0.9)}
    for key, (needs, check) in checks.items():
        summary[key] = check() if all(n in samples for n in needs) else None
    return rows, summary


SUMMARY_COLUMNS = (
    ("size", "model", "s"), ("num_params", "params", ","), ("domains", "D", "d"),
    ("probe_items", "items", "d"), ("eval_tokens", "eval tok", "d"),
    ("no_hooks_ms", "a ms", ".1f"), ("flop_bound", "FLOP bound", ".2f"),
    ("eval_alone", "f/a", ".2f"), ("fused_over", "b", ".1%"),
    ("fused_every_n_over", "c cond", ".1%"), ("two_programs_over", "c2 2prog", ".1%"),
    ("separate_async_over", "d", ".1%"), ("separate_sync_over", "e", ".1%"),
    ("sync_over_fused", "e/b", ".2f"), ("async_over_fused", "d/b", ".2f"),
    ("eval_alone_cpu", "f/a cpu", ".2f"), ("fused_cpu_over", "b cpu", ".1%"),
    ("fused_faults", "b faults", ".0f"), ("fused_temp", "b temp MiB", ".1f"),
    ("separate_temp", "e temp MiB", ".1f"), ("target_fused", "b<=f/a+3pp", ""),
    ("target_fused_cpu", "cpu: b<=f/a+3pp", ""), ("target_order", "b<=d,e", ""),
)

GRADIENT_COLUMNS = (
    ("size", "model", "s"), ("domains", "D", "d"), ("attr_tokens", "attr tok", "d"),
    ("no_hooks_ms", "a ms", ".1f"), ("attr_bound", "attr FLOP bound", ".2f"),
    ("attribution_over", "g attr", ".1%"), ("attr_cpu_over", "g cpu", ".1%"),
    ("attribution_every10_over", "g10 every 10", ".1%"),
    ("attr_every10_throughput", "g10 throughput", ".3f"),
    ("attr_every10_paired", "paired", ".3f"), ("attr_every10_lo", "95% lo", ".3f"),
    ("attr_every10_hi", "95% hi", ".3f"), ("attr_every10_bound", "FLOP bound thr", ".3f"),
    ("attr_every10_programs_throughput", "g10p throughput", ".3f"),
    ("norms_over", "h norms", ".1%"), ("fused_over", "b fused", ".1%"),
    ("target_attribution", "g<=bound+3pp", ""), ("target_attr_every10", "g10>=0.9", ""),
)

GATED_COLUMNS = (
    ("size", "model", "s"), ("domains", "D", "d"), ("blocking_a_ms", "a ms", ".2f"),
    ("blocking_g_ms", "g ms", ".2f"), ("blocking_g10_gated_ms", "g10 gated ms", ".2f"),
    ("blocking_g10_other_ms", "g10 other ms", ".2f"),
    ("g10_implied_throughput", "g10 implied thr", ".3f"),
    ("blocking_g10p_gated_ms", "g10p gated ms", ".2f"),
    ("blocking_g10p_other_ms", "g10p other ms", ".2f"),
    ("g10p_implied_throughput", "g10p implied thr", ".3f"),
)


# ------------------------------------------------------------------------- pass fusion
def pass_fusion(size: str, items: int, rounds: int, steps: int, devices: Sequence[jax.Device],
                info: dict[str, Any]) -> list[common.Row]:
    """The held-out, memorization and probe rows in one forward pass against one pass per
    hook: the eval alone (as f), the same params and train-batch context for both."""
    config = hook_config(Point(size, 3, items))
    data = build_data(config)
    set_probe_items(config, data, items)
    programs = {}
    for name, fuse in (("fused_pass", "on"), ("pass_per_hook", "off")):
        config.hooks.fuse_passes = fuse
        programs[name] = TrainProgram(config, data=data, devices=devices)
    params = programs["fused_pass"].init_state().params
    batch = common.device_batches(programs["fused_pass"], 1)[0]
    zeros = jnp.zeros(batch["loss_mask"].shape, jnp.float32)
    ctx = StepContext(step=jnp.int32(0), token_loss_BxT=zeros, token_correct_BxT=zeros,
                      loss_mask_BxT=batch["loss_mask"], domain_B=batch["domain"])
    fns, outs = {}, {}
    for name, program in programs.items():
        data_on_device, monitor = program.place_hook_data(), program.monitor
        fn = jax.jit(lambda p, d, c, m=monitor, a=program.apply_fn: m(p, a, d, c))
        fns[name] = lambda n, fn=fn, d=data_on_device: [fn(params, d, ctx) for _ in range(n)][-1]
        outs[name] = jax.device_get(fn(params, data_on_device, ctx))
    diff = max(float(np.nanmax(np.abs(np.asarray(outs["fused_pass"][k]) -
                                      np.asarray(outs["pass_per_hook"][k])), initial=0.0))
               for k in outs["fused_pass"])
    samples = common.interleaved(fns, rounds, steps)
    (fused_flops, fused_tokens), (per_hook_flops, per_hook_tokens) = (
        eval_forward_flops(programs[k]) for k in ("fused_pass", "pass_per_hook"))
    fused = [u.name for u in programs["fused_pass"].monitor.units if "+" in u.name]
    common_row = {"table": "pass_fusion", "size": size,
                  "num_params": programs["fused_pass"].model_cfg.num_params(),
                  "fused_units": ", ".join(fused) or "none",
                  "fused_tokens": fused_tokens, "per_hook_tokens": per_hook_tokens,
                  "flop_ratio": common.ratio(fused_flops, per_hook_flops),
                  "time_ratio": common.ratio(samples["fused_pass"].ms,
                                             samples["pass_per_hook"].ms),
                  "max_abs_diff": diff, **info}
    return [{**common_row, "variant": name, **s.summary()} for name, s in samples.items()]


FUSION_COLUMNS = (
    ("size", "model", "s"), ("fused_units", "fused", "s"), ("per_hook_tokens", "tokens", "d"),
    ("fused_tokens", "fused tokens", "d"), ("per_hook_ms", "per hook ms", ".2f"),
    ("fused_ms", "fused ms", ".2f"), ("flop_ratio", "FLOP ratio", ".2f"),
    ("time_ratio", "time ratio", ".2f"), ("max_abs_diff", "max |diff|", ".1e"),
)


def main(argv: Sequence[str] | None = None) -> list[common.Row]:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--grid", default="",
                   help="points size:domains:items, comma-separated (default: by --quick)")
    p.add_argument("--fusion-sizes", default="",
                   help="model sizes of the pass-fusion comparison, comma-separated")
    p.add_argument("--fusion-items", type=int, default=128, help="probe items there")
    p.add_argument("--every", type=int, default=0, help="N of the every-N variants")
    p.add_argument("--variants", default="",
                   help="variants to time, comma-separated (default: all; no_hooks always)")
    args = p.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    steps = args.steps or (5 if args.quick else 10)
    every = args.every or (5 if args.quick else 10)
    grid = ([Point(s, int(d), int(n)) for s, d, n in
             (x.split(":") for x in args.grid.split(","))] if args.grid
            else QUICK_GRID if args.quick else FULL_GRID)
    fusion_sizes = (args.fusion_sizes.split(",") if args.fusion_sizes
                    else QUICK_FUSION if args.quick else FULL_FUSION)
    if fusion_sizes == ["none"]:
        fusion_sizes = []
    names = ["no_hooks"] + [v for v in (args.variants.split(",") if args.variants
                                        else VARIANTS) if v and v != "no_hooks"]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    devices, info = common.start(args)
    print(f"hook overhead on {common.describe_machine(info)}; {rounds} rounds x {steps}+ "
          f"steps per variant, every_n={every}", flush=True)
    rows, summaries, bare = [], [], {}
    for point in grid:
        bench = Bench(point, every, devices, bare)
        point_rows, summary = measure_point(bench, rounds, steps, info, names)
        rows += point_rows
        summaries.append(summary)
        common.print_table([summary], SUMMARY_COLUMNS[:9] + SUMMARY_COLUMNS[12:14])
        common.print_table([summary], GRADIENT_COLUMNS)
    common.print_table(summaries, SUMMARY_COLUMNS,
                       "step-time overhead vs no hooks (a); b fused, c every-N (lax.cond), "
                       "c2 every-N (two programs), d separate+async, e separate+float()")
    common.print_table(summaries, GRADIENT_COLUMNS,
                       "gradient monitors alone vs no hooks (a): g attribution every step, "
                       f"g10 every {ATTR_EVERY} (throughput a/g10; paired: median of the "
                       "rounds' ratios, 95% interval), g10p every 10 by two programs, h norms "
                       "every step")
    gated = [s for s in summaries if "g10_implied_throughput" in s]
    if gated:
        common.print_table(gated, GATED_COLUMNS, "single steps, each blocked on: the gated "
                           "steps of g10 (lax.cond) and g10p (programs) against their others "
                           "(implied throughput a / g10)")
    fusion_rows = []
    for size in fusion_sizes:
        fusion_rows += pass_fusion(size, args.fusion_items, rounds, steps, devices, info)
    rows += fusion_rows
    pairs = [dict(a, fused_ms=a["step_ms"], per_hook_ms=b["step_ms"])
             for a, b in zip(fusion_rows[::2], fusion_rows[1::2])]
    common.print_table(pairs, FUSION_COLUMNS, "eval rows: one fused pass vs one pass per hook")
    common.write_rows(args.out, rows)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

