"""The user-facing error types: the CLI prints these as one line and exits with status 2."""

from __future__ import annotations


def user_errors() -> tuple[type[Exception], ...]:
    from genjax.config import ConfigError
    from genjax.data.sources import DataError
    from genjax.sharding import MeshError
    from genjax.train.trainer import WorkdirError

    errors: list[type[Exception]] = [ConfigError, DataError, MeshError, WorkdirError,
                                     FileNotFoundError]
    try:
        from genjax.stream.store import StreamError

        errors.append(StreamError)
    except ImportError:
        pass
    return tuple(errors)
