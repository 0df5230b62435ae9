"""`genjax analyze`'s gradient-monitor sections on synthetic runs, against plain numpy."""

import json
import math

import numpy as np
import pytest

from genjax.analysis import gradients as g
from genjax.analysis.analyze import analyze
from genjax.analysis.report import write_report
from genjax.stream.store import Run, Series

DOMAINS = ["arith", "kv"]


def per(values, dim="domain", labels=DOMAINS):
    return Series(np.asarray(values, np.float32), (dim,), {dim: list(labels)})


def make_run(n=120, seed=0) -> Run:
    rng = np.random.default_rng(seed)
    pred = rng.normal(-1e-3, 1e-3, (n, 2))
    pred[1::2] = np.nan  # attribution every 2 steps
    cos = rng.uniform(-1, 1, (n, 2, 2))
    cos[1::2] = np.nan
    held = 3.0 - np.cumsum(rng.uniform(0, 0.01, (n, 2)), axis=0)
    rank = np.column_stack([rng.normal(10, 0.1, n), rng.normal(5, 0.1, n)])
    rank[70:, 0] += 2.0  # layer 0 moves at row 70
    loss = 3.0 + rng.normal(0, 0.01, n)
    spikes = np.zeros(n)
    spikes[[33, 97]] = 1
    loss[[33, 97]] = 9.0
    metrics = {
        "train/loss": Series(loss.astype(np.float32), (), {}),
        "heldout/loss": per(held),
        "attribution/predicted_change": per(pred),
        "attribution/heldout_train_cos": Series(
            cos.astype(np.float32), ("domain", "train_domain"),
            {"domain": DOMAINS, "train_domain": DOMAINS}),
        "predictors/rankme": per(rank, "layer", ["layer0", "layer1"]),
        "spikes/loss": Series(spikes.astype(np.float32), (), {}),
        "spikes/grad_norm": Series(np.zeros(n, np.float32), (), {}),
    }
    steps = np.arange(100, 100 + n)  # steps need not start at 0
    return Run(steps, steps * 1024, metrics, {"domains": DOMAINS})


def test_family_domains():
    assert g.family_domains("kv/lookup", DOMAINS) == ["kv"]
    assert g.family_domains("arith_add", DOMAINS) == ["arith"]
    assert g.family_domains("kv2x", ["kv", "kv2"]) == ["kv2"]  # longest prefix
    assert g.family_domains("other", DOMAINS) == DOMAINS


def test_hop_attribution_matches_numpy():
    run = make_run()
    m = run.metrics
    pred = m["attribution/predicted_change"].values.astype(np.float64)
    cos = m["attribution/heldout_train_cos"].values.astype(np.float64)
    held = m["heldout/loss"].values.astype(np.float64)
    hops = [{"family": "kv/lookup", "step": 180, "direction": "to_generalizing"},
            {"family": "other", "step": 150, "direction": "to_pattern_matching"},
            {"family": "arith_add", "step": 105, "direction": "to_generalizing"}]
    out = g.hop_attribution(run, hops, window=20)
    # hop 0: row 80, window rows 60..79, domain kv (column 1)
    r = out[0]
    assert r["domains"] == ["kv"] and r["window"] == [160, 179] and r["attribution_rows"] == 10
    assert r["predicted_change"] == pytest.approx(np.nansum(pred[60:80, 1]), rel=1e-6)
    want = np.nanmean(cos[60:80, 1, :], axis=0)
    assert [r["heldout_train_cos"][t] for t in DOMAINS] == pytest.approx(want, rel=1e-6)
    assert r["measured_change"] == pytest.approx(held[80, 1] - held[60, 1], rel=1e-5)
    # hop 1: all domains, rows 30..49
    r = out[1]
    assert r["domains"] == DOMAINS
    assert r["predicted_change"] == pytest.approx(np.nansum(pred[30:50]), rel=1e-6)
    want = np.nanmean(cos[30:50].reshape(-1, 2), axis=0)
    assert [r["heldout_train_cos"][t] for t in DOMAINS] == pytest.approx(want, rel=1e-6)
    # hop 2: only 5 rows before it (clipped window), domain arith
    r = out[2]
    assert r["domains"] == ["arith"] and r["window"] == [100, 104]
    assert r["attribution_rows"] == 3
    assert r["predicted_change"] == pytest.approx(np.nansum(pred[0:5, 0]), rel=1e-6)


def _numpy_lrv(x, lags):
    e = x - x.mean()
    n = len(e)
    acov = np.correlate(e, e, mode="full")[n - 1:] / n  # gamma_0, gamma_1, ...
    w = 1.0 - np.arange(1, lags + 1) / (lags + 1.0)
    return acov[0] + 2.0 * np.sum(w * acov[1:lags + 1])


def ar1(rng, n, phi, sigma=1.0):
    e = rng.normal(0, sigma, n + 200)
    x = np.empty_like(e)
    x[0] = e[0]
    for t in range(1, len(e)):
        x[t] = phi * x[t - 1] + e[t]
    return x[200:]


def test_newey_west_on_ar1():
    rng = np.random.default_rng(1)
    x = ar1(rng, 200_000, 0.6)
    # long-run variance of AR(1): sigma^2 / (1 - phi)^2 = 6.25
    assert g.newey_west_variance(x, lags=100) == pytest.approx(6.25, rel=0.05)
    short = x[:300]
    default_lags = math.floor(4 * (300 / 100) ** (2 / 9))
    assert g.newey_west_variance(short) == pytest.approx(_numpy_lrv(short, default_lags),
                                                         rel=1e-10)
    assert g.newey_west_variance(short, lags=0) == pytest.approx(short.var(), rel=1e-10)


def test_mean_shift_z_calibrated_under_ar1_noise():
    rng = np.random.default_rng(2)
    z_hac, z_iid = [], []
    for _ in range(300):
        x = ar1(rng, 400, 0.5)
        z_hac.append(g.mean_shift_z(x[200:], x[:200]))
        z_iid.append(g.mean_shift_z(x[200:], x[:200], lags=0))
    # with no shift, HAC z is close to unit variance; ignoring autocorrelation inflates it
    # (about sqrt(lrv / var) = sqrt(4 / 1.33) = 1.7 for phi = 0.5)
    assert 0.8 < np.std(z_hac) < 1.35
    assert np.std(z_iid) > 1.5
    x = ar1(rng, 400, 0.5)
    x[200:] += 3.0
    b, p = x[200:], x[:200]
    resid = np.concatenate([p - p.mean(), b - b.mean()])
    se = math.sqrt(_numpy_lrv(resid, math.floor(4 * 4 ** (2 / 9))) * (1 / 200 + 1 / 200))
    assert g.mean_shift_z(b, p) == pytest.approx((b.mean() - p.mean()) / se, rel=1e-9)
    assert g.mean_shift_z(b[:3], p) is None


def test_predictor_leads():
    run = make_run()
    hops = [{"family": "kv/lookup", "step": 180, "direction": "to_generalizing"}]
    out = {r["series"]: r for r in g.predictor_leads(run, hops, window=20)}
    moved, flat = out["predictors/rankme[layer0]"], out["predictors/rankme[layer1]"]
    assert moved["moved"] and abs(moved["change_step"] - 170) <= 2
    assert moved["lead"] == 180 - moved["change_step"]
    v = run.metrics["predictors/rankme"].values[:, 0].astype(np.float64)
    c = moved["change_step"] - 100  # its row
    noise = np.concatenate([v[:c] - v[:c].mean(), v[c:] - v[c:].mean()])
    se = math.sqrt(_numpy_lrv(noise, math.floor(4 * 1.2 ** (2 / 9))) * (1 / 20 + 1 / 20))
    assert moved["z"] == pytest.approx((v[60:80].mean() - v[40:60].mean()) / se, rel=1e-6)
    assert moved["z"] > 10 and moved["p"] < 1e-6
    assert not flat["moved"] and flat["lead"] is None and abs(flat["z"]) < 4


def test_spike_events():
    run = make_run()
    out = g.spike_events(run)
    assert out["spikes/loss"]["source"] == "train/loss"
    assert [e["step"] for e in out["spikes/loss"]["events"]] == [133, 197]
    assert out["spikes/loss"]["events"][0]["value"] == pytest.approx(9.0)
    assert out["spikes/grad_norm"]["events"] == []


def test_analyze_and_report_sections(tmp_path):
    run = make_run()
    result = analyze(run)
    assert result["hop_attribution"] == [] and result["predictor_leads"] == []  # no hops
    assert [e["step"] for e in result["spikes"]["spikes/loss"]["events"]] == [133, 197]
    write_report(run, tmp_path)
    stored = json.loads((tmp_path / "analysis.json").read_text())
    assert stored["spikes"]["spikes/loss"]["events"][1]["step"] == 197
    summary = (tmp_path / "summary.md").read_text()
    assert "## Spike events" in summary and "| spikes/loss | train/loss | 133 |" in summary
    assert "Gradient attribution before each hop" in summary
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Spike events</h2>" in html and "<td>197</td>" in html
    bare = Run(run.steps, run.tokens_seen, {"train/loss": run.metrics["train/loss"]}, {})
    result = analyze(bare)
    assert not {"hop_attribution", "predictor_leads", "spikes"} & set(result)
