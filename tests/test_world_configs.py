"""The generalization world's configs, trained in full: the known transitions really happen.

Slow (minutes each on 2 CPU cores); run with `pytest -m slow tests/test_world_configs.py`.
Seeds are fixed, so each run is the one recorded in its config's docstring.
"""

import jax
import numpy as np
import pytest

from genjax.analysis.changepoints import change_points
from genjax.config import load
from genjax.stream.sinks import MemorySink
from genjax.train.trainer import Trainer
from tests.conftest import CONFIGS

pytestmark = pytest.mark.slow


def train(name: str, workdir) -> tuple[MemorySink, Trainer]:
    config = load(CONFIGS / f"{name}.py")
    config.checkpoint.every = config.train.steps  # only the final checkpoint
    sink = MemorySink()
    trainer = Trainer(config, workdir, sinks=[sink], devices=jax.devices()[:1])
    trainer.run()
    return sink, trainer


def analysed(sink: MemorySink, trainer: Trainer) -> dict:
    """`genjax analyze`'s numbers for the rows in the sink (defaults: the run's settings)."""
    from genjax.analysis.analyze import analyze
    from genjax.stream.store import Run, Series

    steps = np.array(sorted(sink.rows))
    metrics = {s.name: Series(sink.series(s.name), tuple(s.dims),
                              {k: list(v) for k, v in s.labels.items()}, s.description, s.unit)
               for s in trainer.program.schema}
    run = Run(steps, np.array([int(sink.rows[t]["tokens_seen"]) for t in steps]), metrics,
              {"domains": trainer.data.names})
    return analyze(run)


def hops_of(result: dict, family: str) -> list[dict]:
    return [h for h in result["hops"] if h["family"] == family]


KNOWN_MISS = ("known miss (issue 18): a regime that lies mostly inside a fitted ramp is too "
              "short to be decided, so `genjax analyze` reports no hop for it")


def expect_hops(missed: list) -> None:
    """The training curves passed; a hop `genjax analyze` misses is reported as xfail,
    naming what was missed (arith/successive's brief pattern-matching dip, measured)."""
    if missed:
        pytest.xfail(f"{KNOWN_MISS}: {missed}")


def labelled(sink: MemorySink, trainer: Trainer, name: str, label: str) -> np.ndarray:
    """[steps] series of one label (domain or family) of a 1-D metric."""
    spec = next(s for s in trainer.program.schema if s.name == name)
    return sink.series(name)[:, spec.labels[spec.dims[0]].index(label)]


def first_step(values: np.ndarray, threshold: float, start: int = 0, below: bool = False) -> int:
    """First step >= `start` whose value reaches `threshold` (from below, or with below=True
    falls to it); NaN rows (the hook did not run) never count."""
    v = values[start:]
    hits = np.flatnonzero(v <= threshold if below else v >= threshold)  # NaN compares False
    assert hits.size, f"never {'fell to' if below else 'reached'} {threshold} after {start}"
    return start + int(hits[0])


def smoothed(values: np.ndarray, rows: int = 5) -> np.ndarray:
    """Trailing mean over the last `rows` rows where the hook ran (NaN elsewhere)."""
    out = np.full(values.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(values))
    csum = np.concatenate([[0.0], np.cumsum(values[idx])])
    for j, i in enumerate(idx):
        k = min(rows, j + 1)
        out[i] = (csum[j + 1] - csum[j + 1 - k]) / k
    return out


def window(values: np.ndarray, a: int, b: int) -> float:
    """Mean over steps [a, b) of the rows where the hook ran."""
    return float(np.nanmean(values[a:b]))


def test_grokking(tmp_path):
    sink, trainer = train("grokking", tmp_path)
    train_acc = labelled(sink, trainer, "train_domains/accuracy", "mod")
    held_acc = labelled(sink, trainer, "heldout/accuracy", "mod")
    memorized = first_step(train_acc, 0.95)
    grokked = first_step(held_acc, 0.5)
    assert grokked > memorized + 400 and grokked > 3 * memorized, (memorized, grokked)
    before = held_acc[: memorized + 100]
    assert np.nanmax(before) < 0.1  # memorized, not generalized
    assert np.nanmean(held_acc[-200:]) > 0.8
    points = change_points(held_acc)  # what `genjax analyze` reports for this series
    assert any(abs(p - grokked) <= 150 for p in points), (points, grokked)


def test_icl_vs_iwl(tmp_path):
    sink, trainer = train("icl_vs_iwl", tmp_path)
    margin = {f: labelled(sink, trainer, "probes/soft_margin", f"icl/{f}")
              for f in ("icl_novel", "iwl", "icl_vs_iwl")}
    accuracy = {f: labelled(sink, trainer, "probes/accuracy", f"icl/{f}") for f in margin}
    icl = smoothed(margin["icl_novel"])
    # the induction-head phase change: after a plateau at chance, abrupt
    onset = first_step(icl, 0.2)
    done = first_step(icl, 0.6, onset)
    assert onset >= 200 and done - onset <= 150, (onset, done)
    assert window(accuracy["icl_novel"], 0, onset - 50) < 0.65
    assert window(accuracy["icl_novel"], len(icl) - 100, len(icl)) > 0.9
    points = change_points(margin["icl_novel"])
    assert any(onset - 50 <= p <= done + 50 for p in points), (points, onset, done)
    # which wins when: the weights before the phase change, the context after it
    assert window(accuracy["iwl"], 150, onset) > 0.7  # IWL is learned first
    assert window(margin["icl_vs_iwl"], 150, onset - 50) < -0.1
    assert window(margin["icl_vs_iwl"], len(icl) - 100, len(icl)) > 0.5
    flip = first_step(smoothed(margin["icl_vs_iwl"]), 0.0, 150)
    assert abs(flip - onset) <= 100, (flip, onset)
    # `genjax analyze`: the weights' regime hops to the context's at the phase change
    hops = hops_of(analysed(sink, trainer), "icl/icl_vs_iwl")
    if [h["direction"] for h in hops] != ["to_generalizing"] or abs(hops[0]["step"] - flip) > 60:
        expect_hops([("icl/icl_vs_iwl", hops, flip)])


def test_pattern_vs_compute(tmp_path):
    sink, trainer = train("pattern_vs_compute", tmp_path)
    families = ("arith/repeat", "arith/successive", "arith/flipped")
    margin = {f: smoothed(labelled(sink, trainer, "probes/soft_margin", f)) for f in families}
    end = len(margin["arith/repeat"])
    result, missed = analysed(sink, trainer), []
    # (1) the shallow patterns first, (2) then an abrupt hop to the computation
    for family in ("arith/repeat", "arith/successive"):
        pattern = first_step(margin[family], -0.2, below=True)
        compute = first_step(margin[family], 0.3, pattern)
        assert pattern < 250 and compute - pattern <= 150, (family, pattern, compute)
        assert window(margin[family], end - 100, end) > 0.7, family
        hops = hops_of(result, family)
        if [h["direction"] for h in hops] != ["to_generalizing"] or not (
                pattern <= hops[0]["step"] <= compute + 20):
            missed.append((family, hops, pattern, compute))
    # (3) flipped labels: the computation wins until the flip is learned, then the context
    flipped = margin["arith/flipped"]
    computed = first_step(flipped, 0.3)
    hop = first_step(flipped, -0.3, computed, below=True)
    assert hop - computed >= 150, (computed, hop)
    assert window(flipped, end - 100, end) < -0.6
    points = change_points(labelled(sink, trainer, "probes/soft_margin", "arith/flipped"))
    assert any(abs(p - hop) <= 60 for p in points), (points, hop)
    hops = hops_of(result, "arith/flipped")
    if [h["direction"] for h in hops][-1:] != ["to_pattern_matching"] or abs(
            hops[-1]["step"] - hop) > 60:
        missed.append(("arith/flipped", hops, hop))
    expect_hops(missed)
