"""Sinks can ask the trainer for a checkpoint (what the online hop detector does on a hop)."""

import jax

from genjax.stream.sinks import BaseSink
from genjax.train.trainer import Trainer


class AskAtStep(BaseSink):
    """Requests a checkpoint when it receives the row of `step`."""

    def __init__(self, step):
        self.step, self.checkpoint_requested = step, False

    def write(self, step, row):
        if step == self.step:
            self.checkpoint_requested = True


def test_sink_checkpoint_request_is_honoured(tiny_config, tmp_path):
    tiny_config.train.steps = 12
    tiny_config.checkpoint.every = 100
    trainer = Trainer(tiny_config, tmp_path, devices=jax.devices()[:1], sinks=[AskAtStep(4)])
    trainer.run()
    # row 4 is fetched while step 5 runs: the next checkpoint holds the params after step 5
    assert trainer.checkpointer.all_steps() == [6, 12]
