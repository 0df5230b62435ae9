"""TensorBoard / W&B mirrors log the same scalars the stream holds (fake client modules)."""

import sys
import types

import numpy as np

from genjax.hooks.base import MetricSpec
from genjax.stream.mirrors import TensorBoardSink, WandbSink, scalar_items

SCHEMA = [MetricSpec("train/loss"),
          MetricSpec("heldout/loss", ("domain",), (2,), labels={"domain": ("a", "b")}),
          MetricSpec("probes/item_margin", ("item",), (3,), labels={"item": ("f/0", "f/1",
                                                                              "f/2")})]
ROW = {"train/loss": np.float32(2.5), "heldout/loss": np.array([1.0, np.nan], np.float32),
       "probes/item_margin": np.zeros(3, np.float32)}


def test_scalar_items_flattens_labels_and_drops_nan_and_items():
    assert scalar_items(SCHEMA, ROW) == {"train/loss": 2.5, "heldout/loss/a": 1.0}


def test_tensorboard_and_wandb_sinks(monkeypatch, tmp_path):
    logged = []

    class Writer:
        def __init__(self, logdir):
            self.logdir = logdir

        def add_scalar(self, name, value, step):
            logged.append(("tb", name, value, step))

        def flush(self):
            pass

        def close(self):
            pass

    class Run:
        def log(self, values, step):
            logged.append(("wandb", values, step))

        def finish(self):
            pass

    monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=Writer))
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: Run()))
    for sink in (TensorBoardSink(str(tmp_path)), WandbSink("proj", str(tmp_path))):
        sink.open(SCHEMA, {"config": "{}"}, 0)
        sink.write(7, ROW)
        sink.flush()
        sink.close()
    assert ("tb", "train/loss", 2.5, 7) in logged and ("tb", "heldout/loss/a", 1.0, 7) in logged
    assert ("wandb", {"train/loss": 2.5, "heldout/loss/a": 1.0}, 7) in logged
