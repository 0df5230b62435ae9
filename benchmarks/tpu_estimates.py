"""TPU-estimated cost of genjax's in-step hooks for the accelerator presets, from a CPU host.

Compiles each preset for each TPU slice twice (with its hooks, and with none) through
`genjax.tpu.compile` and prints what the hooks add per chip per step: FLOPs, HBM bytes
accessed and estimated step time (XLA's cost model: estimates, not measurements), plus
memory and the implied MFU. Needs libtpu (`pip install -e ".[tpu]"`); each big compile takes
minutes on a small CPU host.

    python benchmarks/tpu_estimates.py [--runs gpt2_124m@v5e:4x4,llama_1b@v5p-8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from genjax.config import load
from genjax.tpu.compile import CompileError, GiB, compile_report, parse_topology

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
DEFAULT_RUNS = "gpt2_124m@v5e:4x4,gpt2_124m@v5p-8,llama_1b@v5p-8,llama_1b@v5e:4x4"


def estimate(preset: str, topology: str) -> dict:
    """One preset on one slice: the compile report, or the reason it cannot run there."""
    config = load(CONFIGS / f"{preset}.py")
    start = time.perf_counter()
    try:
        report = compile_report(config, parse_topology(topology))
    except CompileError as e:
        return {"preset": preset, "topology": topology, "error": str(e)}
    report["preset"] = preset
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    return report


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1e3 * x:.1f}"


def table(results: list[dict]) -> str:
    """Markdown table: one row per (preset, slice)."""
    head = ("| preset | slice | chips | mesh (data x fsdp x tensor) | HBM used / chip | "
            "est. step ms, hooks | est. step ms, no hooks | hooks' FLOPs | hooks' bytes | "
            "hooks' time | est. MFU, hooks | est. MFU, no hooks |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['topology']} | | | {r['error']} |"
                         + " |" * 7)
            continue
        m, mem, h = r["mesh"], r["memory_per_chip"], r["hooks"]
        w, wo = r["with_hooks"], r.get("without_hooks", {})
        lines.append(
            f"| {r['preset']} | {r['topology']} ({r['friendly_name']}) | {r['chips']} | "
            f"{m['data']} x {m['fsdp']} x {m['tensor']} | "
            f"{mem['total'] / GiB:.2f} / {mem['hbm'] / GiB:g} GiB | "
            f"{_ms(w['est_step_seconds'])} | {_ms(wo.get('est_step_seconds'))} | "
            f"{_pct(h['est_flops_share'])} | {_pct(h['est_bytes_accessed_share'])} | "
            f"{_pct(h['est_step_time_share'])} | {_pct(w['est_mfu'])} | "
            f"{_pct(wo.get('est_mfu'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=DEFAULT_RUNS,
                        help="comma-separated PRESET@TOPOLOGY (presets are configs/NAME.py)")
    parser.add_argument("--out", default="", help="write every report as JSON here")
    args = parser.parse_args(argv)
    results = []
    for run in args.runs.split(","):
        preset, topology = run.strip().split("@")
        print(f"compiling {preset} for {topology} ...", file=sys.stderr, flush=True)
        results.append(estimate(preset, topology))
    print(table(results))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
