"""Change points in a metric series: ruptures' KernelCPD (linear kernel, in C) with a penalty
scaled to the series' own noise, so one default works for losses, accuracies and margins.

Model: piecewise-constant mean plus noise. The penalty is `beta * sigma^2 * log(n)`, with sigma
estimated robustly from first differences (MAD / sqrt(2)), which ignores slow trends and level
shifts. A steady trend therefore shows up as a staircase of change points only when it moves by
several noise widths; abrupt jumps are found at their step.
"""

from __future__ import annotations

import numpy as np
import ruptures

DEFAULT_BETA = 3.0  # calibrated on white and AR(1) noise: tests/analysis/test_changepoints.py


def noise_sigma(values: np.ndarray) -> float:
    """Robust long-run noise scale of a series, from its first differences.

    For AR(1) noise with coefficient phi, differences have lag-1 correlation -(1 - phi)/2 and
    variance 2 sigma_x^2 (1 - phi); a mean shift must beat the long-run variance
    sigma_x^2 (1 + phi) / (1 - phi), not sigma_x^2, or autocorrelated noise looks like steps.
    """
    diffs = np.diff(values)
    if diffs.size < 3:
        return 0.0
    centered = diffs - np.median(diffs)
    mad = 1.4826 * np.median(np.abs(centered))
    if mad == 0.0:  # quantized or saturated series (e.g. accuracies): most steps do not move
        mad = float(np.std(centered))
    if mad == 0.0:
        return 0.0
    clipped = np.clip(centered, -5 * mad, 5 * mad)  # level shifts do not set the noise
    rho = float(np.dot(clipped[1:], clipped[:-1]) / np.dot(clipped, clipped))
    phi = float(np.clip(1.0 + 2.0 * rho, 0.0, 0.95))
    var_x = mad**2 / (2.0 * (1.0 - phi))
    return float(np.sqrt(var_x * (1.0 + phi) / (1.0 - phi)))


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average (edges use the available points)."""
    if window <= 1:
        return values
    kernel = np.ones(window)
    num = np.convolve(values, kernel, mode="same")
    den = np.convolve(np.ones_like(values), kernel, mode="same")
    return num / den


def change_points(values: np.ndarray, beta: float = DEFAULT_BETA, smooth_window: int = 1,
                  min_size: int | None = None) -> list[int]:
    """Indices where a new segment starts (0 < i < n). NaNs are skipped (e.g. `every=N` rows);
    returned indices refer to the original array."""
    values = np.asarray(values, np.float64)
    finite = np.flatnonzero(np.isfinite(values))
    n = finite.size
    min_size = min_size or max(5, n // 100)
    if n < 2 * min_size + 1:
        return []
    x = smooth(values[finite], smooth_window)
    sigma = noise_sigma(values[finite])  # noise of the raw series
    if smooth_window > 1:
        sigma /= np.sqrt(smooth_window)
    if sigma == 0.0:
        sigma = max(float(np.std(x)) * 1e-3, 1e-12)
    penalty = beta * sigma**2 * np.log(n)
    algo = ruptures.KernelCPD(kernel="linear", min_size=min_size).fit(x.reshape(-1, 1))
    breaks = algo.predict(pen=penalty)[:-1]  # the last entry is n
    return [int(finite[b]) for b in breaks]


def segment_means(values: np.ndarray, points: list[int]) -> list[float]:
    edges = [0, *points, len(values)]
    return [float(np.nanmean(values[a:b])) for a, b in zip(edges[:-1], edges[1:])]
