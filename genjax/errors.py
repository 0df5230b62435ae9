"""The user-facing error types: the CLI prints these as one line and exits with status 2."""

from __future__ import annotations


def user_errors() -> tuple[type[Exception], ...]:
    from genjax.cluster import ClusterError
    from genjax.config import ConfigError
    from genjax.data.sources import DataError
    from genjax.hooks.base import HookError
    from genjax.hooks.probes import ProbeError
    from genjax.sharding import MeshError
    from genjax.stream.store import StreamError
    from genjax.tpu.compile import CompileError
    from genjax.train.checkpoint import CheckpointError
    from genjax.train.resume import ResumeError
    from genjax.train.trainer import WorkdirError

    return (ConfigError, DataError, MeshError, WorkdirError, ProbeError, StreamError,
            CompileError, ResumeError, HookError, CheckpointError, ClusterError,
            FileNotFoundError)
