"""`genjax train`: a Trainer with the sinks the config asks for.

Exit statuses besides 0 and the CLI's 2 (a config or input error): 130 / 143 after SIGINT /
SIGTERM stopped the run cleanly (checkpoint saved, metrics flushed: the same command resumes);
3 when a non-finite loss or gradient stopped it (train.on_nonfinite=stop).
"""

from __future__ import annotations

import os
import signal
import sys

import jax

from genjax import paths
from genjax.analysis.online import OnlineHopDetector
from genjax.config import ConfigDict
from genjax.stream.mirrors import TensorBoardSink, WandbSink
from genjax.stream.sinks import BaseSink
from genjax.stream.store import TensorStoreSink
from genjax.train.trainer import Interrupted, NonFiniteError, Trainer, TrainResult

NONFINITE_EXIT = 3
TEST_SIGNAL_ENV = "GENJAX_TEST_SIGNAL_AT"


class SignalAtStep(BaseSink):
    """Test-only sink (added when $GENJAX_TEST_SIGNAL_AT is set, e.g. "12:SIGTERM" or
    "5:SIGINT,6:SIGINT" or "9:SIGKILL@1"): sends each signal to this process when the row of
    its step arrives (on process P only with @P), so tests stop a real run at a fixed step."""

    def __init__(self, spec: str):
        self.at: dict[int, list[int]] = {}
        for item in spec.split(","):
            where, _, name = item.partition(":")
            name, _, proc = name.partition("@")
            if not proc or int(proc) == jax.process_index():
                self.at.setdefault(int(where), []).append(int(signal.Signals[name.strip()]))

    def write(self, step, row):
        for signum in self.at.pop(step, []):
            os.kill(os.getpid(), signum)


def run_training(config: ConfigDict, workdir: str | os.PathLike,
                 stop_after: int | None = None) -> TrainResult:
    sinks = []
    if config.stream.enabled and jax.process_index() == 0:  # all-reduced rows: one writer
        path = config.stream.path or str(paths.as_path(workdir) / "metrics")
        sinks.append(TensorStoreSink(path, config.stream.chunk_steps, config.stream.overwrite,
                                     flush_every_s=config.stream.flush_every_s,
                                     fsync=config.stream.fsync))

    if jax.process_index() == 0 and config.stream.tensorboard:
        sinks.append(TensorBoardSink(str(paths.as_path(workdir) / "tensorboard")))
    if jax.process_index() == 0 and config.stream.wandb_project:
        sinks.append(WandbSink(config.stream.wandb_project, str(workdir)))
    if config.analysis.online_hops:
        sinks.append(OnlineHopDetector(config.analysis.min_regime_steps, seed=config.seed,
                                       save_on_hop=config.analysis.save_on_hop,
                                       margin_floor=config.analysis.margin_floor))
    if os.environ.get(TEST_SIGNAL_ENV):
        sinks.append(SignalAtStep(os.environ[TEST_SIGNAL_ENV]))
    trainer = Trainer(config, workdir, sinks=sinks)
    for sink in sinks:
        if isinstance(sink, TensorStoreSink):  # the one writer (process 0)
            print(f"metrics: {sink.url} (written by process 0 of {jax.process_count()})",
                  file=sys.stderr, flush=True)
    try:
        result = trainer.run(stop_after=stop_after)
    except Interrupted as e:  # the signal's one line is printed already
        raise SystemExit(e.exit_code) from None
    except NonFiniteError as e:
        print(f"genjax train: {e}", file=sys.stderr, flush=True)
        raise SystemExit(NONFINITE_EXIT) from None
    last = result.losses.get(result.final_step - 1)
    if last is not None:
        print(f"done: step {result.final_step}, train loss {last:.4f}, workdir {workdir}")
    return result
