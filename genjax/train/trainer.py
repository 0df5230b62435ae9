"""The training loop: build everything from a config, resume, train, checkpoint, stream.

Host loop per step: assemble the global batch, dispatch the jitted step, then fetch the
*previous* step's metrics (already finished, so the fetch never stalls the device) and hand the
row to the sinks. Every piece (data, hooks, sinks, model config) can be passed in instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from genjax import paths
from genjax import sharding as shd
from genjax.analysis.spikes import SPIKE_SCHEMA, WATCHED, SpikeDetector
from genjax.config import ConfigDict, ConfigError, validate
from genjax.data import Data, DataError, build_data
from genjax.hooks.base import Hook, MetricSpec, check_capabilities
from genjax.hooks.fused import fuse_setting
from genjax.hooks.layers import layer_labels
from genjax.hooks.monitor import Monitor
from genjax.model import LanguageModel, ModelConfig, attention, transformer
from genjax.optim import make_optimizer
from genjax.perf import peak_flops
from genjax.stream.sinks import Sink, check_sink
from genjax.stream.store import StreamError, TensorStoreSink
from genjax.train import resume
from genjax.train.checkpoint import Checkpointer, abstract_like
from genjax.train.progress import Progress
from genjax.train.step import TRAIN_SCHEMA, LossFn, TrainState, init_state, make_train_step

# hooks.gate=programs: most step programs a run may compile (one per set of hooks due together)
MAX_PROGRAMS = 8


class WorkdirError(OSError):
    """The workdir cannot be created or written."""


@dataclasses.dataclass
class TrainResult:
    """What `Trainer.run` returns: the last step, this call's train losses, the final state."""

    final_step: int
    losses: dict[int, float]  # step -> train loss, for the steps this call ran
    state: TrainState
    stopped_early: bool = False


@contextlib.contextmanager
def removed_on_failed_start(workdir: str | os.PathLike):
    """Runs the body; if it fails while the workdir it created holds no checkpoint or metric
    row (only directories, `zarr.json` and `config.json`), removes what it created: a failed
    start leaves nothing behind (local or in a bucket)."""
    path = paths.as_path(workdir)
    created = None  # the topmost directory (or bucket prefix) that does not exist yet
    for p in (path, *path.parents):
        if p.exists() or p == p.parent:
            break
        created = p
    try:
        yield
    except BaseException:
        if created is not None and created.exists() and not _holds_run(created):
            created.rmtree(missing_ok=True)
        raise


def _holds_run(path: paths.Path) -> bool:
    return any(f.name not in ("zarr.json", resume.RUN_FILE) for f in paths.files_under(path))


def prepare_workdir(workdir: str | os.PathLike) -> paths.Path:
    """The workdir as a path (local, file:// or gs://), created and checked writable."""
    try:
        path = paths.as_path(workdir)
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".genjax_write_test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except paths.PathError as e:
        raise WorkdirError(f"workdir {e}") from e
    except OSError as e:
        raise WorkdirError(f"workdir {workdir} is not writable: {e.strerror or e}") from e
    return path


class TrainProgram:
    """Everything needed to compile the sharded step: mesh, model, optimizer, hooks, shardings.

    Built from a config over any devices, including a TPU topology's devices on a CPU host
    (`abstract_args()` then lowers the step without allocating anything). The model, the
    optimizer (with its schedule, for the `train/lr` metric), the loss, the data and the hooks
    default to what the config describes; pass any of them to use your own.
    """

    def __init__(self, config: ConfigDict, *, model: LanguageModel | None = None,
                 tx: optax.GradientTransformation | None = None,
                 schedule: optax.Schedule | None = None, loss_fn: LossFn | None = None,
                 data: Data | None = None, hooks: Sequence[Hook] | None = None,
                 devices: Sequence[jax.Device] | None = None):
        self.config = validate(config)
        self.mesh = shd.make_mesh(config.mesh, devices)
        self.rules = tuple(tuple(r) for r in config.sharding_rules)
        self._check_batch()
        self.data = data if data is not None else build_data(config)
        self.model_cfg = ModelConfig.from_config(config.model) if model is None else None
        self.attention = "xla" if model is not None else attention.resolve(
            config.model.attention, self.mesh.devices.flat[0].platform,
            config.model.compute_dtype, config.train.seq_len)
        if model is None:
            attend = attention.make_attention(self.attention, self.mesh, self.rules)
            model = transformer(self.model_cfg, shd.make_constrain(self.mesh, self.rules),
                                attend)
        self.model, self.apply_fn, self.loss_fn = model, model.apply, loss_fn
        abstract_params = jax.eval_shape(lambda: model.init(config.seed))
        self.param_shardings = shd.param_shardings(abstract_params, self.mesh, self.rules,
                                                   model.logical_axes)
        if tx is None:
            tx, default_schedule = make_optimizer(config.optim, config.train.steps)
            schedule = schedule or default_schedule
        self.tx, self.schedule = tx, schedule or (lambda step: jnp.nan)
        if hooks is None:
            from genjax.hooks.registry import build_hooks

            hooks = build_hooks(config, self.data, self.batch_shards,
                                length_multiple=128 if self.attention == "splash" else 1,
                                param_labels=layer_labels(abstract_params))
        self.hooks = list(hooks)
        check_capabilities(self.hooks, model)
        self.monitor = Monitor(self.hooks, self.mesh, self.batch_axes, fuse=fuse_setting(
            config.hooks.get("fuse_passes", "auto"), self.mesh.devices.flat[0].platform))
        self.schema = list(TRAIN_SCHEMA) + self.monitor.schema
        batch = shd.batch_sharding(self.mesh, self.rules)
        self.batch_shardings = {"inputs": batch, "targets": batch, "loss_mask": batch,
                                "domain": shd.batch_sharding(self.mesh, self.rules, ndim=1)}
        self.state_shardings = self._state_shardings(abstract_params)
        step_fn = make_train_step(self.apply_fn, self.tx, self.schedule, self.monitor.units,
                                  config.train.grad_accum, loss_fn,
                                  skip_nonfinite=config.train.on_nonfinite == "skip")
        self.step_fn = jax.jit(
            step_fn,
            in_shardings=(self.state_shardings, self.batch_shardings, self.monitor.shardings),
            out_shardings=(self.state_shardings, shd.replicated(self.mesh)),
            donate_argnums=(0,), static_argnums=(3,),  # due: see run_hooks
        )
        self.gate = config.hooks.gate
        self._programs: dict[frozenset[int], Any] = {}  # hooks.gate=programs: due set -> step
        if self.gate == "programs" and len(self.due_sets) > MAX_PROGRAMS:
            raise ConfigError(f"hooks.gate=programs would compile {len(self.due_sets)} step "
                              f"programs for these hooks' every values (at most "
                              f"{MAX_PROGRAMS}); use hooks.gate=cond or fewer distinct every")

    def due(self, step: int) -> frozenset[int]:
        """Indices of the hook units with every > 1 that run at `step`."""
        return frozenset(i for i, u in enumerate(self.monitor.units)
                         if u.every > 1 and step % u.every == 0)

    @functools.cached_property
    def due_sets(self) -> dict[frozenset[int], int]:
        """Every distinct `due(step)` over one period of the units' every values, with the
        first step that has it."""
        firsts: dict[frozenset[int], int] = {}
        for step in range(math.lcm(1, *(u.every for u in self.monitor.units))):
            firsts.setdefault(self.due(step), step)
        return firsts

    def step_at(self, step: int):
        """The step function to call at `step`: `step_fn` (hooks.gate=cond: every-N hooks under
        `lax.cond`), or with hooks.gate=programs the program compiled for the hooks due at
        that step, each of them without a cond (compiled on first use, or all at once by
        `compile_programs`)."""
        if self.gate == "cond":
            return self.step_fn
        due = self.due(step)
        if due not in self._programs:
            self._programs[due] = self.step_fn.lower(*self.abstract_args(), due).compile()
        return self._programs[due]

    def compile_programs(self) -> dict[frozenset[int], Any]:
        """hooks.gate=programs: every due set's compiled step program, compiled now if not
        yet ({} with hooks.gate=cond, whose one step compiles at its first call)."""
        if self.gate == "programs":
            for step in self.due_sets.values():
                self.step_at(step)
        return dict(self._programs)

    @property
    def batch_axes(self) -> tuple[str, ...]:
        """The mesh axes the batch (train and hook rows) is split over (data, fsdp)."""
        entry = shd.logical_to_spec(("batch",), self.rules)[0]
        return (entry,) if isinstance(entry, str) else tuple(entry or ())

    @property
    def batch_shards(self) -> int:
        """How many ways the batch axis is split."""
        return math.prod(self.mesh.shape[a] for a in self.batch_axes)

    def _check_batch(self) -> None:
        c = self.config.train
        n = self.batch_shards
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
        masked = lambda x: isinstance(x, optax.MaskedNode)  # Muon's partitioned states
        opt_shardings = optax.tree_map_params(
            self.tx, lambda x, s: x if masked(x) else s, opt_shapes, self.param_shardings,
            transform_non_params=lambda _: repl, is_leaf=masked)
        return TrainState(step=repl, params=self.param_shardings, opt_state=opt_shardings,
                          rng=repl)

    def _make_state(self) -> TrainState:
        return init_state(self.model.init(self.config.seed), self.tx, self.config.seed)

    def init_state(self) -> TrainState:
        """Fresh state, created directly in its shardings (no full copy on one device)."""
        return jax.jit(self._make_state, out_shardings=self.state_shardings)()

    def flops_per_step(self) -> float:
        """Training FLOPs of one step (for MFU): analytic from the model when it says, else
        XLA's count of the whole step without hooks (lowered, not compiled; with one
        gradient micro-batch, since a loop body is counted once)."""
        c = self.config.train
        if self.model.flops_per_token is not None:
            return self.model.flops_per_token(c.seq_len) * c.batch_size * c.seq_len
        bare = make_train_step(self.apply_fn, self.tx, self.schedule, (), 1, self.loss_fn)
        state, batch, _ = self.abstract_args()
        cost = jax.jit(bare).lower(state, batch, []).cost_analysis() or {}
        return float(cost.get("flops", 0.0))

    def abstract_args(self) -> tuple[Any, Any, Any]:
        """(state, batch, hook data) as sharded ShapeDtypeStructs, for `step_fn.lower`."""
        state = abstract_like(jax.eval_shape(self._make_state), self.state_shardings)
        b, t = self.config.train.batch_size, self.config.train.seq_len
        shapes = {"inputs": ((b, t), np.int32), "targets": ((b, t), np.int32),
                  "loss_mask": ((b, t), np.float32), "domain": ((b,), np.int32)}
        batch = {k: jax.ShapeDtypeStruct(shape, dt, sharding=self.batch_shardings[k])
                 for k, (shape, dt) in shapes.items()}
        return state, batch, self.monitor.abstract()

    def place_hook_data(self) -> list[Any]:
        """Eval data onto the devices once; it stays there for the whole run."""
        return self.monitor.place()

    def local_rows(self) -> tuple[int, int]:
        """The rows [start, stop) of each global batch that this process's devices hold (all
        of them when the batch axes do not split across processes: replicas read the same
        rows)."""
        b, t = self.config.train.batch_size, self.config.train.seq_len
        held = {(s[0].start or 0, b if s[0].stop is None else s[0].stop) for s in
                self.batch_shardings["inputs"].addressable_devices_indices_map((b, t)).values()}
        start, stop = min(a for a, _ in held), max(z for _, z in held)
        if sum(z - a for a, z in held) != stop - start:
            raise shd.MeshError(f"process {jax.process_index()} holds batch rows "
                                f"{sorted(held)}, not one contiguous range; order the mesh "
                                "so that each process's devices hold neighbouring batch shards")
        return start, stop

    def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows of the batch (`local_rows`) as global arrays, in one transfer."""
        b = self.config.train.batch_size
        return jax.make_array_from_process_local_data(
            {k: self.batch_shardings[k] for k in local}, local,
            {k: (b, *v.shape[1:]) for k, v in local.items()})


def check_replica_rows(rows: np.ndarray, digests: np.ndarray, global_batch: int) -> None:
    """Every process's [start, stop) rows (`rows`, [P, 2]) and a digest of the rows it read
    (`digests`, [P]): the ranges must cover the batch, and processes holding replicas of a
    batch shard (the same range) must have read identical rows."""
    covered = np.zeros(global_batch, bool)
    for start, stop in rows:
        covered[start:stop] = True
        same = np.flatnonzero((rows == (start, stop)).all(axis=1))
        if len(set(digests[same].tolist())) > 1:
            raise DataError(f"processes {same.tolist()} hold replicas of batch rows {start}.."
                            f"{stop - 1} but read different rows (digests "
                            f"{digests[same].tolist()}); every host must see the same data "
                            "config and files")
    if not covered.all():
        raise DataError(f"no process reads batch rows {np.flatnonzero(~covered).tolist()[:8]}")


class Trainer:
    """A run: a `TrainProgram` plus workdir, checkpoints, resume, sinks and progress.
    `program_kwargs` go to `TrainProgram` (model, tx, schedule, loss_fn, data, hooks,
    devices)."""

    def __init__(self, config: ConfigDict, workdir: str | os.PathLike, *,
                 sinks: Sequence[Sink] | None = (), **program_kwargs: Any):
        self.workdir = prepare_workdir(workdir)
        self.program = TrainProgram(config, **program_kwargs)
        self.config, self.data = self.program.config, self.program.data
        self.sinks = [check_sink(s) for s in sinks or ()]
        self.schema = [*self.program.schema, *HOST_SCHEMA, *SPIKE_SCHEMA]  # what sinks get
        self.spikes = SpikeDetector(config.analysis.spike_window, config.analysis.spike_sigmas)
        self._skipped = 0  # updates skipped as not finite, through the last emitted row
        self._progress: Progress | None = None
        self.hook_data = self.program.place_hook_data()
        self.checkpointer = Checkpointer(self.workdir / "checkpoints", config.checkpoint.every,
                                         config.checkpoint.keep, config.checkpoint.async_save)

    def restore_or_init(self, at_most: int | None = None) -> tuple[TrainState, int]:
        """Fresh state (recording the run in WORKDIR/config.json), or the latest checkpoint
        once the config and schema are checked against that record (`genjax.train.resume`):
        another run stops here, before anything is restored or written. A damaged latest
        checkpoint falls back to the one before (`Checkpointer.restore_latest`); `at_most`
        restores the newest at or before that step (fresh state when there is none)."""
        latest = self.checkpointer.latest_step()
        record = resume.run_record(self.config, self.program.schema)
        if latest is None:
            self._write_record(record)
            return self.program.init_state(), 0
        saved = resume.read_record(self.workdir)
        if saved is not None:
            resume.check_resume(self.workdir, record, saved)
        abstract = self.program.abstract_args()[0]
        restored = self.checkpointer.restore_latest(abstract, at_most, warn=self._warn)
        if restored is None:
            return self.program.init_state(), 0
        state, position, latest = restored
        self._skipped = int(position.get("skipped_updates", 0))
        expected = self.data_position(latest)
        for key in ("seed", "batch_size", "domains"):  # workdirs from before config.json
            if position.get(key) != expected[key]:
                raise resume.ResumeError(
                    f"cannot resume {self.workdir}: its checkpoint at step {latest} was written "
                    f"with {key}={position.get(key)!r}, but the config now says "
                    f"{expected[key]!r}; use a new --workdir")
        self._write_record(record)  # the safe changes, or a record for an older workdir
        return state, latest

    def _write_record(self, record: dict) -> None:
        if jax.process_index() == 0:
            resume.write_record(self.workdir, record)

    def data_position(self, step: int) -> dict:
        return {"step": int(step), "seed": int(self.config.seed),
                "batch_size": int(self.config.train.batch_size), "domains": self.data.names,
                "skipped_updates": self._skipped}

    def run_meta(self) -> dict[str, Any]:
        import genjax

        return {"config": self.config.to_json(), "genjax_version": genjax.__version__,
                "domains": self.data.names, "tokens_per_step":
                self.config.train.batch_size * self.config.train.seq_len,
                "mesh": {k: int(v) for k, v in self.program.mesh.shape.items()}}

    # ------------------------------------------------------------------------------- loop
    def run(self, stop_after: int | None = None) -> TrainResult:
        """Trains to `train.steps` (or until `stop_after` steps are done), resuming if possible.

        SIGINT/SIGTERM (handled when called from the main thread): the step in flight
        finishes, its row is written, a checkpoint is saved, the stream is flushed and trimmed,
        then `Interrupted` is raised; a second signal ends the process at once. A non-finite
        loss or gradient raises `NonFiniteError` with `train.on_nonfinite="stop"`."""
        with _StopSignals(self) as signals:
            return self._run(stop_after, signals)

    def _run(self, stop_after: int | None, signals: _StopSignals) -> TrainResult:
        cfg = self.config
        self._skipped = 0
        state, start = self.restore_or_init()
        gap = self._first_missing_row(start)
        if gap is not None:  # recompute the rows the store lacks instead of leaving a hole
            latest, self._skipped = start, 0
            state, start = self.restore_or_init(at_most=gap)
            self._warn(f"warning: the metric store has no row for step {gap}: resuming from "
                       f"step {start} instead of {latest} to recompute the rows from there")
        total = cfg.train.steps
        end = total if stop_after is None else min(total, stop_after)
        tokens_per_step = cfg.train.batch_size * cfg.train.seq_len
        mesh = self.program.mesh
        peak, _ = peak_flops(mesh.devices.flat[0])
        progress = self._progress = Progress(
            total, start, tokens_per_step, self.program.flops_per_step(), peak * mesh.size,
            cfg.log.progress if jax.process_index() == 0 else "none", cfg.log.every)
        if start:
            progress.message(f"resumed from checkpoint at step {start} in {self.workdir}")
        for hook in self.program.hooks:
            if getattr(hook, "startup_note", ""):
                progress.message(hook.startup_note)
        for sink in self.sinks:
            sink.open(self.schema, self.run_meta(), start)
            if sink.warning:
                progress.message(f"warning: {sink.warning}")
        self._prime_spikes(start)
        rows = self.program.local_rows()
        batches = self.data.train_batches(cfg.train.batch_size, start + cfg.data.order_offset,
                                          rows, cfg.data.prefetch)
        losses: dict[int, float] = {}
        pending: tuple[int, Any] | None = None
        vote = None  # several processes: the stop flags reduced on device, read one step late
        stopped_by, failure, nonfinite = 0, None, None
        try:
            for step in range(start, end):
                signals.in_flight = step + 1
                local = next(batches)
                if step == start and jax.process_count() > 1:
                    self._check_replicas(rows, local)
                batch = self.program.global_batch(local)
                if step == start:
                    state, metrics = self._first_step(progress, step, state, batch)
                else:
                    state, metrics = self.program.step_at(step)(state, batch, self.hook_data)
                previous, pending = pending, (step, metrics)
                if previous is not None:  # fetch step t-1 only after step t is dispatched
                    self._emit(*previous, losses, progress)
                stopped_by, vote = self._stop_vote(signals.signum, vote)
                if stopped_by:  # every process agrees: stop after this step
                    break
                requested = self._checkpoint_requested()  # always read: it clears the requests
                if (requested or (step + 1) % cfg.checkpoint.every == 0) and step + 1 < end:
                    self._emit(*pending, losses, progress)
                    pending = None
                    self._checkpoint(step + 1, state)
            if pending is not None:
                self._emit(*pending, losses, progress)
        except KeyboardInterrupt:  # no handlers (not the main thread): stop the same way
            stopped_by = int(signal.SIGINT)
            if pending is not None:  # a row lost here is recomputed by the next resume
                self._emit(*pending, losses, progress)
        except NonFiniteError as e:
            nonfinite = e
        except StreamError as e:
            failure = e
            if pending is not None:  # sinks buffer a row before reporting, so keep this one too
                try:
                    self._emit(*pending, losses, progress)
                except (StreamError, NonFiniteError):
                    pass
        progress.close()
        if nonfinite is not None:  # rows through the bad step are written; nothing is saved
            for sink in self.sinks:
                with contextlib.suppress(StreamError):
                    sink.close()
            self.checkpointer.wait()
            raise nonfinite.explained(self.checkpointer.latest_step(),
                                      self.checkpointer.directory)
        final = int(state.step)
        if failure is None:
            try:
                self._checkpoint(final, state)
                for sink in self.sinks:
                    sink.close()
            except StreamError as e:
                failure = e
        if failure is not None:
            raise self._stream_failure(failure, final, state)
        self.checkpointer.wait()
        if stopped_by:
            raise Interrupted(stopped_by, final)
        return TrainResult(final, losses, state, stopped_early=end < total)

    def _first_step(self, progress: Progress, step: int, state: TrainState, batch: Any):
        """Dispatches the first step, saying how long its compilation took (minutes for a pod
        step); with hooks.gate=programs every due set's program is compiled first."""
        programs = len(self.program.due_sets) if self.program.gate == "programs" else 1
        progress.message("compiling the train step" +
                         (f" ({programs} programs, hooks.gate=programs)" if programs > 1 else ""))
        began = time.perf_counter()
        self.program.compile_programs()
        out = self.program.step_at(step)(state, batch, self.hook_data)  # returns once compiled
        progress.message(f"compiled in {time.perf_counter() - began:.1f} s")
        return out

    def _warn(self, message: str) -> None:
        if self._progress is not None:
            self._progress.message(message)
        elif jax.process_index() == 0:
            print(message, file=sys.stderr, flush=True)

    def _first_missing_row(self, start: int) -> int | None:
        """The first step before `start` whose row a durable sink lacks (all processes agree:
        only process 0 has the store)."""
        gaps = [sink.first_missing_row(self.schema, start) for sink in self.sinks]
        gap = min((g for g in gaps if g is not None), default=-1)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            gap = int(multihost_utils.broadcast_one_to_all(np.int64(gap)))
        return None if gap < 0 else gap

    def _check_replicas(self, rows: tuple[int, int], local: dict[str, np.ndarray]) -> None:
        """Once, at the first step: all processes compare which rows they read (one sync)."""
        import zlib

        from jax.experimental import multihost_utils

        digest = zlib.crc32(b"".join(np.ascontiguousarray(local[k]).tobytes()
                                     for k in sorted(local)))
        table = np.asarray(multihost_utils.process_allgather(
            np.asarray([rows[0], rows[1], digest], np.int64)))
        check_replica_rows(table[:, :2], table[:, 2], self.config.train.batch_size)

    def _stop_vote(self, signum: int, vote: Any) -> tuple[int, Any]:
        """(the signal every process agrees to stop on, or 0; the vote now in flight).

        One process: its own flag. Several: each step dispatches a max over every process's
        flag (a 1-element-per-device all-reduce, asynchronous like the step) and reads the
        previous step's result, finished by now; so all processes stop after the same step,
        one or two steps after the first signal, without a host sync."""
        if jax.process_count() == 1:
            return signum, None
        if not hasattr(self, "_vote_fn"):
            devices = list(self.program.mesh.devices.flat)
            flat = jax.sharding.Mesh(np.array(devices), ("all",))
            sharding = NamedSharding(flat, PartitionSpec("all"))
            local = sum(d.process_index == jax.process_index() for d in devices)
            reduce = jax.jit(jnp.max, out_shardings=NamedSharding(flat, PartitionSpec()))
            flags = {s: jax.make_array_from_process_local_data(  # placed once: each vote is
                sharding, np.full((local,), s, np.int32), (len(devices),))  # one small dispatch
                for s in (0, *map(int, _StopSignals.SIGNALS))}
            self._vote_fn = lambda s: reduce(flags[int(s)])
        agreed = int(vote) if vote is not None else 0
        return agreed, self._vote_fn(signum)

    def _stream_failure(self, failure: StreamError, final: int, state) -> StreamError:
        """Saves the checkpoint and every unwritten row, then explains what happened. A resume
        recomputes the unwritten rows from the checkpoint before them (`_first_missing_row`);
        the .npz keeps them for inspection."""
        self.checkpointer.save(final, state, self.data_position(final))
        self.checkpointer.wait()
        notes = [f"checkpoint saved at step {final}"]
        for sink in self.sinks:
            rows = sink.unwritten()
            if rows is not None:
                first, last = int(rows["step"][0]), int(rows["step"][-1])
                dump = self.workdir / f"unwritten_metrics_{first}-{last}.npz"
                with dump.open("wb") as f:
                    np.savez(f, **{k.replace("/", "."): v for k, v in rows.items()})
                notes.append(f"rows {first}..{last} saved to {dump}")
        return StreamError(f"{failure}; training stopped ({'; '.join(notes)}; a resume "
                           "recomputes the rows the store lacks)")

    def _emit(self, step: int, metrics: Any, losses: dict, progress: Progress) -> None:
        """Fetches step's row and hands it to the sinks; checks it for a non-finite step
        (flagged on device, read here one step late, with the row)."""
        row = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
        # The row's params (hooks see them before the update) were trained on `step` batches.
        row["tokens_seen"] = np.int64(step * self.config.train.batch_size
                                      * self.config.train.seq_len)
        bad = float(row.get("train/nonfinite", 0.0)) > 0
        skip = self.config.train.on_nonfinite == "skip"
        self._skipped += int(bad and skip)
        row["train/skipped_updates"] = np.float32(self._skipped)
        self.spikes.update(step, row)
        losses[step] = float(row["train/loss"])
        for sink in self.sinks:
            sink.write(step, row)
        progress.update(step, losses[step])
        for flag, source in WATCHED.items():
            if row[flag]:
                progress.message(f"spike: step {step}: {source} {float(row[source]):.4g}")
        if bad and skip and (self._skipped <= 10 or self._skipped % 100 == 0):
            progress.message(f"warning: step {step}: loss or gradient not finite, update "
                             f"skipped ({self._skipped} so far)")
        if bad and not skip:
            raise NonFiniteError(step, float(row["train/loss"]),
                                 float(row.get("train/grad_norm", np.nan)))

    def _prime_spikes(self, start: int) -> None:
        """A resumed run's spike window: the stored rows just before `start`."""
        from genjax.stream.store import read

        stores = [s for s in self.sinks if isinstance(s, TensorStoreSink)]
        if not start or not stores:
            return
        try:
            run = read(stores[0].url)
        except StreamError:
            return
        before = run.steps < start
        self.spikes.prime({source: run.metrics[source].values[before]
                           for source in WATCHED.values() if source in run.metrics})

    def _checkpoint_requested(self) -> bool:
        """A sink (e.g. the online hop detector) may ask for a checkpoint now."""
        asked = [s for s in self.sinks if s.checkpoint_requested]
        for sink in asked:
            sink.checkpoint_requested = False
        return bool(asked)

    def _checkpoint(self, step: int, state: TrainState) -> None:
        """Flushes every sink, then saves: a checkpoint only exists once every row before it
        is written, so a resume from it never leaves a hole."""
        for sink in self.sinks:
            sink.flush()
        if (not self.checkpointer.save(step, state, self.data_position(step))
                and step not in self.checkpointer.all_steps()):
            self._warn(f"warning: the checkpoint at step {step} was not saved")


HOST_SCHEMA = (
    MetricSpec("train/skipped_updates", description="updates not applied so far because their "
               "loss or gradient was not finite (train.on_nonfinite=skip)", unit="updates"),
)


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped the run after the step in flight, a checkpoint and a flush."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = int(signum), int(step)
        self.exit_code = 128 + self.signum  # what a shell reports for a process killed by it
        super().__init__(f"stopped by {signal.Signals(self.signum).name} at step {step}: "
                         "checkpoint saved and metrics flushed; the same command resumes")


class NonFiniteError(RuntimeError):
    """A step's loss or gradient norm was not finite (train.on_nonfinite=stop)."""

    def __init__(self, step: int, loss: float, grad_norm: float, detail: str = ""):
        self.step, self.loss, self.grad_norm = step, loss, grad_norm
        super().__init__(f"step {step}: the train loss ({loss:.4g}) or gradient norm "
                         f"({grad_norm:.4g}) is not finite; training stopped "
                         f"(train.on_nonfinite=stop){detail}")

    def explained(self, checkpoint: int | None, directory: paths.Path) -> NonFiniteError:
        where = (f"; the last good checkpoint is step {checkpoint} in {directory}, where a "
                 "resume starts" if checkpoint is not None
                 else "; no checkpoint was saved before it, a resume starts from step 0")
        return NonFiniteError(self.step, self.loss, self.grad_norm,
                              where + " (lower optim.lr, or --config.train.on_nonfinite=skip)")


class _StopSignals:
    """SIGINT and SIGTERM while a Trainer runs: the first asks the loop to stop after the step
    in flight (one line says so); a second ends the process at once, as SIGKILL would: the
    store stays readable (TensorStore writes whole files by rename) and the last committed
    checkpoint restorable (orbax commits by rename); the next resume recomputes the rest.

    Python runs signal handlers only between bytecodes of the main thread, which may sit in a
    long compile or device wait; the signal numbers therefore also go through
    `signal.set_wakeup_fd` to a watcher thread, which acts at once. Outside the main thread
    nothing is installed."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, trainer: Trainer):
        self.trainer, self.signum, self.in_flight = trainer, 0, 0
        self._installed, self._seen, self._lock = False, 0, threading.Lock()

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        # the handler (main thread, right after the signal in the common case) sets the flag
        # deterministically; the watcher counts every signal and acts during long waits too
        self._previous = {s: signal.signal(s, lambda signum, _: self._first(signum))
                          for s in self.SIGNALS}
        self._old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._installed = True
        self._thread = threading.Thread(target=self._watch, name="genjax-signals", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._read, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in self.SIGNALS:
                    self._seen += 1
                    if self._seen > 1:
                        os.write(2, f"\n{signal.Signals(signum).name} again: exiting now; a "
                                    "resume continues from the last checkpoint\n".encode())
                        os._exit(128 + signum)
                    self._first(signum)

    def _first(self, signum: int) -> None:
        if not self._lock.acquire(blocking=False):  # the handler and the watcher both call
            return
        if self.signum:
            return
        self.signum = signum
        name = signal.Signals(signum).name
        line = (f"{name}: stopping at step {self.in_flight} (the step in flight), then saving "
                f"a checkpoint and flushing metrics; exit status {128 + signum} (a second "
                "signal exits at once)")
        if jax.process_index() == 0:
            self.trainer._warn(line)
        else:
            print(f"{line} [process {jax.process_index()}]", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if not self._installed:
            return
        signal.set_wakeup_fd(self._old_fd)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        os.close(self._write)
        self._thread.join(timeout=5)
        os.close(self._read)


def train(config: ConfigDict, workdir: str | os.PathLike, **kwargs) -> TrainResult:
    """One call: build a `Trainer` and run it."""
    return Trainer(config, workdir, **kwargs).run()
