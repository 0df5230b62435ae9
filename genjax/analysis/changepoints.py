"""Change points of a metric series: abrupt level changes on top of a smooth trend, under
autocorrelated noise (`genjax.analysis.changes`: trend + steps/ramps + AR(1), GLS, a BIC-like
penalty of `beta` log(n) innovation variances per change). A smooth decay, a schedule-shaped
curve or the persistent wander of an autocorrelated series gives none; abrupt jumps are found
at their step, ramps at their midpoint.
"""

from __future__ import annotations

import numpy as np

from genjax.analysis.changes import DEFAULT_BETA, fit

__all__ = ["DEFAULT_BETA", "change_details", "change_points", "noise_sigma", "segment_means",
           "smooth"]


def noise_sigma(values: np.ndarray) -> float:
    """Long-run noise scale of a series, sigma_e / (1 - phi) of its AR(1) fit around the trend
    and changes (the standard deviation a mean over many rows has times sqrt(rows))."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if x.size < 8:
        return 0.0
    f = fit(x)
    return float(f.sigma_e / (1.0 - f.phi) * np.sqrt(f.bin))  # per row, not per bin


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average (edges use the available points)."""
    if window <= 1:
        return values
    kernel = np.ones(window)
    num = np.convolve(values, kernel, mode="same")
    den = np.convolve(np.ones_like(values), kernel, mode="same")
    return num / den


def change_points(values: np.ndarray, beta: float = DEFAULT_BETA, smooth_window: int = 1,
                  min_size: int | None = None, steps: np.ndarray | None = None) -> list[int]:
    """Indices where a change is half done (0 < i < n). NaNs are skipped (e.g. `every=N` rows);
    returned indices refer to the original array. `steps`: the train step of each row (the
    trend is smooth in log(1 + step); default: the row index). `smooth_window` averages the
    series first (this does not make more changes significant: the noise scale is the
    smoothed series' own)."""
    return [c["index"] for c in change_details(values, beta, smooth_window, min_size, steps)]


def change_details(values: np.ndarray, beta: float = DEFAULT_BETA, smooth_window: int = 1,
                   min_size: int | None = None, steps: np.ndarray | None = None) -> list[dict]:
    """Each change: `index` (half done), `start` and `end` (first and last row of the change,
    original indices), `size` (level after minus before)."""
    values = np.asarray(values, np.float64)
    finite = np.flatnonzero(np.isfinite(values))
    if finite.size < 8:
        return []
    steps = finite if steps is None else np.asarray(steps)[finite]
    x = smooth(values[finite], smooth_window)
    f = fit(x, steps, beta, min_size or 3)
    return [{"index": int(finite[c.index]), "start": int(finite[c.start]),
             "end": int(finite[min(c.start + c.length - 1, finite.size - 1)]),
             "size": c.size} for c in f.changes]


def segment_means(values: np.ndarray, points: list[int]) -> list[float]:
    edges = [0, *points, len(values)]
    mean = lambda v: float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")
    return [mean(values[a:b]) for a, b in zip(edges[:-1], edges[1:])]
