"""Regimes and hops of a probe family.

At every step, a family is GENERALIZING when the bootstrap 95% CI of its mean per-item margin
lies above zero, PATTERN_MATCHING when it lies below zero, and UNDECIDED otherwise (the
replication recipe of the mode-hopping paper). Without per-item data, the CI comes from the
family margin over a trailing window. A hop is a switch between the two decided regimes that
lasts at least `min_regime_steps` rows (shorter runs are flicker); a regime persists through
undecided gaps until the opposite regime is confirmed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

GENERALIZING, UNDECIDED, PATTERN_MATCHING = 1, 0, -1
NAMES = {GENERALIZING: "generalizing", UNDECIDED: "undecided",
         PATTERN_MATCHING: "pattern_matching"}


@dataclasses.dataclass
class RegimeTrack:
    """Per-step regime labels with the confidence interval that decided them."""

    labels: np.ndarray  # int8 [S]: +1, 0, -1
    mean: np.ndarray  # [S]
    ci_low: np.ndarray  # [S]
    ci_high: np.ndarray  # [S]


@dataclasses.dataclass
class Hop:
    family: str
    step: int  # first step of the new regime
    direction: str  # "to_generalizing" or "to_pattern_matching"
    size: float  # mean margin of the new regime minus that of the regime it left
    left_duration: int  # steps from the start of the left regime to this hop


def bootstrap_weights(n_items: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_items] resampling weights (counts / n): mean = margins @ weights.T."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot) / n_items


def _label(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    labels = np.zeros(low.shape, np.int8)
    labels[low > 0] = GENERALIZING
    labels[high < 0] = PATTERN_MATCHING
    return labels


def regimes_from_items(item_margins_SxN: np.ndarray, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> RegimeTrack:
    """Bootstrap CI over items at each step (the same resamples at every step)."""
    m = np.asarray(item_margins_SxN, np.float64)
    w = bootstrap_weights(m.shape[1], n_boot, seed)
    boots_SxB = np.nan_to_num(m) @ w.T
    alpha = (1 - level) / 2
    low, high = np.quantile(boots_SxB, [alpha, 1 - alpha], axis=1)
    rows_ok = np.isfinite(m).all(axis=1)
    low, high = np.where(rows_ok, low, np.nan), np.where(rows_ok, high, np.nan)
    return RegimeTrack(_label(low, high), np.where(rows_ok, m.mean(1), np.nan), low, high)


def regimes_from_window(margin_S: np.ndarray, window: int = 50, n_boot: int = 1000,
                        seed: int = 0, level: float = 0.95) -> RegimeTrack:
    """Bootstrap CI of the family margin over the trailing `window` steps."""
    x = np.asarray(margin_S, np.float64)
    s = len(x)
    low, high, mean = (np.full(s, np.nan) for _ in range(3))
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    for t in range(s):
        win = x[max(0, t - window + 1): t + 1]
        win = win[np.isfinite(win)]
        if win.size < max(5, window // 5):
            continue
        idx = rng.integers(win.size, size=(n_boot, win.size))
        boots = win[idx].mean(1)
        low[t], high[t] = np.quantile(boots, [alpha, 1 - alpha])
        mean[t] = win.mean()
    return RegimeTrack(_label(low, high), mean, low, high)


def stable_runs(labels: np.ndarray, min_steps: int) -> list[tuple[int, int, int]]:
    """(start, end, regime) of each regime; end exclusive. A regime starts with a decided run
    of at least `min_steps` rows and lasts through undecided gaps until the opposite regime
    starts; shorter decided runs are flicker."""
    raw, start = [], 0
    for t in range(1, len(labels) + 1):
        if t == len(labels) or labels[t] != labels[start]:
            if labels[start] != UNDECIDED and t - start >= min_steps:
                raw.append((start, t, int(labels[start])))
            start = t
    merged: list[tuple[int, int, int]] = []
    for a, b, r in raw:
        if merged and merged[-1][2] == r:
            merged[-1] = (merged[-1][0], b, r)
        else:
            merged.append((a, b, r))
    return merged


def find_hops(family: str, track: RegimeTrack, steps: np.ndarray,
              min_regime_steps: int = 20) -> list[Hop]:
    """Switches between regimes; `left_duration` spans the whole regime that was left."""
    runs = stable_runs(track.labels, min_regime_steps)
    hops = []
    for (a0, a1, _), (b0, b1, rb) in zip(runs[:-1], runs[1:]):
        size = float(np.nanmean(track.mean[b0:b1]) - np.nanmean(track.mean[a0:a1]))
        direction = "to_generalizing" if rb == GENERALIZING else "to_pattern_matching"
        left = int(steps[b0] - steps[a0])  # from its start until the new regime starts
        hops.append(Hop(family, int(steps[b0]), direction, size, left))
    return hops


def segments(track: RegimeTrack, steps: np.ndarray, min_regime_steps: int) -> list[dict]:
    """Stable regimes as JSON-able records."""
    return [{"start": int(steps[a]), "end": int(steps[b - 1]), "regime": NAMES[r],
             "mean_margin": float(np.nanmean(track.mean[a:b]))}
            for a, b, r in stable_runs(track.labels, min_regime_steps)]
