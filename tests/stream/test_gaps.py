"""No row lost or hidden: readers skip holes by the stored step, resumes never truncate below
their start and recompute missing rows, a changed schema with overwrite recreates the store,
and a write failure followed by a resume ends with each step exactly once."""

import jax
import numpy as np
import pytest
import tensorstore as ts

from genjax.hooks.base import MetricSpec
from genjax.stream import StreamError, TensorStoreSink, read
from genjax.stream.cli import columns
from genjax.train.trainer import Trainer
from tests.stream.test_store import FailingSink

STEPS = 20


def rows(steps, offset=0.0):
    return {s: {"train/loss": np.float32(s / 10 + offset), "tokens_seen": np.int64(8 * (s + 1)),
                "probe/margin": np.arange(3, dtype=np.float32) + s} for s in steps}


SCHEMA = [MetricSpec("train/loss"), MetricSpec("probe/margin", ("item",), (3,))]


def write(path, steps, start=0, schema=SCHEMA, **kw):
    sink = TensorStoreSink(path, chunk_steps=4, **kw)
    sink.open(schema, {}, start)
    data = rows(steps)
    for s in steps:
        sink.write(s, data[s])
    sink.close()
    return sink


def test_reader_skips_holes_instead_of_stopping(tmp_path):
    write(tmp_path / "m", [0, 1, 2, 3, 8, 9, 10])  # rows 4..7 never written
    run = read(tmp_path / "m")
    np.testing.assert_array_equal(run.steps, [0, 1, 2, 3, 8, 9, 10])
    np.testing.assert_allclose(run.metrics["train/loss"].values, run.steps / 10)
    np.testing.assert_array_equal(run.tokens_seen, 8 * (run.steps + 1))
    np.testing.assert_array_equal(run.metrics["probe/margin"].values[:, 0], run.steps)
    assert list(columns(run)["step"]) == [0, 1, 2, 3, 8, 9, 10]
    sink = TensorStoreSink(tmp_path / "m", chunk_steps=4)
    assert sink.first_missing_row(SCHEMA, 12) == 4
    assert sink.first_missing_row(SCHEMA, 4) is None


def test_resume_never_truncates_below_its_start(tmp_path):
    write(tmp_path / "m", [0, 1, 2, 3, 8, 9, 10, 11])
    sink = TensorStoreSink(tmp_path / "m", chunk_steps=4)
    sink.open(SCHEMA, {}, 10)  # rows >= 10 are rewritten; 8 and 9 stay, the hole is named
    assert "4 of steps 4..7" in sink.warning
    again = rows([10, 11, 12], offset=1.0)
    for s in (10, 11, 12):
        sink.write(s, again[s])
    sink.close()
    run = read(tmp_path / "m")
    np.testing.assert_array_equal(run.steps, [0, 1, 2, 3, 8, 9, 10, 11, 12])
    np.testing.assert_allclose(run.metrics["train/loss"].values[-3:], [2.0, 2.1, 2.2])


def test_overwrite_with_another_schema_recreates_the_store(tmp_path):
    write(tmp_path / "m", range(6))
    other = [MetricSpec("train/loss"), MetricSpec("train/grad_norm")]
    with pytest.raises(StreamError, match="different schema"):
        write(tmp_path / "m", range(3, 6), start=3, schema=other)
    assert len(read(tmp_path / "m")) == 6  # refused: nothing touched
    sink = TensorStoreSink(tmp_path / "m", chunk_steps=4, overwrite=True)
    sink.open(other, {}, 3)
    assert "recreated" in sink.warning and "from step 3" in sink.warning
    for s in range(3, 6):
        sink.write(s, {"train/loss": np.float32(s), "train/grad_norm": np.float32(-s),
                       "tokens_seen": np.int64(s)})
    sink.close()
    run = read(tmp_path / "m")
    np.testing.assert_array_equal(run.steps, [3, 4, 5])  # not 0 rows
    assert set(run.metrics) == {"train/loss", "train/grad_norm"}
    assert not (tmp_path / "m" / "probe").exists()  # no stale arrays of the old schema


# ------------------------------------------------------------------ with the Trainer
def make_sink(path, cls=TensorStoreSink):
    return cls(path, chunk_steps=4)


def train(config, workdir, sink=None, stop_after=None):
    sink = sink or make_sink(workdir / "metrics")
    return Trainer(config, workdir, devices=jax.devices()[:1], sinks=[sink]).run(stop_after)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from genjax.config import load
    from tests.conftest import CONFIGS

    config = load(CONFIGS / "tiny.py")
    config.train.steps, config.checkpoint.every, config.checkpoint.keep = STEPS, 5, 10
    workdir = tmp_path_factory.mktemp("reference")
    train(config, workdir)
    return config, read(workdir / "metrics")


def assert_same_run(path, ref):
    """Each step exactly once, every metric equal to the uninterrupted run."""
    run = read(path)
    np.testing.assert_array_equal(run.steps, np.arange(STEPS))
    np.testing.assert_array_equal(run.tokens_seen, ref.tokens_seen)
    assert set(run.metrics) == set(ref.metrics)
    for name, series in ref.metrics.items():
        np.testing.assert_allclose(run.metrics[name].values, series.values, rtol=0, atol=1e-6,
                                   err_msg=name)


def test_hole_below_the_checkpoint_is_recomputed(reference, tmp_path, capfd):
    config, ref = reference
    train(config, tmp_path, stop_after=15)
    step = ts.open({"driver": "zarr3", "kvstore": f"file://{tmp_path}/metrics/step/"},
                   open=True).result()
    step[7].write(np.int64(-1)).result()  # a lost row (e.g. a machine crash without fsync)
    assert 7 not in read(tmp_path / "metrics").steps
    capfd.readouterr()
    train(config, tmp_path)
    err = capfd.readouterr().err
    assert "no row for step 7: resuming from step 5 instead of 15" in err
    assert_same_run(tmp_path / "metrics", ref)


def test_write_failure_then_resume_has_each_step_once(reference, tmp_path, capfd):
    config, ref = reference
    config = config.copy_and_resolve_references()
    config.checkpoint.every = 100  # the failure checkpoint is the only one
    with pytest.raises(StreamError, match="No space left on device"):
        train(config, tmp_path, make_sink(tmp_path / "metrics", FailingSink))
    assert list(tmp_path.glob("unwritten_metrics_*.npz"))
    np.testing.assert_array_equal(read(tmp_path / "metrics").steps, np.arange(4))
    capfd.readouterr()
    train(config, tmp_path)
    err = capfd.readouterr().err
    assert "no row for step 4: resuming from step 0" in err
    assert_same_run(tmp_path / "metrics", ref)
