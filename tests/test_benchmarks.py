"""Smoke test of the benchmark scripts: each main() runs a tiny setting and writes its rows.

Only the shape of the output is checked (required keys, positive finite times), never a timing.
"""

import json
import math
import sys

from tests.conftest import CONFIGS, ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

# --default-malloc: the benchmarks' malloc setting is process-wide; keep pytest's as it is
TINY = ["--rounds", "1", "--steps", "1", "--devices", "1", "--default-malloc"]


def check_rows(path, required, time_keys=("step_ms",)):
    rows = json.loads(path.read_text())
    assert isinstance(rows, list) and rows
    for row in rows:
        missing = [k for k in required if k not in row]
        assert not missing, f"row {row.get('variant')} lacks {missing}"
        for key in time_keys:
            assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, row
    return rows


def test_hook_overhead(tmp_path):
    import hook_overhead

    out = tmp_path / "hooks.json"
    hook_overhead.main(["--grid", "micro:3:4", "--probe-grid", "micro:2", "--probe-items", "4",
                        "--every", "1", "--out", str(out), *TINY])
    rows = check_rows(out, ("variant", "step_ms"))
    hooks = [r for r in rows if r["table"] == "hooks"]
    assert {r["variant"] for r in hooks} == {
        "no_hooks", "fused", "fused_every_n", "two_programs", "separate_async",
        "separate_sync", "eval_alone", "attribution", "attribution_every10", "norms"}
    check_rows_subset(hooks, hook_overhead.REQUIRED)
    probes = [r for r in rows if r["table"] == "probe_sharing"]
    assert {r["variant"] for r in probes} == {"probe_shared", "probe_two_passes"}
    assert all(r["max_abs_diff"] < 1e-3 for r in probes)  # same scores both ways


def check_rows_subset(rows, required):
    for row in rows:
        for key in required:
            assert key in row, (row["variant"], key)
        assert all(isinstance(row[k], float) and math.isfinite(row[k])
                   for k in ("overhead_vs_no_hooks", "flop_bound", "eval_alone"))


def test_throughput(tmp_path):
    import throughput

    out = tmp_path / "throughput.json"
    throughput.main(["--sizes", "micro", "--batch-size", "8", "--seq-len", "16",
                     "--loop-rounds", "1", "--out", str(out), *TINY])
    rows = check_rows(out, throughput.REQUIRED, ("step_ms", "tokens_per_s", "mfu"))
    assert {r["variant"] for r in rows} == {"handwritten_step", "genjax_step",
                                            "handwritten_loop", "genjax_trainer"}


def test_stream_overhead(tmp_path):
    import stream_overhead

    out = tmp_path / "stream.json"
    stream_overhead.main(["--config", str(CONFIGS / "tiny.py"), "--rows", "8",
                          "--chunk-steps", "4", "--scalars", "20", "--items", "8",
                          "--out", str(out), *TINY])
    rows = check_rows(out, stream_overhead.REQUIRED, ("step_ms", "stream_ms", "wall_ms"))
    assert len(rows) == 4  # two loads, each chunk-aligned only and with timed flushes
    assert [r["live"] for r in rows] == [False, True, False, True]


def test_loader_throughput(tmp_path):
    import loader_throughput

    out = tmp_path / "loader.json"
    loader_throughput.main(["--tokens", "200000", "--batch", "8", "--seq-len", "64",
                            "--threads", "1,2", "--steps", "3", "--out", str(out)])
    rows = check_rows(out, ("threads", "tok_s", "need_tok_s", "margin"), time_keys=("tok_s",))
    assert [(r["format"].split()[0], r["threads"]) for r in rows] == [
        ("flat", 1), ("flat", 2), ("flat", 1), ("flat", 2), ("array_record", 1),
        ("array_record", 2)]
    assert all(r["steps"] >= 8 * r["threads"] for r in rows)
