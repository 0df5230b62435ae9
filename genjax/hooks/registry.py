"""Builds the hooks a config enables (`config.hooks.*`)."""

from __future__ import annotations

from genjax.data import Data
from genjax.hooks.base import Hook


def build_hooks(config, data: Data) -> list[Hook]:
    del config, data
    return []
