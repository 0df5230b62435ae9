"""Every analysis path on small synthetic streams: one family, one domain, one item, no probes;
inputs are not change-point tested; rates are per step; flags merge over stored settings."""

import json

import numpy as np
import pytest

from genjax.analysis.analyze import AnalysisOptions, analyze
from genjax.analysis.report import write_report
from genjax.stream.store import Run, Series


def make_run(steps: np.ndarray, families: dict[str, np.ndarray] | None = None,
             domains: tuple[str, ...] = ("d0",), config: dict | None = None) -> Run:
    """A Run with train/lr (a schedule), train/loss (a decay), per-domain losses and, per
    family, per-item margins [S, N] (NaN rows: the probes did not run)."""
    rng = np.random.default_rng(0)
    s = len(steps)
    lr = np.minimum(1.0, (steps + 1) / 20) * 3e-3
    metrics = {
        "train/lr": Series(lr, (), {}, unit=""),
        "train/loss": Series(3 + 2 * np.exp(-steps / 50) + rng.normal(0, 0.02, s), (), {}),
        "train_domains/loss": Series(2 + rng.normal(0, 0.05, (s, len(domains))), ("domain",),
                                     {"domain": list(domains)}),
        "train_domains/tokens": Series(np.full((s, len(domains)), 64.0), ("domain",),
                                       {"domain": list(domains)}, unit="tokens"),
    }
    if families:
        names = list(families)
        soft = np.stack([families[f].mean(axis=1) for f in names], axis=1)
        items = np.concatenate([families[f] for f in names], axis=1)
        labels = [f"{f}/{i}" for f in names for i in range(families[f].shape[1])]
        metrics["probes/soft_margin"] = Series(soft, ("family",), {"family": names})
        metrics["probes/item_margin"] = Series(items, ("item",), {"item": labels})
    attrs = {"domains": list(domains), "config": json.dumps({"analysis": config or {}})}
    return Run(steps, steps * 64, metrics, attrs)


def hop_margins(steps: np.ndarray, items: int, every: int = 1) -> np.ndarray:
    """-0.2 then +0.2 from the middle, small noise; NaN on rows where probes did not run."""
    rng = np.random.default_rng(1)
    level = np.where(steps < steps[len(steps) // 2], -0.2, 0.2)
    m = level[:, None] + rng.normal(0, 0.05, (len(steps), items))
    m[steps % every != 0] = np.nan
    return m


@pytest.mark.parametrize("case", ["no_probes", "one_family_one_item", "one_family",
                                  "two_families_every_10"])
def test_every_path_runs_and_reports(tmp_path, case):
    steps = np.arange(400)
    families = {"no_probes": None,
                "one_family_one_item": {"fam": hop_margins(steps, 1)},
                "one_family": {"fam": hop_margins(steps, 16)},
                "two_families_every_10": {"a/x": hop_margins(steps, 8, 10),
                                          "b/y": -hop_margins(steps, 8, 10)}}[case]
    run = make_run(steps, families)
    result = write_report(run, tmp_path, checkpoints=[100, 399])
    for name in ("report.html", "summary.md", "analysis.json", "domains.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "train/lr" not in result["change_points"]  # an input, not a measurement
    assert not any(k.startswith("train_domains/tokens") for k in result["change_points"])
    assert result["change_points"]["train/loss"]["steps"] == []  # a smooth decay
    if families is None:
        assert result["regimes"] == {} and result["hops"] == []
        return
    assert (tmp_path / "overview.png").exists()
    assert (tmp_path / "universality.png").exists() == (len(families) > 1)
    for r in result["regimes"].values():
        assert r["hops"] == 1 and r["final"] in ("generalizing", "pattern_matching")
        # per 1,000 steps of the run (400 steps), whatever the probes' `every`
        assert r["hops_per_1k_steps"] == pytest.approx(1000 / 400)
        assert sum(r["counts"].values()) == r["rows"]
    for hop in result["hops"]:
        assert abs(hop["step"] - 200) <= 10


def test_flags_merge_over_the_runs_stored_settings(tmp_path, monkeypatch):
    from genjax.analysis import report

    steps = np.arange(300)
    run = make_run(steps, {"fam": hop_margins(steps, 8)},
                   config={"min_regime_steps": 7, "window": 30, "margin_floor": 0.5})
    seen = {}
    monkeypatch.setattr(report, "store_path", lambda workdir: workdir)
    monkeypatch.setattr(report, "read", lambda path: run)
    monkeypatch.setattr(report, "write_report",
                        lambda run, out, ckpts, opts, explain=None: seen.setdefault("opts", opts))
    report.analyze_workdir(str(tmp_path), overrides={"beta": 5.0})
    opts = seen["opts"]
    assert (opts.beta, opts.min_regime_steps, opts.window, opts.margin_floor) == \
        (5.0, 7, 30, 0.5)
    assert AnalysisOptions().beta != 5.0


def test_min_regime_steps_applies_to_regimes_and_checkpoints():
    steps = np.arange(400)
    m = hop_margins(steps, 16)
    m[300:310] = -0.5  # a 10-row flicker inside the generalizing regime
    run = make_run(steps, {"fam": m})
    strict = analyze(run, [305], AnalysisOptions(min_regime_steps=20))
    assert strict["regimes"]["fam"]["hops"] == 1  # the flicker is no regime
    loose = analyze(run, [305], AnalysisOptions(min_regime_steps=5))
    assert loose["regimes"]["fam"]["hops"] == 3
    assert not loose["checkpoints"]  # row 305 sits in the flicker, not in a gen regime


def test_gap_episodes_and_story():
    """A gap that opens at step ~150 and closes at ~350 in one domain, stays open in another
    and never opens in a third: the episode steps (checked against the threshold crossing of
    the noise-free curve) and the report's words."""
    from genjax.analysis.analyze import gap_episodes
    from genjax.analysis.report import story

    steps = np.arange(500)
    rise = 1 / (1 + np.exp(-(steps - 150) / 5.0))
    fall = 1 / (1 + np.exp((steps - 350) / 5.0))
    noise = np.random.default_rng(1).normal(0, 0.02, (500, 4))
    gap = np.stack([rise * fall, rise, -0.1 * rise, 0.15 * rise * fall], axis=1) + noise
    names = ["kv", "arith", "grammar", "text"]
    run = make_run(steps, domains=names)
    run.metrics["gap/loss"] = Series(gap, ("domain",), {"domain": names})
    # held-out loss 2 nats: text's 0.15 rise is 25 row-noise standard errors of the average
    # but 7.5% of the loss, a small episode; kv's and arith's 1.0 are 50%
    run.metrics["heldout/loss"] = Series(np.full((500, 4), 2.0), ("domain",), {"domain": names})
    g = gap_episodes(run)
    assert g["text"]["opened"] is not None and g["text"]["closed"] is not None
    rises = {d: g[d]["peak"] - g[d]["start"] for d in names}
    assert {d: g[d]["share"] for d in names} == pytest.approx(
        {d: rises[d] / 2.0 for d in names}, rel=1e-12)
    assert g["text"]["share"] == pytest.approx(0.075, abs=0.01)
    # noise-free: 0.5 of the way from 0 to 1 is crossed at steps 150 (up) and 350 (down);
    # the 25-row moving average and noise move each by at most a few steps
    assert abs(g["kv"]["opened"] - 150) <= 3 and abs(g["kv"]["closed"] - 350) <= 3
    assert g["kv"]["peak"] == pytest.approx(1.0, abs=0.03)
    assert abs(g["arith"]["opened"] - 150) <= 3 and g["arith"]["closed"] is None
    assert g["grammar"]["opened"] is None  # the peak is its starting level
    words = " ".join(story({"run": {"rows": 500, "first_step": 0, "last_step": 499,
                                    "tokens_seen": 1, "domains": ["kv"]},
                            "hops": [{"family": "kv/context", "direction": "to_generalizing",
                                      "step": 200, "size": 0.4}],
                            "regimes": {"kv/context": {"final": "generalizing"}},
                            "gaps": g}))
    assert "1 hop (1 to generalizing, 0 back to pattern-matching): kv/context " \
           "pattern-matching -> generalizing at step 200" in words
    assert f"Held-out gap opened and closed: kv (opened at step {g['kv']['opened']}" in words
    assert "Held-out gap still open: arith" in words
    assert "Small gap episodes (under 25% of the held-out loss" in words
    assert "text (peak" in words.split("Small gap episodes")[1]
    assert "text (" not in words.split("Small gap episodes")[0]
