"""A real short run analysed end to end: report files exist and their numbers are the stream's."""

import json

import jax
import numpy as np
import pytest

from genjax.analysis.report import analyze_workdir
from genjax.stream import TensorStoreSink, read
from genjax.train.trainer import Trainer


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    import tiny

    from genjax.config import load
    from tests.conftest import CONFIGS

    workdir = tmp_path_factory.mktemp("analysed")
    config = tiny.with_all_hooks(load(CONFIGS / "tiny.py"))
    config.train.steps = 40
    config.checkpoint.every = 10
    config.hooks.probes.every = 2
    sink = TensorStoreSink(workdir / "metrics", chunk_steps=16)
    Trainer(config, workdir, devices=jax.devices()[:1], sinks=[sink]).run()
    out = analyze_workdir(str(workdir))
    return workdir, out, json.loads((out / "analysis.json").read_text())


def test_report_files_exist(analysed):
    _, out, _ = analysed
    for name in ("report.html", "summary.md", "analysis.json", "domains.png", "overview.png",
                 "universality.png"):
        assert len((out / name).read_bytes()) > 0, name
    html = (out / "report.html").read_text()
    assert "<h1>Mode analysis</h1>" in html and "<pre>" not in html  # rendered, not quoted
    # the story and its figure come first, the final values last (folded)
    assert html.index("What happened") < html.index("<img src='overview.png'") < html.index(
        "Per-domain generalization") < html.index("Change points") < html.index("Final values")
    assert "<details><summary><b>Final values" in html and "<table><tr><th>metric" in html


def test_report_numbers_are_the_streams(analysed):
    workdir, out, result = analysed
    run = read(workdir / "metrics")
    assert result["run"]["rows"] == len(run) == 40
    assert result["run"]["tokens_seen"] == int(run.tokens_seen[-1])
    assert result["final"]["train/loss"] == pytest.approx(float(run.metrics["train/loss"]
                                                                .values[-1]))
    held = run.metrics["heldout/loss"]
    for i, domain in enumerate(held.labels["domain"]):
        assert result["final"][f"heldout/loss[{domain}]"] == pytest.approx(
            float(held.values[-1, i]))
    # byte tokenizer, synthetic rows (no EOS among the targets): bits/byte = nats/token / ln 2
    np.testing.assert_allclose(run.metrics["heldout/bpb"].values,
                               held.values / np.log(2.0), rtol=1e-5)
    assert run.tokens_seen[0] == 0 and run.tokens_seen[1] == 8 * 32  # row s: s batches
    assert "train/lr" not in result["change_points"]
    assert set(result["regimes"]) == {"arith/repeat", "arith/successor", "grammar/agreement",
                                      "kv/context"}
    acc = run.metrics["probes/accuracy"].values
    last = acc[np.isfinite(acc).all(axis=1)][-1]  # probes ran every 2 steps
    for i, family in enumerate(run.metrics["probes/accuracy"].labels["family"]):
        assert result["final"][f"probes/accuracy[{family}]"] == pytest.approx(float(last[i]))
        assert result["regimes"][family]["rows"] == 20
        assert str(result["final"][f"probes/accuracy[{family}]"])[:4] in \
            (out / "summary.md").read_text()
    for series in result["change_points"].values():
        assert set(series["steps"]) <= set(run.steps.tolist())
    corr = np.asarray(result["universality"]["correlation"], float)
    margins = run.metrics["probes/soft_margin"].values
    margins = margins[np.isfinite(margins).all(axis=1)]
    np.testing.assert_allclose(corr, np.corrcoef(margins.T), atol=1e-6)
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert all(c["step"] in saved for c in result["checkpoints"])


def test_analyze_cli_on_missing_store_fails_clearly(tmp_path):
    from genjax.cli import main

    assert main(["genjax", "analyze", str(tmp_path)]) == 2
