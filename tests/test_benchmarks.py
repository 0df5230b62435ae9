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
    hook_overhead.main(["--grid", "micro:3:4", "--fusion-sizes", "micro", "--fusion-items",
                        "4", "--every", "1", "--out", str(out), *TINY])
    rows = check_rows(out, ("variant", "step_ms"))
    hooks = [r for r in rows if r["table"] == "hooks"]
    assert {r["variant"] for r in hooks} == set(hook_overhead.VARIANTS) == {
        "no_hooks", "fused", "fused_every_n", "two_programs", "separate_async",
        "separate_sync", "eval_alone", "attribution", "attribution_every10",
        "attribution_every10_programs", "norms"}
    check_rows_subset(hooks, hook_overhead.REQUIRED)
    fusion = [r for r in rows if r["table"] == "pass_fusion"]
    assert {r["variant"] for r in fusion} == {"fused_pass", "pass_per_hook"}
    assert fusion[0]["fused_units"] == "heldout+probes+memorization"
    print("fused vs per-hook max |diff|", fusion[0]["max_abs_diff"])
    assert all(r["max_abs_diff"] < 1e-6 for r in fusion)  # the same metrics (measured: 0.0)
    # a subset of the variants, no fusion table: what needs the others is left out
    subset = hook_overhead.main(["--grid", "micro:3:4", "--fusion-sizes", "none", "--variants",
                                 "attribution_every10", *TINY])
    assert [r["variant"] for r in subset] == ["no_hooks", "attribution_every10"]
    assert math.isnan(subset[0]["eval_alone"])  # no eval_alone variant ran


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


def test_analysis_noise_recall_bound_is_the_exact_normal_probability():
    """The Monte-Carlo recall bound equals the probability computed from the exact joint law
    of the two segment means (a bivariate normal: AR(1) covariance phi^|i-j|), 4 s ramp and
    step at phi 0.995, within three Monte-Carlo standard errors."""
    import analysis_noise as an
    import numpy as np
    from scipy.stats import multivariate_normal

    from genjax.analysis.regimes import DEFAULT_FLOOR

    phi, size, draws = 0.995, 4, 4000
    var = an.S**2 * (1 + 1 / an.ITEMS)  # drift plus the mean of the items' noise
    i = np.arange(an.STEPS)
    cov_TxT = var * phi ** np.abs(i[:, None] - i[None, :])
    for ramp in (1, an.RAMP):
        w = np.zeros((2, an.STEPS))  # the two segment means as weights over rows
        w[0, :an.HOP_AT] = 1 / an.HOP_AT
        w[1, an.HOP_AT + ramp - 1:] = 1 / (an.STEPS - an.HOP_AT - ramp + 1)
        cov = w @ cov_TxT @ w.T
        sd = np.sqrt(np.diag(cov))
        half = size * an.S / 2
        # decided on both sides: A < -max(z sd_A, floor) and B > max(z sd_B, floor)
        lim = np.maximum(1.959964 * sd, DEFAULT_FLOOR)
        mvn = multivariate_normal(mean=[-half, -half], cov=cov * [[1, -1], [-1, 1]])
        exact = float(mvn.cdf([-lim[0], -lim[1]]))  # (A, -B) both below their limits
        got = an.recall_bound(phi, size, ramp, draws=draws)
        se = math.sqrt(exact * (1 - exact) / draws)
        assert abs(got - exact) < 3 * se, (ramp, got, exact, se)
        assert 0.8 < exact < 0.92, exact  # the README's 86-87%: below the 95% target
