"""A row's `tokens_seen` counts the tokens its (pre-update) params were trained on; warmup's
first update is not a no-op; the start-up message reports the held-out sets."""

import io
import math

import jax
import numpy as np

from genjax.config import base_config
from genjax.optim import make_schedule


def test_warmup_starts_above_zero_and_reaches_the_peak():
    c = base_config().optim
    c.update(lr=1e-3, warmup_steps=10)
    lr = [float(make_schedule(c, 100)(i)) for i in range(100)]
    assert math.isclose(lr[0], 1e-4, rel_tol=1e-5) and math.isclose(lr[9], 1e-3, rel_tol=1e-5)
    assert all(b > a for a, b in zip(lr[:9], lr[1:10]))  # linear, strictly rising
    assert math.isclose(lr[-1], 1e-3 * c.end_lr_fraction, rel_tol=1e-4)  # last update: the end
    c.update(schedule="constant", warmup_steps=0)
    assert float(make_schedule(c, 100)(0)) == float(np.float32(1e-3))


def test_tokens_seen_and_first_update(tiny_config, tmp_path):
    from genjax.stream.sinks import MemorySink
    from genjax.train.progress import Progress
    from genjax.train.trainer import Trainer

    tiny_config.train.steps = 3
    tiny_config.hooks.probes.update(enabled=True, builtin_items=2)
    tiny_config.hooks.heldout.enabled = True
    sink = MemorySink()
    trainer = Trainer(tiny_config, tmp_path, sinks=[sink], devices=jax.devices()[:1])
    messages = io.StringIO()
    real = Progress.__init__

    def capture(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.mode, self.stream = "lines", messages

    Progress.__init__ = capture
    try:
        trainer.run()
    finally:
        Progress.__init__ = real
    tokens = [int(sink.rows[s]["tokens_seen"]) for s in sorted(sink.rows)]
    per_step = tiny_config.train.batch_size * tiny_config.train.seq_len
    assert tokens == [0, per_step, 2 * per_step]  # row s: params after s updates
    margins = sink.series("probes/item_margin")
    assert not np.array_equal(margins[0], margins[1])  # the first update changed the params
    lr = sink.series("train/lr")
    assert lr[0] > 0
    assert "held-out sets" in messages.getvalue() and "distinct loss tokens" in messages.getvalue()
