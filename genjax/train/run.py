"""`genjax train`: a Trainer with the sinks the config asks for."""

from __future__ import annotations

import pathlib

from genjax.config import ConfigDict
from genjax.train.trainer import Trainer, TrainResult


def run_training(config: ConfigDict, workdir: str | pathlib.Path,
                 stop_after: int | None = None) -> TrainResult:
    sinks = []
    trainer = Trainer(config, workdir, sinks=sinks)
    result = trainer.run(stop_after=stop_after)
    last = result.losses.get(result.final_step - 1)
    if last is not None:
        print(f"done: step {result.final_step}, train loss {last:.4f}, workdir {workdir}")
    return result
