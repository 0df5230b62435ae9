"""genjax.hooks.fused: which hooks share a pass, and a shared pass changes no metric."""

import jax
import numpy as np

from genjax.batching import EvalBatching
from genjax.hooks.fused import FusedPass, fuse
from genjax.stream.sinks import MemorySink
from genjax.train.trainer import Trainer


class Rows:
    """A stand-in RowsHook: rows of length t, run every `every` steps."""

    def __init__(self, name, every=1, t=8, micro_batch=0):
        self.name, self.every, self.t = name, every, t
        self.batching = EvalBatching(micro_batch=micro_batch)

    def token_rows(self):
        return {"inputs": np.zeros((3, self.t), np.int32)}

    def score(self, loss_NxT, correct_NxT, rows, ctx):
        return {}


class Other:
    name, every = "other", 1


def test_fuse_groups_rows_hooks_by_every_and_row_length():
    a, b, c, d, e = Rows("a"), Rows("b", every=2), Rows("c"), Rows("d", t=16), Rows("e", 2)
    other, f = Other(), Rows("f", micro_batch=4)
    units = fuse([other, a, b, c, d, e, f])
    assert [u.name for u in units] == ["other", "a+c", "b+e", "d", "f"]
    assert isinstance(units[1], FusedPass) and units[1].members == [a, c]
    assert units[2].every == 2 and units[3] is d and units[0] is other


def tiny_with_fusable_probes(tiny_hooks_config, seq_len=48):
    """Train rows of 48 tokens or more: the tiny probes' longest sequence (46) fits, so the
    held-out, memorization and probe rows share one pass."""
    c = tiny_hooks_config
    c.train.seq_len = seq_len
    c.train.steps = 3
    return c


def test_one_pass_equals_one_pass_per_hook(tiny_hooks_config, tmp_path):
    """Every metric of every step, fused or not, on one device; and the fused run trains the
    same params."""
    c = tiny_with_fusable_probes(tiny_hooks_config)
    sinks, runs = {}, {}
    for fuse_passes in ("on", "off"):
        c.hooks.fuse_passes = fuse_passes
        sinks[fuse_passes] = MemorySink()
        trainer = Trainer(c, tmp_path / fuse_passes, devices=jax.devices()[:1],
                          sinks=[sinks[fuse_passes]])
        units = [u.name for u in trainer.program.monitor.units]
        runs[fuse_passes] = trainer.run()
        assert ("heldout+probes+memorization" in units) == (fuse_passes == "on"), units
    fused, separate = sinks["on"], sinks["off"]
    for spec in fused.schema:
        got, want = fused.series(spec.name), separate.series(spec.name)
        assert np.isfinite(want).any(), spec.name
        # measured: identical (0.0) on this CPU; the rows' matmuls are row-independent
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=spec.name)
    for a, b in zip(jax.tree.leaves(jax.device_get(runs["on"].state.params)),
                    jax.tree.leaves(jax.device_get(runs["off"].state.params)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sharded_fused_pass_equals_one_device_pass_per_hook(tiny_hooks_config, tmp_path):
    """The fused pass on 8 devices (data x fsdp = 4, micro-batches of 4 rows, a row count 4
    does not divide) against one pass per hook on 1 device: every metric of 3 steps."""
    c = tiny_with_fusable_probes(tiny_hooks_config, seq_len=96)  # two probe sequences a row
    c.hooks.probes.builtin_items = 7
    one, eight = MemorySink(), MemorySink()
    c.hooks.fuse_passes = "off"
    Trainer(c, tmp_path / "one", devices=jax.devices()[:1], sinks=[one]).run()
    c.hooks.fuse_passes = "on"
    c.mesh.update(data=2, fsdp=2, tensor=2)
    c.hooks.micro_batch = 4
    trainer = Trainer(c, tmp_path / "eight", sinks=[eight])
    fused = next(u for u in trainer.program.monitor.units if isinstance(u, FusedPass))
    assert fused.name == "heldout+probes+memorization"
    rows = sum(len(m.token_rows()["inputs"]) for m in fused.members)
    padded = len(fused.data()["pass"]["inputs"])
    assert rows % 4 and padded % 4 == 0 and padded > rows, (rows, padded)
    trainer.run()
    for data in trainer.hook_data:
        for x in jax.tree.leaves(data):
            assert x.sharding.spec[0] == ("data", "fsdp"), x.sharding
    for spec in one.schema:
        # measured: at most 7.6e-6 (a summed probe log-prob), as in tests/train's sharded test
        np.testing.assert_allclose(eight.series(spec.name), one.series(spec.name), rtol=0,
                                   atol=1e-5, err_msg=spec.name)


def test_fuse_setting():
    from genjax.hooks.fused import fuse_setting

    assert [fuse_setting("auto", p) for p in ("cpu", "tpu", "gpu")] == [False, True, True]
    assert fuse_setting("on", "cpu") and not fuse_setting("off", "tpu")
