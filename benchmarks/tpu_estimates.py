"""TPU estimates of the accelerator presets' train step, hooks off and on, from a CPU host.

Compiles each preset for each TPU slice with its hooks and with none through
`genjax.tpu.compile` (`compile_report`) and prints per chip per step: memory, estimated step
time and MFU with hooks off and on, the hooks' shares of memory, FLOPs and time, compile
time of the program that runs, and the analytic FLOP bound (model FLOPs / peak). "Estimated"
is XLA's cost model on the step compiled with its loops unrolled, plus the splash kernels'
analytic FLOPs at `--kernel_efficiency` of peak (an assumption): estimates, not measurements.
Needs libtpu (`pip install -e ".[tpu]"`); each big compile takes minutes on a small CPU host.

    python benchmarks/tpu_estimates.py [--runs gpt2_124m@v5e:4x4,llama_1b@v5p-8] [--out FILE]
    python benchmarks/tpu_estimates.py --runs llama_1b@v5p-8+model.n_layers=32  # overrides
    python benchmarks/tpu_estimates.py --quick   # one tiny splash config, seconds
    python benchmarks/tpu_estimates.py --no_estimates --runs llama_1b@v5p-8,\
        llama_1b@v5p-8+model.n_layers=32        # compile time vs depth, memory
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from genjax.config import load
from genjax.tpu.compile import (
    DEFAULT_KERNEL_EFFICIENCY,
    CompileError,
    GiB,
    compile_report,
    parse_topology,
)

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
DEFAULT_RUNS = ("gpt2_124m@v5e:4x4,gpt2_124m@v5p-8,llama_1b@v5p-8,llama_1b@v5e-256,"
                "llama_1b@v5e:4x4")
# tiny with every hook, bf16 splash attention on 128-token rows and scanned layers
QUICK_RUNS = ("tiny@v5e:2x2+model.attention=splash+model.compute_dtype=bfloat16"
              "+train.seq_len=128+model.scan_layers=True+model.loss_chunk=64"
              "+mesh.fsdp=2+mesh.tensor=2+hooks.heldout.enabled=True"
              "+hooks.train_domains.enabled=True+hooks.probes.enabled=True"
              "+hooks.memorization.enabled=True")


def _override(config, key: str, text: str) -> None:
    """config[key] = text, parsed as the current value's type (dotted keys)."""
    *path, last = key.split(".")
    node = config
    for part in path:
        node = node[part]
    old = node[last]
    if isinstance(old, bool):
        value = text.lower() in ("1", "true", "yes")
    elif isinstance(old, (int, float)):
        value = type(old)(text)
    else:
        value = text
    node[last] = value


def parse_run(run: str) -> tuple[str, str, list[tuple[str, str]]]:
    """"PRESET@TOPOLOGY[+KEY=VALUE...]" -> (preset, topology, overrides)."""
    head, *sets = run.strip().split("+")
    preset, topology = head.split("@")
    return preset, topology, [tuple(s.split("=", 1)) for s in sets]


def estimate(preset: str, topology: str, overrides=(),
             kernel_efficiency: float = DEFAULT_KERNEL_EFFICIENCY,
             estimates: bool = True) -> dict:
    """One preset on one slice: the compile report, or the reason it cannot run there."""
    config = load(CONFIGS / f"{preset}.py")
    for key, value in overrides:
        _override(config, key, value)
    label = "+".join([preset, *(f"{k}={v}" for k, v in overrides)])
    start = time.perf_counter()
    try:
        report = compile_report(config, parse_topology(topology),
                                kernel_efficiency=kernel_efficiency, estimates=estimates)
    except CompileError as e:
        return {"preset": label, "topology": topology, "error": str(e)}
    report["preset"] = label
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    return report


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _s(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2f} s" if x >= 1 else f"{1e3 * x:.0f} ms")


def table(results: list[dict]) -> str:
    """Markdown table: one row per (preset, slice)."""
    head = ("| preset | slice | mesh (data x fsdp x tensor) | HBM / chip, hooks off | "
            "HBM / chip, hooks on | est. step, off | est. step, on | est. MFU, off | "
            "est. MFU, on | FLOP bound (model FLOPs / peak) | of est. step: splash kernels "
            "(assumed) | hooks' share: memory / FLOPs / est. time | compile s, off / on |")
    lines = [head, "|" + "---|" * (head.count(" | ") + 1)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['topology']} | {r['error']} |" + " |" * 10)
            continue
        m, mem, h = r["mesh"], r["memory_per_chip"], r["hooks"]
        w = r["with_hooks"]
        wo = r.get("without_hooks", w)
        hbm = mem["hbm"] / GiB
        if w["loops_in_program"] and not w["estimate_compiled_unrolled"]:  # --no_estimates
            w, wo = ({k: (None if k.startswith("est_") else v) for k, v in d.items()}
                     for d in (w, wo))
            h = {**h, "est_flops_share": None, "est_step_time_share": None}
        lines.append(
            f"| {r['preset']} | {r['topology']} ({r['friendly_name']}) | "
            f"{m['data']} x {m['fsdp']} x {m['tensor']} | "
            f"{mem['total_without_hooks'] / GiB:.2f} of {hbm:g} GiB | "
            f"{mem['total'] / GiB:.2f} of {hbm:g} GiB | "
            f"{_s(wo['est_step_seconds'])} | {_s(w['est_step_seconds'])} | "
            f"{_pct(wo['est_mfu'])} | {_pct(w['est_mfu'])} | "
            f"{_s(r['model']['model_seconds_at_peak'])} | "
            f"{_s(wo['est_kernel_seconds'])} / {_s(w['est_kernel_seconds'])} | "
            f"{_pct(h['memory_share'])} / {_pct(h['est_flops_share'])} / "
            f"{_pct(h['est_step_time_share'])} | "
            f"{wo['compile_seconds']:.0f} / {w['compile_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=DEFAULT_RUNS,
                        help="comma-separated PRESET@TOPOLOGY (presets are configs/NAME.py)")
    parser.add_argument("--out", default="", help="write every report as JSON here")
    parser.add_argument("--quick", action="store_true",
                        help="only a tiny splash config with every hook (seconds)")
    parser.add_argument("--kernel_efficiency", type=float, default=DEFAULT_KERNEL_EFFICIENCY,
                        help="fraction of peak assumed for the splash kernels' FLOPs")
    parser.add_argument("--no_estimates", action="store_true",
                        help="memory and compile time only: skip the unrolled estimate "
                             "compiles (their FLOPs, bytes and times count loop bodies once)")
    args = parser.parse_args(argv)
    results = []
    for run in (QUICK_RUNS if args.quick else args.runs).split(","):
        preset, topology, overrides = parse_run(run)
        print(f"compiling {run.strip()} ...", file=sys.stderr, flush=True)
        results.append(estimate(preset, topology, overrides, args.kernel_efficiency,
                                not args.no_estimates))
    print(table(results))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
