"""genjax.train.checkpoint: the filter for a failed restore's late asyncio callbacks."""

import asyncio
import sys
import types

from genjax.train import checkpoint


def unraisable(exc: BaseException) -> types.SimpleNamespace:
    return types.SimpleNamespace(exc_type=type(exc), exc_value=exc,
                                 exc_traceback=exc.__traceback__, err_msg=None, object=None)


def closed_loop_error() -> RuntimeError:
    """The real error: a callback scheduled into an asyncio loop after it was closed."""
    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(lambda: None)
    except RuntimeError as e:
        return e
    raise AssertionError("a closed loop accepted a callback")


def test_closed_loop_callbacks_are_dropped_and_everything_else_passes(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    checkpoint.ignore_closed_loop_callbacks()
    checkpoint.ignore_closed_loop_callbacks()  # installed once: no second wrapper
    hook = sys.unraisablehook
    assert hook is not seen.append
    hook(unraisable(closed_loop_error()))
    assert seen == []
    try:  # the same message from elsewhere is not a closed-loop callback
        raise RuntimeError("Event loop is closed")
    except RuntimeError as e:
        other = unraisable(e)
    unrelated = unraisable(ValueError("something else"))
    hook(other)
    hook(unrelated)
    assert seen == [other, unrelated]
