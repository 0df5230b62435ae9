"""Optional mirrors of the scalar metrics to TensorBoard (tensorboardX) and Weights & Biases,
fed from the same host rows as the TensorStore stream. Installed with the extras
`genjax[tensorboard]` / `genjax[wandb]`; vector metrics are mirrored per label."""

from __future__ import annotations

import math

import numpy as np

from genjax.stream.sinks import BaseSink


def scalar_items(schema, row) -> dict[str, float]:
    """`name` for scalars and `name/label` for 1-D metrics (per-item arrays are left out)."""
    out = {}
    for spec in schema:
        value = np.asarray(row[spec.name])
        if value.ndim == 0:
            out[spec.name] = float(value)
        elif value.ndim == 1 and spec.dims[0] != "item":
            labels = spec.labels.get(spec.dims[0]) or [str(i) for i in range(value.shape[0])]
            out.update({f"{spec.name}/{lab}": float(v) for lab, v in zip(labels, value)})
    return {k: v for k, v in out.items() if math.isfinite(v)}


class TensorBoardSink(BaseSink):
    def __init__(self, logdir: str):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir)

    def open(self, schema, meta, start_step):
        self.schema = list(schema)

    def write(self, step, row):
        for name, value in scalar_items(self.schema, row).items():
            self.writer.add_scalar(name, value, step)

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandbSink(BaseSink):
    def __init__(self, project: str, run_dir: str):
        import wandb

        self.wandb, self.project, self.run_dir = wandb, project, run_dir

    def open(self, schema, meta, start_step):
        self.schema = list(schema)
        self.run = self.wandb.init(project=self.project, dir=self.run_dir, resume="allow",
                                   config={"genjax": meta.get("config", "")})

    def write(self, step, row):
        self.run.log(scalar_items(self.schema, row), step=step)

    def flush(self):
        pass

    def close(self):
        self.run.finish()
