"""The metric stream: sinks that receive host rows, the TensorStore writer and reader."""

from genjax.stream.sinks import ConsoleSink, MemorySink, Sink
from genjax.stream.store import Run, Series, StreamError, TensorStoreSink, follow, open, read

__all__ = ["ConsoleSink", "MemorySink", "Run", "Series", "Sink", "StreamError",
           "TensorStoreSink", "follow", "open", "read"]
