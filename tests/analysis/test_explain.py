"""`genjax analyze --explain`: interpolation ends equal the stored rows; a rerun with the run's
own data order reproduces its rows exactly, another order changes them."""

import jax
import numpy as np
import pytest

from genjax.analysis.analyze import AnalysisOptions
from genjax.analysis.explain import bracket, explain
from genjax.stream import TensorStoreSink, read
from genjax.train.trainer import Trainer


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    import tiny

    from genjax.config import load
    from tests.conftest import CONFIGS

    workdir = tmp_path_factory.mktemp("explained")
    config = tiny.with_all_hooks(load(CONFIGS / "tiny.py"))
    config.train.steps = 30
    config.checkpoint.update(every=10, keep=10, async_save=False)
    config.stream.chunk_steps = 4
    sink = TensorStoreSink(workdir / "metrics", chunk_steps=4)
    Trainer(config, workdir, devices=jax.devices()[:1], sinks=[sink]).run()
    return workdir, read(workdir / "metrics")


def test_bracket():
    hop = {"step": 15, "change_start": 12, "change_end": 18}
    assert bracket(hop, [0, 10, 20, 30]) == (10, 20)
    assert bracket({"step": 20, "change_start": -1, "change_end": -1}, [10, 20]) == (20, 20)
    assert bracket(hop, [20]) == (None, 20)


def test_interpolation_ends_and_reruns(saved_run):
    workdir, run = saved_run
    family = run.metrics["probes/soft_margin"].labels["family"][1]
    hop = {"family": family, "step": 15, "direction": "to_generalizing", "change_start": 12,
           "change_end": 18, "size": 0.1, "left_duration": 10}
    (record,) = explain(workdir, run, {"hops": [hop]}, AnalysisOptions(min_regime_steps=4),
                        steps=8, orders=(0, 1), alphas=5)
    assert (record["before"], record["after"]) == (10, 20)
    f = run.metrics["probes/soft_margin"].labels["family"].index(family)
    margin = run.metrics["probes/soft_margin"].values[:, f]
    accuracy = run.metrics["probes/accuracy"].values[:, f]
    curve = record["interpolation"]
    # alpha 0 and 1 are the checkpoints' params: the rows the run stored at those steps
    np.testing.assert_allclose([curve["margin"][0], curve["margin"][-1]],
                               margin[[10, 20]], rtol=0, atol=1e-5)
    np.testing.assert_allclose([curve["accuracy"][0], curve["accuracy"][-1]],
                               accuracy[[10, 20]], rtol=0, atol=1e-5)
    domain = family.split("/")[0]
    d = run.metrics["heldout/loss"].labels["domain"].index(domain)
    assert curve["domain"] == domain
    np.testing.assert_allclose([curve["heldout_loss"][0], curve["heldout_loss"][-1]],
                               run.metrics["heldout/loss"].values[[10, 20], d], rtol=0,
                               atol=1e-5)
    line = np.linspace(curve["heldout_loss"][0], curve["heldout_loss"][-1], 5)
    assert curve["barrier"] == pytest.approx(float(np.max(curve["heldout_loss"] - line)),
                                             abs=1e-12)
    same, other = record["stability"]
    assert same["order"] == 0 and other["order"] == 1 and same["rows"] == 18
    replay = read(same["workdir"] + "/metrics")
    np.testing.assert_array_equal(replay.steps, np.arange(18))
    for name, series in run.metrics.items():  # every metric of rows 10..17, bit for bit
        np.testing.assert_array_equal(replay.metrics[name].values, series.values[:18], name)
    moved = read(other["workdir"] + "/metrics")
    train = run.metrics["train/loss"].values
    np.testing.assert_array_equal(moved.metrics["train/loss"].values[:10], train[:10])
    assert not np.allclose(moved.metrics["train/loss"].values[10:18], train[10:18])
    # held-out rows and probes do not depend on the order: the first rerun row (same params)
    np.testing.assert_array_equal(moved.metrics["heldout/loss"].values[10],
                                  run.metrics["heldout/loss"].values[10])


def test_analyze_explain_cli_writes_the_section(saved_run, capsys):
    from genjax.cli import main

    workdir, _ = saved_run
    assert main(["genjax", "analyze", str(workdir), "--explain", "--explain_steps", "4",
                 "--explain_orders", "x"]) == 2
    assert "--explain_orders must be integers" in capsys.readouterr().err
