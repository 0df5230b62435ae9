"""Mode analysis of a run's metric stream: change points, regimes, hops, universality,
attribution and checkpoint advice, returned as one JSON-able dict."""

from __future__ import annotations

import dataclasses

import numpy as np

from genjax.analysis.changepoints import DEFAULT_BETA, change_details, segment_means
from genjax.analysis.regimes import (
    DEFAULT_FLOOR,
    HOP_BETA,
    NAMES,
    RegimeTrack,
    find_hops,
    item_family,
    item_groups,
    regime_track,
    segments,
    stable_runs,
)
from genjax.stream.store import Run

# Series that are inputs of the run, not measurements of the model: never change-point tested.
INPUT_SERIES = ("train/lr", "train/tokens", "train/skipped_updates", "train/nonfinite",
                "train_domains/tokens")


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
    """Settings of the mode analysis (`genjax analyze` flags, `config.analysis`)."""

    beta: float = DEFAULT_BETA  # change-point penalty, in log(n) innovation variances
    smooth_window: int = 1  # moving average before change points (the noise scale follows)
    window: int = 50  # rows before a hop used by the attribution
    min_regime_steps: int = 20  # rows a regime's segment must last
    level: float = 0.95  # confidence level of the regime intervals
    margin_floor: float = DEFAULT_FLOOR  # |mean margin| a decided regime needs
    hop_beta: float = HOP_BETA  # change penalty for regime boundaries


def is_input(name: str, unit: str = "") -> bool:
    """A series the run feeds in (schedule, token counts): not analysed for change points."""
    return name.split("[", 1)[0] in INPUT_SERIES or unit == "tokens"


def named_series(run: Run, include_items: bool = False,
                 include_inputs: bool = True) -> dict[str, np.ndarray]:
    """Every scalar series, and per-label series of 1-D metrics: `name[label]` -> [S]."""
    out = {}
    for name, s in run.metrics.items():
        if not include_inputs and is_input(name, s.unit):
            continue
        if s.values.ndim == 1:
            out[name] = s.values
        elif s.values.ndim == 2 and (include_items or s.dims[0] != "item"):
            labels = s.labels.get(s.dims[0]) or [str(i) for i in range(s.values.shape[1])]
            for i, label in enumerate(labels):
                out[f"{name}[{label}]"] = s.values[:, i]
    return out


def family_tracks(run: Run, opts: AnalysisOptions) -> dict[str, tuple[RegimeTrack, np.ndarray]]:
    """Regime track per probe family, on the rows where the probes ran."""
    if "probes/soft_margin" not in run.metrics:
        return {}
    fam = run.metrics["probes/soft_margin"]
    families = list(fam.labels.get("family") or [str(i) for i in range(fam.values.shape[1])])
    items = run.metrics.get("probes/item_margin")
    rows = np.isfinite(fam.values).all(axis=1)
    steps = run.steps[rows]
    kwargs = dict(level=opts.level, floor=opts.margin_floor, beta=opts.hop_beta,
                  min_regime_steps=opts.min_regime_steps)
    out = {}
    for f, family in enumerate(families):
        cols = []
        if items is not None:
            labels = items.labels.get("item") or []
            cols = [i for i, label in enumerate(labels) if item_family(label) == family]
        if cols:
            labels = [items.labels["item"][i] for i in cols]
            track = regime_track(items.values[rows][:, cols], steps, item_groups(labels),
                                 **kwargs)
        else:  # no per-item data: the family margin alone
            track = regime_track(fam.values[rows, f], steps, **kwargs)
        out[family] = (track, steps)
    return out


def _window_stats(run: Run, end_row: int, window: int) -> dict[str, dict[str, float]]:
    """Domain mixture (token share) and mean per-domain train loss over rows [end-w, end)."""
    a = max(0, end_row - window)
    out: dict[str, dict[str, float]] = {"mixture": {}, "train_loss": {}}
    if "train_domains/tokens" in run.metrics:
        tok = run.metrics["train_domains/tokens"]
        totals = np.nansum(tok.values[a:end_row], axis=0)
        share = totals / max(totals.sum(), 1e-12)
        out["mixture"] = dict(zip(tok.labels["domain"], map(float, share)))
    if "train_domains/loss" in run.metrics:
        loss = run.metrics["train_domains/loss"]
        means = np.nanmean(loss.values[a:end_row], axis=0)
        out["train_loss"] = dict(zip(loss.labels["domain"], map(float, means)))
    return out


def attribution(run: Run, hops: list, window: int) -> list[dict]:
    """For each hop: the window before it against all hop-free windows of the same length
    (z-score per domain of mixture share and train loss)."""
    if not hops or "train_domains/loss" not in run.metrics:
        return []
    hop_rows = sorted(int(np.searchsorted(run.steps, h.step)) for h in hops)
    candidates = range(window, len(run) + 1, max(1, window // 2))
    quiet = [e for e in candidates if not any(e - window <= r < e + window for r in hop_rows)]
    baseline = [_window_stats(run, e, window) for e in quiet]
    out = []
    for hop, row in zip(hops, [int(np.searchsorted(run.steps, h.step)) for h in hops]):
        before = _window_stats(run, row, window)
        record = {"family": hop.family, "step": hop.step, "direction": hop.direction,
                  "window": [int(run.steps[max(0, row - window)]), int(hop.step) - 1],
                  **before, "baseline_windows": len(baseline), "z": {}}
        for kind in ("mixture", "train_loss"):
            z = {}
            for domain, value in before[kind].items():
                ref = np.array([b[kind][domain] for b in baseline])
                ref = ref[np.isfinite(ref)]
                if ref.size >= 2 and ref.std() > 0:
                    z[domain] = float((value - ref.mean()) / ref.std())
            record["z"][kind] = z
        out.append(record)
    return out


def checkpoint_advice(checkpoints: list[int], tracks: dict, hops: list,
                      min_regime_steps: int = 20) -> list[dict]:
    """Saved checkpoints ranked by how many families are stably generalizing there (inside a
    regime of at least `min_regime_steps` rows), then by distance to the nearest hop.
    Checkpoint s holds the params of metric row s."""
    if not tracks:
        return []
    ranked = []
    for ckpt in checkpoints:
        gen = []
        for family, (track, steps) in tracks.items():
            for a, b, regime in stable_runs(track.labels, min_regime_steps):
                if regime == 1 and steps[a] <= ckpt <= steps[b - 1]:
                    gen.append(family)
        distance = min((abs(ckpt - h.step) for h in hops), default=None)
        ranked.append({"step": int(ckpt), "generalizing_families": sorted(gen),
                       "distance_to_hop": distance})
    ranked.sort(key=lambda r: (-len(r["generalizing_families"]),
                               -(r["distance_to_hop"] if r["distance_to_hop"] is not None
                                 else 10**12), -r["step"]))
    for i, r in enumerate(ranked):
        r["rank"] = i + 1
    return [r for r in ranked if r["generalizing_families"]]


def regime_counts(track: RegimeTrack) -> dict[str, int]:
    """Rows inside each stable regime (decided segments merged through undecided ones);
    `undecided`: the rows outside every regime."""
    counts = {name: 0 for name in NAMES.values()}
    covered = 0
    for a, b, regime in stable_runs(track.labels, 1):  # segments already have min rows
        counts[NAMES[regime]] += b - a
        covered += b - a
    counts[NAMES[0]] = len(track.labels) - covered
    return counts


SMALL_GAP = 0.25  # a gap episode whose rise is under this share of the held-out loss is "small"


def gap_episodes(run: Run, rel: float = 0.5) -> dict[str, dict]:
    """Per domain, when the held-out gap (`gap/loss`: held-out minus train loss) opened and
    closed: on its moving average (1/20 of the rows), the peak; `opened`, the first step
    before it where the gap rose past `rel` of the way from its starting level (median of the
    first 1/20) to the peak; `closed`, the first step after it where it fell back below that
    (None: still open at the end). A rise less than 3 standard errors of the average above
    the start is no episode (row noise from the successive differences' median absolute
    deviation). `share`: the rise over the held-out loss at the peak; under SMALL_GAP the
    report calls the episode small: the held-out rows are one fixed sample, whose make-up
    (say, a few more hard rows than the train mixture has) moves the gap by a few percent of
    the loss while the model learns, with no memorizing."""
    from scipy.ndimage import uniform_filter1d

    s = run.metrics.get("gap/loss")
    if s is None or s.values.ndim != 2:
        return {}
    held = run.metrics.get("heldout/loss")
    labels = s.labels.get("domain") or [str(i) for i in range(s.values.shape[1])]
    out = {}
    for i, domain in enumerate(labels):
        ok = np.isfinite(s.values[:, i])
        values, steps = s.values[ok, i], run.steps[ok]
        if len(values) < 20:
            continue
        w = max(1, len(values) // 20)
        smooth = uniform_filter1d(values.astype(np.float64), w, mode="nearest")
        peak = int(np.argmax(smooth))
        start = float(np.median(smooth[:w]))
        rise = float(smooth[peak]) - start
        loss = (uniform_filter1d(held.values[ok, i].astype(np.float64), w, mode="nearest")[peak]
                if held is not None and held.values.shape == s.values.shape else np.nan)
        record = {"start": start, "peak": float(smooth[peak]), "peak_step": int(steps[peak]),
                  "final": float(smooth[-1]), "opened": None, "closed": None,
                  "share": float(rise / abs(loss)) if np.isfinite(loss) and loss else None}
        noise = 1.4826 * np.median(np.abs(np.diff(values))) / np.sqrt(2.0)
        if rise > 3.0 * noise / np.sqrt(w):
            threshold = start + rel * rise
            record["opened"] = int(steps[int(np.argmax(smooth[:peak + 1] >= threshold))])
            after = np.flatnonzero(smooth[peak:] < threshold)
            record["closed"] = int(steps[peak + after[0]]) if len(after) else None
        out[domain] = record
    return out


def analyze(run: Run, checkpoints: list[int] = (), opts: AnalysisOptions | None = None) -> dict:
    """Every number the report shows."""
    opts = opts or AnalysisOptions()
    series = named_series(run)
    cps = {}
    for label, values in series.items():
        name = label.split("[", 1)[0]
        if is_input(name, run.metrics[name].unit):
            continue
        found = change_details(values, opts.beta, opts.smooth_window, steps=run.steps)
        points = [c["index"] for c in found]
        cps[label] = {"steps": [int(run.steps[p]) for p in points],
                      "changes": [{"step": int(run.steps[c["index"]]),
                                   "start": int(run.steps[c["start"]]),
                                   "end": int(run.steps[c["end"]]), "size": c["size"]}
                                  for c in found],
                      "segment_means": segment_means(values, points)}
    tracks = family_tracks(run, opts)
    hops, regimes = [], {}
    span = int(run.steps[-1] - run.steps[0] + 1) if len(run) else 0
    for family, (track, steps) in tracks.items():
        fam_hops = find_hops(family, track, steps, opts.min_regime_steps)
        hops += fam_hops
        final = None
        if len(steps):
            runs = stable_runs(track.labels, 1)
            final = NAMES[runs[-1][2]] if runs and runs[-1][1] == len(steps) else NAMES[0]
        regimes[family] = {"rows": int(len(steps)), "counts": regime_counts(track),
                           "final": final,
                           "segments": segments(track, steps, opts.min_regime_steps),
                           "hops": len(fam_hops),
                           "hops_per_1k_steps": 1000.0 * len(fam_hops) / max(span, 1),
                           "noise": {"phi": track.phi, "sigma_e": track.sigma_e}}
    hops.sort(key=lambda h: h.step)
    universality = {}
    if "probes/soft_margin" in run.metrics:
        fam = run.metrics["probes/soft_margin"]
        rows = np.isfinite(fam.values).all(axis=1)
        corr = None
        if rows.sum() > 2 and fam.values.shape[1] > 1:
            with np.errstate(invalid="ignore", divide="ignore"):
                corr = np.atleast_2d(np.corrcoef(fam.values[rows].T))
        universality = {"families": list(fam.labels.get("family", [])),
                        "correlation": None if corr is None else
                        np.where(np.isfinite(corr), corr, np.nan).round(6).tolist()}
    final = {label: (float(v[np.isfinite(v)][-1]) if np.isfinite(v).any() else None)
             for label, v in series.items()}
    result = {
        "run": {"rows": int(len(run)), "first_step": int(run.steps[0]) if len(run) else None,
                "last_step": int(run.steps[-1]) if len(run) else None,
                "tokens_seen": int(run.tokens_seen[-1]) if len(run) else 0,
                "domains": run.attrs.get("domains", [])},
        "options": dataclasses.asdict(opts),
        "final": final,
        "change_points": cps,
        "regimes": regimes,
        "hops": [dataclasses.asdict(h) for h in hops],
        "universality": universality,
        "gaps": gap_episodes(run),
        "attribution": attribution(run, hops, opts.window),
        "checkpoints": checkpoint_advice(list(checkpoints), tracks, hops, opts.min_regime_steps),
    }
    from genjax.analysis import gradients  # issue 17: only when the run has those metrics

    if "attribution/predicted_change" in run.metrics:
        result["hop_attribution"] = gradients.hop_attribution(run, hops, opts.window)
    if any(name.startswith("predictors/") for name in run.metrics):
        result["predictor_leads"] = gradients.predictor_leads(run, hops, opts.window, opts.beta)
    if any(name.startswith("spikes/") for name in run.metrics):
        result["spikes"] = gradients.spike_events(run)
    return result
