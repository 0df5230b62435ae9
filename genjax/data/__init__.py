"""Data: tagged domain sources, tokenizers and the grain mixture pipeline."""

from genjax.data.pipeline import Data, build_data
from genjax.data.sources import HELDOUT, TRAIN, DataError, ProbeItem

__all__ = ["HELDOUT", "TRAIN", "Data", "DataError", "ProbeItem", "build_data"]
