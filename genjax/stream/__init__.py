"""The metric stream: sinks that receive host rows, the TensorStore writer and reader."""

from genjax.stream.rows import RowFetcher
from genjax.stream.sinks import BaseSink, ConsoleSink, MemorySink, Sink
from genjax.stream.store import Run, Series, StreamError, TensorStoreSink, follow, open, read
from genjax.stream.writer import MetricWriter, infer_schema

__all__ = ["BaseSink", "ConsoleSink", "MemorySink", "MetricWriter", "RowFetcher", "Run",
           "Series", "Sink", "StreamError", "TensorStoreSink", "follow", "infer_schema", "open",
           "read"]
