"""`genjax train`: a Trainer with the sinks the config asks for."""

from __future__ import annotations

import pathlib

import jax

from genjax.analysis.online import OnlineHopDetector
from genjax.config import ConfigDict
from genjax.stream.mirrors import TensorBoardSink, WandbSink
from genjax.stream.store import TensorStoreSink
from genjax.train.trainer import Trainer, TrainResult


def run_training(config: ConfigDict, workdir: str | pathlib.Path,
                 stop_after: int | None = None) -> TrainResult:
    sinks = []
    if config.stream.enabled and jax.process_index() == 0:  # all-reduced rows: one writer
        path = config.stream.path or str(pathlib.Path(workdir) / "metrics")
        sinks.append(TensorStoreSink(path, config.stream.chunk_steps, config.stream.overwrite,
                                     flush_every_s=config.stream.flush_every_s,
                                     fsync=config.stream.fsync))
    if jax.process_index() == 0 and config.stream.tensorboard:
        sinks.append(TensorBoardSink(str(pathlib.Path(workdir) / "tensorboard")))
    if jax.process_index() == 0 and config.stream.wandb_project:
        sinks.append(WandbSink(config.stream.wandb_project, str(workdir)))
    if config.analysis.online_hops:
        sinks.append(OnlineHopDetector(config.analysis.min_regime_steps, seed=config.seed,
                                       save_on_hop=config.analysis.save_on_hop))
    trainer = Trainer(config, workdir, sinks=sinks)
    result = trainer.run(stop_after=stop_after)
    last = result.losses.get(result.final_step - 1)
    if last is not None:
        print(f"done: step {result.final_step}, train loss {last:.4f}, workdir {workdir}")
    return result
