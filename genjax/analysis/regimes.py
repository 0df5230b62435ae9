"""Regimes and hops of a probe family, with confidence intervals that hold under autocorrelation.

The family margin m_t (the mean of its per-item margins at row t) is split at its changes:
`genjax.analysis.changes.fit` (trend + steps/ramps + AR(1) noise, GLS) at the penalty
`beta` (HOP_BETA). Each segment between changes gets a level (the mean of m_t over its rows)
and a confidence interval with two parts:
  - time: the variance of a mean of L consecutive rows of the fitted AR(1) noise, exact for
    AR(1): sigma_u^2 / L^2 (L + 2 sum_k (L - k) phi^k), with phi bias-corrected (least
    squares underestimates it by ~(1 + 3 phi) / n, and the variance of a mean grows like
    1 / (1 - phi)^2). A strongly autocorrelated wander is therefore wide, however narrow
    the spread across items is. Where the noise around a straight line inside each segment
    is less persistent than the whole fit says, that smaller phi is used: a slow drift
    inside a regime (a model still learning) is not persistent noise. The interval uses
    Student's t with the series' effective sample size, n (1 - phi) / (1 + phi), less one,
    as degrees of freedom (at phi = 0.995 a 2,000-row series holds ~5 independent
    observations of its noise);
  - items: the variance of the mean over items of their segment means (between-cluster
    variance / clusters), where the replicates of one item (probe files with
    `hooks.probes.seeds` > 1, labels `family/ITEM.SEED`) form one cluster.
A segment is GENERALIZING when its interval lies above zero and its level above `floor` (an
effect-size floor on the margin), PATTERN_MATCHING when below zero and below -floor,
UNDECIDED otherwise or when it is shorter than `min_regime_steps` rows. A regime lasts
through undecided segments until the opposite one starts; a hop is a switch between the two
decided regimes, at the change between them: it needs a change the fit found and a decided
interval on both sides.

Coverage (benchmarks/analysis_noise.py, zero-mean AR(1) noise with a shared drift, phi 0 to
0.995, 2,000 rows x 32 items, 20 runs per phi): the 95% interval holds the true level (0) on
87.0-97.5% of the rows, by phi (README, Analysis).
"""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np

from genjax.analysis.changes import fit

GENERALIZING, UNDECIDED, PATTERN_MATCHING = 1, 0, -1
HOP_BETA = 2.5  # change penalty for regime boundaries (benchmarks/analysis_noise.py)
DEFAULT_FLOOR = 0.02  # |mean margin| a decided regime needs (mean token probability units)
NAMES = {GENERALIZING: "generalizing", UNDECIDED: "undecided",
         PATTERN_MATCHING: "pattern_matching"}


@dataclasses.dataclass
class Segment:
    start: int  # first row
    end: int  # one past the last row
    label: int
    mean: float
    low: float
    high: float


@dataclasses.dataclass
class RegimeTrack:
    """Per-row regime labels, the family margin and the interval of the row's segment."""

    labels: np.ndarray  # int8 [S]: +1, 0, -1
    mean: np.ndarray  # [S] family margin of each row
    ci_low: np.ndarray  # [S] interval of the row's segment (NaN inside a change)
    ci_high: np.ndarray  # [S]
    segments: list[Segment] = dataclasses.field(default_factory=list)
    changes: list[dict] = dataclasses.field(default_factory=list)  # rows: start, end, index, size
    phi: float = 0.0
    sigma_e: float = 0.0


@dataclasses.dataclass
class Hop:
    family: str
    step: int  # where the change between the regimes is half done
    direction: str  # "to_generalizing" or "to_pattern_matching"
    size: float  # mean margin of the new regime minus that of the regime it left
    left_duration: int  # steps from the start of the left regime to this hop
    change_start: int = -1  # first and last step of the change (equal for a step)
    change_end: int = -1


def ar1_mean_var(length, phi: float, sigma_e: float):
    """Variance of the mean of `length` consecutive rows of AR(1) noise (innovation sd
    sigma_e): sigma_u^2 (L + 2 sum_{k<L} (L - k) phi^k) / L^2."""
    n = np.maximum(np.asarray(length, np.float64), 1.0)
    su2 = sigma_e**2 / (1.0 - phi**2)
    if phi == 0.0:
        return su2 / n
    lag_sum = phi * (n * (1.0 - phi) - (1.0 - phi**n)) / (1.0 - phi) ** 2
    return su2 * (n + 2.0 * lag_sum) / n**2


def item_family(label: str) -> str:
    """`kv/context/3` -> `kv/context`; `mine/3.1` (item 3, seed 1) -> `mine`."""
    return label.rsplit("/", 1)[0]


def item_groups(labels) -> np.ndarray:
    """Cluster id of each item label `family/ITEM` or `family/ITEM.SEED` (replicates of one
    item share a cluster)."""
    keys = [label.rsplit("/", 1)[-1].split(".")[0] for label in labels]
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return np.asarray([index[k] for k in keys], np.int64)


def _quantile(level: float, dof: float) -> float:
    """Two-sided `level` quantile of Student's t with `dof` degrees of freedom (normal above
    1,000)."""
    p = 1.0 - (1.0 - level) / 2.0
    if dof >= 1000:
        return statistics.NormalDist().inv_cdf(p)
    from scipy.stats import t

    return float(t.ppf(p, max(dof, 1.0)))


def _local_noise(x: np.ndarray, bounds, bin_rows: int) -> tuple[float, float] | None:
    """(phi, sigma_e) of the AR(1) noise around a straight line fitted inside each segment
    (pooled over segments, Kendall bias-corrected): a slow drift inside a regime is not
    taken for persistent noise."""
    res = []
    for a, b in bounds:
        seg = x[a:b:bin_rows] if bin_rows > 1 else x[a:b]
        if len(seg) < 8:
            continue
        t = np.arange(len(seg), dtype=np.float64)
        coef = np.polyfit(t, seg, 1)
        res.append(seg - np.polyval(coef, t))
    if not res:
        return None
    num = sum(float(np.dot(r[1:], r[:-1])) for r in res)
    den = sum(float(np.dot(r[:-1], r[:-1])) for r in res)
    n = sum(len(r) for r in res)
    if den <= 0:
        return None
    phi = float(np.clip(num / den, 0.0, 0.999))
    phi = min(0.999, phi + (1.0 + 3.0 * phi) / n) if phi > 0 else 0.0
    e = np.concatenate([r[1:] - phi * r[:-1] for r in res])
    return phi, float(np.sqrt(np.mean(e**2)))


def regime_track(margins, steps=None, groups=None, level: float = 0.95,
                 floor: float = DEFAULT_FLOOR, beta: float = HOP_BETA,
                 min_regime_steps: int = 20) -> RegimeTrack:
    """Regimes of one family from its margins: [S, N] per item (N >= 1), or [S] (the family
    margin alone: the interval has no item part). Rows must be finite (the rows where the
    probes ran). `groups`: cluster id per item (default: every item its own)."""
    m = np.asarray(margins, np.float64)
    m = m[:, None] if m.ndim == 1 else m
    s_rows = m.shape[0]
    steps = np.arange(s_rows) if steps is None else np.asarray(steps)
    x = m.mean(axis=1)
    labels = np.zeros(s_rows, np.int8)
    low, high = np.full(s_rows, np.nan), np.full(s_rows, np.nan)
    if s_rows == 0:
        return RegimeTrack(labels, x, low, high)
    f = fit(x, steps, beta)
    changes = [{"start": c.start, "end": min(c.start + c.length - 1, s_rows - 1),
                "index": c.index, "size": c.size} for c in f.changes]
    bounds, prev = [], 0
    for c in changes:
        bounds.append((prev, c["start"]))
        prev = c["end"] if c["end"] > c["start"] else c["start"]
    bounds.append((prev, s_rows))
    groups = np.arange(m.shape[1]) if groups is None else np.asarray(groups)
    # the noise variance comes from the whole series: its effective sample size sets the dof
    phi_v, sig_v = f.phi_bc, f.sigma_bc
    local = _local_noise(x, bounds, f.bin)
    if local is not None and local[0] < phi_v:
        phi_v, sig_v = local
    dof = len(x) / f.bin * (1.0 - phi_v) / (1.0 + phi_v) - 1.0
    z = _quantile(level, dof)
    segments = []
    for a, b in bounds:
        if b <= a:
            continue
        mean = float(x[a:b].mean())
        var = float(ar1_mean_var((b - a) / f.bin, phi_v, sig_v))
        if m.shape[1] > 1:
            item_means = m[a:b].mean(axis=0)
            clusters = np.bincount(groups, item_means) / np.maximum(np.bincount(groups), 1)
            clusters = clusters[np.bincount(groups) > 0]
            if clusters.size > 1:
                var += float(clusters.var(ddof=1)) / clusters.size
        half = z * np.sqrt(var)
        label = UNDECIDED
        if b - a >= min_regime_steps:
            if mean - half > 0 and mean > floor:
                label = GENERALIZING
            elif mean + half < 0 and mean < -floor:
                label = PATTERN_MATCHING
        segments.append(Segment(a, b, label, mean, mean - half, mean + half))
        labels[a:b], low[a:b], high[a:b] = label, mean - half, mean + half
    return RegimeTrack(labels, x, low, high, segments, changes, f.phi, f.sigma_e)


def regimes_from_items(item_margins_SxN: np.ndarray, steps=None, groups=None, **kwargs
                       ) -> RegimeTrack:
    """Regimes from per-item margins [S, N] (see `regime_track`)."""
    return regime_track(item_margins_SxN, steps, groups, **kwargs)


def regimes_from_window(margin_S: np.ndarray, steps=None, **kwargs) -> RegimeTrack:
    """Regimes from the family margin alone [S] (no per-item data: no item part)."""
    return regime_track(np.asarray(margin_S, np.float64), steps, None, **kwargs)


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
    """Switches between decided regimes, each at the change the new regime starts with (the
    last change in the hop's direction between the two; undecided segments may lie between);
    `left_duration` spans the whole regime that was left. `min_regime_steps` is applied when
    the track was made."""
    decided = [sg for sg in track.segments if sg.label != UNDECIDED]
    runs: list[list[Segment]] = []
    for sg in decided:  # regimes: decided segments merged through undecided ones
        if runs and runs[-1][-1].label == sg.label:
            runs[-1].append(sg)
        else:
            runs.append([sg])
    level = lambda run: (sum(sg.mean * (sg.end - sg.start) for sg in run)
                         / sum(sg.end - sg.start for sg in run))
    hops = []
    for old, new in zip(runs[:-1], runs[1:]):
        a, b = old[-1].end, new[0].start
        sign = 1.0 if new[0].label == GENERALIZING else -1.0
        between = [c for c in track.changes if a - 1 <= c["start"] <= b and sign * c["size"] > 0]
        if not between:
            continue
        c = between[-1]  # the change the new regime starts with
        direction = "to_generalizing" if sign > 0 else "to_pattern_matching"
        hops.append(Hop(family, int(steps[c["index"]]), direction, level(new) - level(old),
                        int(steps[c["index"]] - steps[old[0].start]),
                        int(steps[c["start"]]), int(steps[c["end"]])))
    return hops


def segments(track: RegimeTrack, steps: np.ndarray, min_regime_steps: int = 20) -> list[dict]:
    """Stable regimes (decided segments merged through undecided ones) as JSON-able
    records, with the interval of their first segment."""
    out: list[dict] = []
    for sg in track.segments:
        if sg.label == UNDECIDED:
            continue
        if out and out[-1]["regime"] == NAMES[sg.label]:
            rec = out[-1]
            rows = rec["_rows"] + (sg.end - sg.start)
            rec["mean_margin"] = (rec["mean_margin"] * rec["_rows"]
                                  + sg.mean * (sg.end - sg.start)) / rows
            rec["_rows"], rec["end"] = rows, int(steps[sg.end - 1])
        else:
            out.append({"start": int(steps[sg.start]), "end": int(steps[sg.end - 1]),
                        "regime": NAMES[sg.label], "mean_margin": sg.mean,
                        "ci": [sg.low, sg.high], "_rows": sg.end - sg.start})
    for rec in out:
        rec["mean_margin"] = float(rec["mean_margin"])
        rec["ci"] = [float(v) for v in rec["ci"]]
        del rec["_rows"]
    return out
