"""Online loss and gradient-norm spike detection on the host rows.

A step spikes when its value exceeds the robust running mean of the `window` steps before it
(their median) by more than `sigmas` robust standard deviations (1.4826 x their median absolute
deviation). Each row gets `spikes/loss` and `spikes/grad_norm` (1 on a spike, else 0) before the
sinks see it, so events are in the stream; a resumed run primes the window from the stream's
stored rows, so its flags equal an uninterrupted run's.
"""

from __future__ import annotations

import collections

import numpy as np

from genjax.hooks.base import MetricSpec

WATCHED = {"spikes/loss": "train/loss", "spikes/grad_norm": "train/grad_norm"}

SPIKE_SCHEMA = tuple(
    MetricSpec(flag, description=f"1 where {source} exceeds the median of the previous "
               "analysis.spike_window steps by analysis.spike_sigmas robust sigmas")
    for flag, source in WATCHED.items())


def is_spike(value: float, history: np.ndarray, sigmas: float, min_history: int) -> bool:
    """`value` above median(history) + sigmas x 1.4826 x MAD(history)."""
    history = history[np.isfinite(history)]
    if len(history) < min_history or not np.isfinite(value):
        return False
    median = np.median(history)
    scale = 1.4826 * np.median(np.abs(history - median))
    return bool(value > median + sigmas * max(scale, 1e-12 * max(abs(median), 1.0)))


class SpikeDetector:
    """Flags spikes of `train/loss` and `train/grad_norm` row by row (see the module doc)."""

    def __init__(self, window: int = 100, sigmas: float = 6.0):
        self.window, self.sigmas = window, sigmas
        self.min_history = max(window // 4, 5)
        self.history = {s: collections.deque(maxlen=window) for s in WATCHED.values()}
        self.events: list[tuple[int, str, float]] = []

    def prime(self, values: dict[str, np.ndarray]) -> None:
        """Fill the window with the last stored values (a resumed run)."""
        for source, series in values.items():
            if source in self.history:
                self.history[source].extend(np.asarray(series, np.float64)[-self.window:])

    def update(self, step: int, row: dict[str, np.ndarray]) -> None:
        """Adds the spike flags to `row` (in place), then remembers its values."""
        for flag, source in WATCHED.items():
            value = float(row.get(source, np.nan))
            spike = is_spike(value, np.asarray(self.history[source]), self.sigmas,
                             self.min_history)
            row[flag] = np.float32(spike)
            if spike:
                self.events.append((step, source, value))
            self.history[source].append(value)
