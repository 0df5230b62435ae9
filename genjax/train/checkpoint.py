"""Orbax checkpoints of the train state and the data position, with automatic resume.

A checkpoint is only visible once orbax has committed it (it writes into a temporary directory
and renames it), so a process killed mid-save leaves the previous checkpoints restorable. A
committed checkpoint can still be damaged later (a truncated file, a disk error):
`restore_latest` then moves it aside to `corrupt_checkpoints/` beside the checkpoint directory
and falls back to the newest one that restores, saying which.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from genjax import paths


class CheckpointError(RuntimeError):
    """No checkpoint in the directory can be restored."""


class Checkpointer:
    """Saves `TrainState` plus a JSON data position; keeps the newest `keep`.

    The caller decides when to save (every `every` steps, on request, at the end); every save
    is forced, since orbax's own interval check refuses any other step and any step at or
    below the newest one, e.g. when a resume recomputes missing metric rows from an older one.
    """

    def __init__(self, directory: str | os.PathLike, every: int, keep: int,
                 async_save: bool = True):
        self.directory = paths.as_path(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                save_interval_steps=every, max_to_keep=keep,
                enable_async_checkpointing=async_save, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores onto the shardings carried by `abstract_state` (ShapeDtypeStructs)."""
        step = self.latest_step() if step is None else step
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored.state, dict(restored.data)

    def restore_latest(self, abstract_state: Any, at_most: int | None = None,
                       warn: Callable[[str], None] = print) -> tuple[Any, dict, int] | None:
        """The newest checkpoint (with step <= `at_most`) that restores, as (state, data
        position, step); None when there is none. Newer ones that fail to restore while an
        older one restores are damaged: they are moved aside and `warn` names both. When every
        candidate fails (a config that does not fit them, say) nothing is moved and the newest
        one's error is raised as a CheckpointError."""
        steps = sorted((s for s in self.all_steps() if at_most is None or s <= at_most),
                       reverse=True)
        failed: list[tuple[int, BaseException, bytes]] = []
        if steps:
            ignore_closed_loop_callbacks()  # before any restore can fail
        for step in steps:
            error = None
            with _captured_stderr() as captured:  # what a failing restore prints: kept
                try:                              # for its .log, not shown
                    state, position = self.restore(abstract_state, step)
                except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds
                    error = e
            if error is None:
                os.write(2, captured[0])
            if _all_processes(error is None):
                break
            failed.append((step, error or CheckpointError("not restorable on another process"),
                           captured[0] if error is not None else b""))
        else:
            if not failed:
                return None
            step, error, _ = failed[0]
            raise CheckpointError(f"cannot restore the checkpoint at step {step} in "
                                  f"{self.directory}: {_one_line(error)}") from error
        if failed:
            moved = self._move_aside(failed)
            bad = ", ".join(f"step {s} ({_one_line(e, 120)})" for s, e, _ in failed)
            warn(f"warning: checkpoint {bad} in {self.directory} cannot be restored; moved to "
                 f"{moved}; resuming from the checkpoint at step {step}")
        return state, position, step

    def _move_aside(self, failed: list[tuple[int, BaseException, bytes]]) -> paths.Path:
        """Damaged checkpoints to `corrupt_checkpoints/<step>` (kept for inspection), with
        what restoring them printed in `<step>.log`."""
        target = self.directory.parent / "corrupt_checkpoints"
        if jax.process_index() == 0:
            target.mkdir(parents=True, exist_ok=True)
            for step, error, output in failed:
                dest, n = target / str(step), 1
                while dest.exists():
                    dest, n = target / f"{step}.{n}", n + 1
                paths.move(self.directory / str(step), dest)
                dest.with_name(dest.name + ".log").write_bytes(
                    f"{type(error).__name__}: {error}\n\n".encode() + output)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("genjax: damaged checkpoints moved")
        self.manager.reload()
        return target

    def save(self, step: int, state: Any, data_position: dict, force: bool = True) -> bool:
        """Saves unless a checkpoint of `step` exists (False then); always forced (see the
        class docstring), `force` is kept for callers that pass it."""
        del force
        if step in self.manager.all_steps():
            return False
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_position)),
            force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


@contextlib.contextmanager
def _captured_stderr():
    """Redirects file descriptor 2 (Python's and C++'s stderr) to a temporary file; yields a
    list that holds what was written, as bytes, once the body is done."""
    sys.stderr.flush()
    saved, captured = os.dup(2), []
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read())


def _is_closed_loop_callback(unraisable: Any) -> bool:
    """A callback into an asyncio loop that is already closed (`call_soon_threadsafe` raising
    "Event loop is closed"): what the reads of a failed orbax restore report when they finish
    after the restore gave up and closed its loop."""
    exc = unraisable.exc_value
    if not isinstance(exc, RuntimeError) or str(exc) != "Event loop is closed":
        return False
    frames = [f.name for f in traceback.extract_tb(unraisable.exc_traceback)]
    return "call_soon_threadsafe" in frames


def ignore_closed_loop_callbacks() -> None:
    """Installs (once) a `sys.unraisablehook` that drops the closed-loop callbacks of a failed
    restore and passes every other unraisable exception to the hook it replaces. Without it,
    resuming past a damaged checkpoint prints dozens of asyncio tracebacks, some while the run
    goes on."""
    previous = sys.unraisablehook
    if getattr(previous, "_genjax_closed_loop_filter", False):
        return

    def hook(unraisable):
        if not _is_closed_loop_callback(unraisable):
            previous(unraisable)

    hook._genjax_closed_loop_filter = True
    sys.unraisablehook = hook


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[:limit] + "..."


def _all_processes(ok: bool) -> bool:
    """True when `ok` holds on every process (one host sync; used only while resuming)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))
