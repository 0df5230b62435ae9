"""The TensorStore stream: live readers, zarr-python compatibility, and clear errors.
(Exactly-once rows across SIGKILL, signals and resumes: tests/train/test_faults.py.)"""

import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from genjax.stream import StreamError, TensorStoreSink, follow, read
from genjax.stream.cli import columns
from genjax.train.trainer import Trainer
from tests.conftest import CONFIGS, ROOT

ONE_DEVICE = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def train_cmd(workdir, *extra):
    return [sys.executable, "-m", "genjax.cli", "train", "--config", str(CONFIGS / "tiny.py"),
            "--workdir", str(workdir), "--config.stream.chunk_steps=4",
            "--config.checkpoint.every=5", *extra]


@pytest.mark.slow  # 14 s: a training process and a reader process
def test_reader_in_another_process_sees_growth(tmp_path):
    proc = subprocess.Popen(train_cmd(tmp_path, "--config.train.steps=60",
                                      "--config.checkpoint.every=4"),
                            env=ONE_DEVICE, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    lengths = []
    try:
        for run in follow(tmp_path / "metrics", interval_s=0.2, timeout_s=240):
            lengths.append(len(run))
            if len(lengths) >= 3 or run.steps.size == 60:
                break
    finally:
        proc.wait(timeout=300)
    assert len(lengths) >= 2 and lengths == sorted(lengths) and lengths[-1] > lengths[0]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    import tiny

    from genjax.config import load

    workdir = tmp_path_factory.mktemp("run")
    config = tiny.with_all_hooks(load(CONFIGS / "tiny.py"))
    config.train.steps = 6
    config.stream.chunk_steps = 4
    sink = TensorStoreSink(workdir / "metrics", chunk_steps=4)
    Trainer(config, workdir, devices=jax.devices()[:1], sinks=[sink]).run()
    return workdir, config


def test_zarr_python_and_xarray_read_the_store(short_run):
    import xarray as xr
    import zarr

    workdir, _ = short_run
    run = read(workdir / "metrics")
    group = zarr.open_group(str(workdir / "metrics"), mode="r")
    np.testing.assert_array_equal(group["step"][:], run.steps)
    for name, series in run.metrics.items():
        arr = group[name]
        np.testing.assert_array_equal(arr[:], series.values)
        assert list(arr.metadata.dimension_names) == ["step", *series.dims]
    assert group.attrs["genjax"]["domains"] == ["arith", "grammar", "kv"]
    ds = xr.open_zarr(str(workdir / "metrics"), group="heldout", consolidated=False)
    assert ds["loss"].dims == ("step", "domain")
    np.testing.assert_array_equal(ds["loss"].values, run.metrics["heldout/loss"].values)
    labelled = run.to_xarray()
    assert list(labelled["heldout/loss"].coords["domain"].values) == ["arith", "grammar", "kv"]
    # plain xarray: labels are coordinate arrays, steps the root's index
    tree = xr.open_datatree(str(workdir / "metrics"), engine="zarr", consolidated=False)
    kv = tree["heldout"]["loss"].sel(domain="kv")
    np.testing.assert_array_equal(kv.values, run.metrics["heldout/loss"].values[:, 2])
    np.testing.assert_array_equal(kv["step"].values, run.steps)
    for name, series in run.metrics.items():
        group, leaf = name.rsplit("/", 1)
        for dim, labels in series.labels.items():
            assert list(tree[group][leaf].coords[dim].values) == labels, (name, dim)


def test_metrics_command_prints_and_exports_csv(short_run, tmp_path):
    from genjax.cli import main

    workdir, _ = short_run
    out = tmp_path / "m.csv"
    assert main(["genjax", "metrics", str(workdir), "--csv", str(out)]) == 0
    header = out.read_text().splitlines()[0].split(",")
    run = read(workdir / "metrics")
    assert header == list(columns(run))
    assert "heldout/loss[grammar]" in header
    last = out.read_text().splitlines()[-1].split(",")
    assert float(last[header.index("train/loss")]) == pytest.approx(
        float(run.metrics["train/loss"].values[-1]))


def test_metrics_command_shows_latest_finite_value_and_its_step():
    """A hook with every > 1 writes NaN between evaluations: the table shows its last finite
    value and the step it came from; a series with no finite value says so."""
    from genjax.stream.cli import latest_table
    from genjax.stream.store import Run, Series

    nan = float("nan")
    every4 = np.array([[1.0, 2.0], [nan, nan], [nan, nan], [nan, nan], [3.5, 4.25], [nan, nan]])
    run = Run(steps=np.arange(10, 16), tokens_seen=np.arange(6) * 64,
              metrics={"train/loss": Series(np.linspace(3, 2, 6), (), {}),
                       "heldout/loss": Series(every4, ("domain",), {"domain": ["kv", "arith"]}),
                       "never": Series(np.full(6, nan), (), {})}, attrs={})
    lines = latest_table(run).splitlines()
    assert lines[0].startswith("step 15  (6 rows")
    assert lines[1].split() == ["train/loss", "2"]
    assert lines[2].split() == ["heldout/loss", "kv=3.5", "arith=4.25", "(at", "step", "14)"]
    assert lines[3].split()[:2] == ["never", "nan"] and "no finite value" in lines[3]


def test_schema_mismatch_refused_unless_overwrite(short_run, tmp_path):
    from genjax.config import load

    workdir, _ = short_run
    plain = load(CONFIGS / "tiny.py")  # no hooks: different schema
    plain.train.steps = 2
    sink = TensorStoreSink(workdir / "metrics")
    with pytest.raises(StreamError, match="different schema.*overwrite"):
        Trainer(plain, tmp_path, devices=jax.devices()[:1], sinks=[sink]).run()
    assert len(read(workdir / "metrics")) == 6  # nothing lost


def test_unwritable_store_path_is_clear(tiny_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sink = TensorStoreSink(blocker / "metrics")
    tiny_config.train.steps = 2
    with pytest.raises(StreamError, match="metric store"):
        Trainer(tiny_config, tmp_path / "w", devices=jax.devices()[:1], sinks=[sink]).run()


class FailingSink(TensorStoreSink):
    """Fails on the second block, as a full disk would."""

    blocks = 0

    def _write_block(self, start, block):
        self.blocks += 1
        if self.blocks == 2:
            raise OSError("No space left on device")
        super()._write_block(start, block)


def test_write_failure_stops_after_checkpoint_and_keeps_rows(tiny_config, tmp_path):
    tiny_config.train.steps = 20
    tiny_config.checkpoint.every = 100
    sink = FailingSink(tmp_path / "metrics", chunk_steps=4)
    trainer = Trainer(tiny_config, tmp_path, devices=jax.devices()[:1], sinks=[sink])
    with pytest.raises(StreamError, match="No space left on device") as e:
        trainer.run()
    assert "checkpoint saved at step" in str(e.value)
    saved_step = trainer.checkpointer.latest_step()
    assert saved_step is not None and saved_step > 4
    written = read(tmp_path / "metrics")
    np.testing.assert_array_equal(written.steps, np.arange(4))  # the first block only
    dumps = list(tmp_path.glob("unwritten_metrics_*.npz"))
    assert len(dumps) == 1
    rows = np.load(dumps[0])
    np.testing.assert_array_equal(rows["step"], np.arange(4, saved_step))


def _scalar_rows(steps):
    from genjax.hooks.base import MetricSpec

    schema = [MetricSpec("train/loss"), MetricSpec("probe/margin", ("item",), (3,))]
    rows = {s: {"train/loss": np.float32(s / 10), "tokens_seen": np.int64(8 * (s + 1)),
                "probe/margin": np.arange(3, dtype=np.float32) + s} for s in steps}
    return schema, rows


def test_arrays_grow_by_chunks_live_and_are_trimmed_at_close(tmp_path):
    import zarr

    schema, rows = _scalar_rows(range(11))
    sink = TensorStoreSink(tmp_path / "m", chunk_steps=8, flush_every_s=1e-9)  # every row
    sink.open(schema, {}, 0)
    for s in range(11):
        sink.write(s, rows[s])
    sink.flush()
    live = zarr.open_group(str(tmp_path / "m"), mode="r")
    assert live["step"].shape == (16,) and live["train/loss"].shape == (16,)  # doubled
    np.testing.assert_array_equal(live["step"][:], [*range(11), *[-1] * 5])
    assert np.isnan(live["probe/margin"][11:]).all()
    run = read(tmp_path / "m")  # skips the rows not yet written (step -1)
    np.testing.assert_array_equal(run.steps, np.arange(11))
    np.testing.assert_allclose(run.metrics["train/loss"].values, np.arange(11) / 10)
    sink.close()
    done = zarr.open_group(str(tmp_path / "m"), mode="r")
    for name in ("step", "tokens_seen", "train/loss", "probe/margin"):
        assert done[name].shape[0] == 11, name
    np.testing.assert_array_equal(done["tokens_seen"][:], 8 * np.arange(1, 12))
    np.testing.assert_array_equal(done["probe/margin"][:],
                                  np.arange(3)[None, :] + np.arange(11)[:, None])


def test_rows_reach_the_store_by_time_before_a_chunk_fills(tmp_path):
    schema, rows = _scalar_rows(range(3))
    slow = TensorStoreSink(tmp_path / "slow", chunk_steps=1024, flush_every_s=3600)
    fast = TensorStoreSink(tmp_path / "fast", chunk_steps=1024, flush_every_s=0.05)
    for sink in (slow, fast):
        sink.open(schema, {}, 0)
        sink.write(0, rows[0])
    time.sleep(0.1)
    for sink in (slow, fast):
        sink.write(1, rows[1])  # the fast sink's interval has passed: hands off rows 0-1
        sink.write(2, rows[2])
    fast._queue.join()
    slow._queue.join()
    assert len(read(tmp_path / "slow")) == 0
    assert len(read(tmp_path / "fast")) == 2
    for sink in (slow, fast):
        sink.close()
        assert len(read(sink.url)) == 3


def test_timed_hand_offs_stretch_when_blocks_are_slow_to_write(tmp_path):
    from genjax.stream.store import FLUSH_BUDGET

    class SlowDisk(TensorStoreSink):
        def _write_block(self, start, block):
            time.sleep(0.05)
            super()._write_block(start, block)

    schema, rows = _scalar_rows(range(4))
    sink = SlowDisk(tmp_path / "m", chunk_steps=1024, flush_every_s=0.01)
    sink.open(schema, {}, 0)
    assert sink.flush_interval_s() == 0.01
    sink.write(0, rows[0])
    time.sleep(0.02)
    sink.write(1, rows[1])  # 0.01 s passed: rows 0-1 handed off, written in >= 0.05 s
    sink._queue.join()
    assert sink.flush_interval_s() >= 0.05 / FLUSH_BUDGET  # >= 10 s
    time.sleep(0.02)
    sink.write(2, rows[2])  # 0.02 s later: no longer enough for a timed hand-off
    sink._queue.join()
    assert len(read(tmp_path / "m")) == 2
    sink.close()
    assert len(read(tmp_path / "m")) == 3
