"""The training loop: build everything from a config, resume, train, checkpoint, stream.

Host loop per step: assemble the global batch, dispatch the jitted step, then fetch the
*previous* step's metrics (already finished, so the fetch never stalls the device) and hand the
row to the sinks. Every piece (data, hooks, sinks, model config) can be passed in instead.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from genjax import sharding as shd
from genjax.config import ConfigDict, validate
from genjax.data import Data, build_data
from genjax.hooks.base import Hook, schema_of
from genjax.model import ModelConfig, abstract_model, init_model, make_apply
from genjax.optim import make_optimizer
from genjax.perf import peak_flops
from genjax.stream.sinks import Sink
from genjax.stream.store import StreamError
from genjax.train.checkpoint import Checkpointer, abstract_like
from genjax.train.progress import Progress
from genjax.train.step import TRAIN_SCHEMA, TrainState, init_state, make_train_step


class WorkdirError(OSError):
    """The workdir cannot be created or written."""


@dataclasses.dataclass
class TrainResult:
    final_step: int
    losses: dict[int, float]  # step -> train loss, for the steps this call ran
    state: TrainState
    stopped_early: bool = False


def prepare_workdir(workdir: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".genjax_write_test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise WorkdirError(f"workdir {path} is not writable: {e.strerror or e}") from e
    return path


class TrainProgram:
    """Everything needed to compile the sharded step: mesh, model, optimizer, hooks, shardings.

    Built from a config over any devices, including a TPU topology's devices on a CPU host
    (`abstract_args()` then lowers the step without allocating anything).
    """

    def __init__(self, config: ConfigDict, *, data: Data | None = None,
                 hooks: Sequence[Hook] | None = None,
                 devices: Sequence[jax.Device] | None = None):
        self.config = validate(config)
        self.mesh = shd.make_mesh(config.mesh, devices)
        self.rules = tuple(tuple(r) for r in config.sharding_rules)
        self._check_batch()
        self.data = data if data is not None else build_data(config)
        self.model_cfg = ModelConfig.from_config(config.model)
        constrain = shd.make_constrain(self.mesh, self.rules)
        self.graphdef, abstract_params = abstract_model(self.model_cfg, constrain)
        self.apply_fn = make_apply(self.graphdef)
        self.param_shardings = shd.param_shardings(abstract_params, self.mesh, self.rules)
        self.tx, self.schedule = make_optimizer(config.optim, config.train.steps)
        if hooks is None:
            from genjax.hooks.registry import build_hooks

            hooks = build_hooks(config, self.data)
        self.hooks = list(hooks)
        self.schema = list(TRAIN_SCHEMA) + schema_of(self.hooks)
        batch = shd.batch_sharding(self.mesh, self.rules)
        self.batch_shardings = {"inputs": batch, "targets": batch, "loss_mask": batch,
                                "domain": shd.batch_sharding(self.mesh, self.rules, ndim=1)}
        self.hook_host_data = [h.data() for h in self.hooks]
        self.hook_data_shardings = [jax.tree.map(self._eval_sharding, d)
                                    for d in self.hook_host_data]
        self.state_shardings = self._state_shardings(abstract_params)
        step_fn = make_train_step(self.apply_fn, self.tx, self.schedule, self.hooks,
                                  config.train.grad_accum)
        self.step_fn = jax.jit(
            step_fn,
            in_shardings=(self.state_shardings, self.batch_shardings, self.hook_data_shardings),
            out_shardings=(self.state_shardings, shd.replicated(self.mesh)),
            donate_argnums=(0,),
        )

    def _check_batch(self) -> None:
        c = self.config.train
        n = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if c.batch_size % n:
            raise shd.MeshError(f"train.batch_size={c.batch_size} is not divisible by the "
                                f"data x fsdp mesh axes ({n} ways)")
        if (c.batch_size // c.grad_accum) % n:
            raise shd.MeshError(f"micro-batch {c.batch_size // c.grad_accum} "
                                f"(train.batch_size / train.grad_accum) is not divisible by the "
                                f"data x fsdp mesh axes ({n} ways)")

    def _state_shardings(self, abstract_params) -> TrainState:
        repl = shd.replicated(self.mesh)
        opt_shapes = jax.eval_shape(self.tx.init, abstract_params)
        opt_shardings = optax.tree_map_params(
            self.tx, lambda _, s: s, opt_shapes, self.param_shardings,
            transform_non_params=lambda _: repl)
        return TrainState(step=repl, params=self.param_shardings, opt_state=opt_shardings,
                          rng=repl)

    def _eval_sharding(self, x) -> NamedSharding:
        """Eval data: leading axis over the batch mesh axes when it divides, else replicated."""
        spec = self.batch_shardings["domain"].spec
        n = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        x = np.asarray(x)
        return NamedSharding(self.mesh, spec if x.ndim and x.shape[0] % n == 0
                             else PartitionSpec())

    def _make_state(self) -> TrainState:
        constrain = shd.make_constrain(self.mesh, self.rules)
        _, params = init_model(self.model_cfg, self.config.seed, constrain)
        return init_state(params, self.tx, self.config.seed)

    def init_state(self) -> TrainState:
        """Fresh state, created directly in its shardings (no full copy on one device)."""
        return jax.jit(self._make_state, out_shardings=self.state_shardings)()

    def abstract_args(self) -> tuple[Any, Any, Any]:
        """(state, batch, hook data) as sharded ShapeDtypeStructs, for `step_fn.lower`."""
        state = abstract_like(jax.eval_shape(self._make_state), self.state_shardings)
        b, t = self.config.train.batch_size, self.config.train.seq_len
        shapes = {"inputs": ((b, t), np.int32), "targets": ((b, t), np.int32),
                  "loss_mask": ((b, t), np.float32), "domain": ((b,), np.int32)}
        batch = {k: jax.ShapeDtypeStruct(shape, dt, sharding=self.batch_shardings[k])
                 for k, (shape, dt) in shapes.items()}
        hook_data = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s),
            self.hook_host_data, self.hook_data_shardings)
        return state, batch, hook_data

    def place_hook_data(self) -> list[Any]:
        """Eval data onto the devices once; it stays there for the whole run."""
        return jax.tree.map(
            lambda x, s: jax.make_array_from_callback(np.shape(x), s,
                                                      lambda idx: np.asarray(x)[idx]),
            self.hook_host_data, self.hook_data_shardings)

    def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows of the batch as global arrays, all in one transfer."""
        return jax.make_array_from_process_local_data(
            {k: self.batch_shardings[k] for k in local}, local)


class Trainer:
    """A run: a `TrainProgram` plus workdir, checkpoints, resume, sinks and progress."""

    def __init__(self, config: ConfigDict, workdir: str | pathlib.Path, *,
                 data: Data | None = None, hooks: Sequence[Hook] | None = None,
                 sinks: Sequence[Sink] = (), devices: Sequence[jax.Device] | None = None):
        self.workdir = prepare_workdir(workdir)
        self.program = TrainProgram(config, data=data, hooks=hooks, devices=devices)
        self.config, self.data = self.program.config, self.program.data
        self.sinks = list(sinks)
        self.hook_data = self.program.place_hook_data()
        self.checkpointer = Checkpointer(self.workdir / "checkpoints", config.checkpoint.every,
                                         config.checkpoint.keep, config.checkpoint.async_save)

    def restore_or_init(self) -> tuple[TrainState, int]:
        latest = self.checkpointer.latest_step()
        if latest is None:
            return self.program.init_state(), 0
        abstract = self.program.abstract_args()[0]
        state, position = self.checkpointer.restore(abstract, latest)
        expected = self.data_position(latest)
        for key in ("seed", "batch_size", "domains"):
            if position.get(key) != expected[key]:
                raise ValueError(
                    f"checkpoint at step {latest} in {self.checkpointer.directory} was written "
                    f"with {key}={position.get(key)!r}, but the config now says "
                    f"{expected[key]!r}; use a new --workdir")
        return state, latest

    def data_position(self, step: int) -> dict:
        return {"step": int(step), "seed": int(self.config.seed),
                "batch_size": int(self.config.train.batch_size), "domains": self.data.names}

    def run_meta(self) -> dict[str, Any]:
        import genjax

        return {"config": self.config.to_json(), "genjax_version": genjax.__version__,
                "domains": self.data.names, "tokens_per_step":
                self.config.train.batch_size * self.config.train.seq_len}

    # ------------------------------------------------------------------------------- loop
    def run(self, stop_after: int | None = None) -> TrainResult:
        """Trains to `train.steps` (or until `stop_after` steps are done), resuming if possible."""
        cfg = self.config
        state, start = self.restore_or_init()
        total = cfg.train.steps
        end = total if stop_after is None else min(total, stop_after)
        tokens_per_step = cfg.train.batch_size * cfg.train.seq_len
        mesh, model_cfg = self.program.mesh, self.program.model_cfg
        peak, _ = peak_flops(mesh.devices.flat[0])
        progress = Progress(total, start, tokens_per_step,
                            model_cfg.flops_per_token(cfg.train.seq_len) * tokens_per_step,
                            peak * mesh.size,
                            cfg.log.progress if jax.process_index() == 0 else "none",
                            cfg.log.every)
        if start:
            progress.message(f"resumed from checkpoint at step {start} in {self.workdir}")
        for sink in self.sinks:
            sink.open(self.program.schema, self.run_meta(), start)
            if getattr(sink, "warning", ""):
                progress.message(f"warning: {sink.warning}")
        batches = self.data.train_batches(cfg.train.batch_size, start, jax.process_index(),
                                          jax.process_count(), cfg.data.prefetch)
        losses: dict[int, float] = {}
        pending: tuple[int, Any] | None = None
        interrupted, failure = False, None
        try:
            for step in range(start, end):
                batch = self.program.global_batch(next(batches))
                state, metrics = self.program.step_fn(state, batch, self.hook_data)
                previous, pending = pending, (step, metrics)
                if previous is not None:  # fetch step t-1 only after step t is dispatched
                    self._emit(*previous, losses, progress)
                if ((step + 1) % cfg.checkpoint.every == 0 or self._checkpoint_requested()) \
                        and step + 1 < end:
                    self._emit(*pending, losses, progress)
                    pending = None
                    self._checkpoint(step + 1, state)
            if pending is not None:
                self._emit(*pending, losses, progress)
        except KeyboardInterrupt:
            interrupted = True
            progress.message(f"interrupted: saving step {int(state.step)} and flushing metrics")
            if pending is not None:
                self._emit(*pending, losses, progress)
        except StreamError as e:
            failure = e
            if pending is not None:  # sinks buffer a row before reporting, so keep this one too
                try:
                    self._emit(*pending, losses, progress)
                except StreamError:
                    pass
        progress.close()
        final = int(state.step)
        if failure is None:
            try:
                self._checkpoint(final, state, force=True)
                for sink in self.sinks:
                    sink.close()
            except StreamError as e:
                failure = e
        if failure is not None:
            raise self._stream_failure(failure, final, state)
        self.checkpointer.wait()
        if interrupted:
            raise KeyboardInterrupt
        return TrainResult(final, losses, state, stopped_early=end < total)

    def _stream_failure(self, failure: StreamError, final: int, state) -> StreamError:
        """Saves the checkpoint and every unwritten row, then explains what happened."""
        self.checkpointer.save(final, state, self.data_position(final), force=True)
        self.checkpointer.wait()
        notes = [f"checkpoint saved at step {final}"]
        for sink in self.sinks:
            rows = sink.unwritten() if hasattr(sink, "unwritten") else None
            if rows is not None:
                first, last = int(rows["step"][0]), int(rows["step"][-1])
                dump = self.workdir / f"unwritten_metrics_{first}-{last}.npz"
                np.savez(dump, **{k.replace("/", "."): v for k, v in rows.items()})
                notes.append(f"rows {first}..{last} saved to {dump}")
        return StreamError(f"{failure}; training stopped ({'; '.join(notes)})")

    def _emit(self, step: int, metrics: Any, losses: dict, progress: Progress) -> None:
        row = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
        row["tokens_seen"] = np.int64((step + 1) * self.config.train.batch_size
                                      * self.config.train.seq_len)
        losses[step] = float(row["train/loss"])
        for sink in self.sinks:
            sink.write(step, row)
        progress.update(step, losses[step])

    def _checkpoint_requested(self) -> bool:
        """A sink (e.g. the online hop detector) may ask for a checkpoint now."""
        asked = [s for s in self.sinks if getattr(s, "checkpoint_requested", False)]
        for sink in asked:
            sink.checkpoint_requested = False
        return bool(asked)

    def _checkpoint(self, step: int, state: TrainState, force: bool = False) -> None:
        for sink in self.sinks:
            sink.flush()
        self.checkpointer.save(step, state, self.data_position(step), force=force)


def train(config: ConfigDict, workdir: str | pathlib.Path, **kwargs) -> TrainResult:
    """One call: build a `Trainer` and run it."""
    return Trainer(config, workdir, **kwargs).run()
