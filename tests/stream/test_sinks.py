"""The Sink protocol: the trainer refuses a sink that lacks part of it, naming what."""

import pytest

from genjax.stream.sinks import BaseSink, check_sink


def test_incomplete_sink_is_refused_by_name():
    class Partial:
        def write(self, step, row):
            pass

    with pytest.raises(TypeError, match="lacks open, flush, close, first_missing_row"):
        check_sink(Partial())

    class Complete(BaseSink):
        def write(self, step, row):
            pass

    sink = check_sink(Complete())
    assert sink.first_missing_row([], 10) is None and sink.unwritten() is None
    assert sink.warning == "" and sink.checkpoint_requested is False
