"""`genjax analyze` sections from the gradient monitors (issue 17).

- `hop_attribution`: per hop, over the `window` rows before it, the summed first-order
  predicted change of the hop family's domain's held-out loss (`attribution/predicted_change`)
  and the mean cosine of that domain's held-out gradient with each train domain's batch
  gradient (`attribution/heldout_train_cos`; negative: training on that domain lowered it).
- `predictor_leads`: per `predictors/*` series (per layer) and hop, whether the series had a
  change point in the window before the hop, the lead (hop step - change step), and a z-score
  of the mean of that window against the window before it, with a Newey-West (Bartlett, HAC)
  long-run variance so that autocorrelated noise does not pass for a move.
- `spike_events`: the steps flagged by `spikes/*` and the watched value there.
"""

from __future__ import annotations

import math

import numpy as np

from genjax.analysis.changepoints import change_points


def _hop_fields(hop) -> tuple[str, int, str]:
    get = hop.get if isinstance(hop, dict) else lambda k: getattr(hop, k)
    return get("family"), int(get("step")), get("direction")


def family_domains(family: str, domains: list[str]) -> list[str]:
    """The domain(s) a probe family belongs to: "domain/family", else the longest domain name
    the family starts with, else every domain."""
    head = family.split("/", 1)[0]
    if "/" in family and head in domains:
        return [head]
    prefixed = [d for d in domains if family.startswith(d)]
    if prefixed:
        return [max(prefixed, key=len)]
    return list(domains)


def _window_rows(run, step: int, window: int) -> tuple[int, int]:
    row = int(np.searchsorted(run.steps, step))
    return max(0, row - window), row


def hop_attribution(run, hops: list, window: int) -> list[dict]:
    """One record per hop (see the module doc); NaN rows (`every=N`) are skipped."""
    pred = run.metrics["attribution/predicted_change"]
    domains = list(pred.labels["domain"])
    cos = run.metrics.get("attribution/heldout_train_cos")
    held = run.metrics.get("heldout/loss")
    out = []
    for hop in hops:
        family, step, direction = _hop_fields(hop)
        doms = family_domains(family, domains)
        cols = [domains.index(d) for d in doms]
        a, b = _window_rows(run, step, window)
        block = pred.values[a:b][:, cols]
        rows = int(np.isfinite(block).all(axis=1).sum())
        record = {"family": family, "step": step, "direction": direction, "domains": doms,
                  "window": [int(run.steps[a]), step - 1] if b > a else None,
                  "attribution_rows": rows,
                  "predicted_change": float(np.nansum(block)) if rows else None,
                  "heldout_train_cos": None, "measured_change": None}
        if cos is not None and rows:
            c = cos.values[a:b][:, cols, :]  # [rows, domains of the family, train domains]
            means = np.nanmean(c.reshape(-1, c.shape[-1]), axis=0) if np.isfinite(c).any() \
                else np.full(c.shape[-1], np.nan)
            train = cos.labels.get("train_domain", domains)
            record["heldout_train_cos"] = {t: (float(m) if np.isfinite(m) else None)
                                           for t, m in zip(train, means)}
        if held is not None and b > a and b < len(run):  # loss at the hop row minus at a
            hcols = [list(held.labels["domain"]).index(d) for d in doms
                     if d in held.labels["domain"]]
            if hcols:
                diff = held.values[b, hcols].sum() - held.values[a, hcols].sum()
                record["measured_change"] = float(diff) if np.isfinite(diff) else None
        out.append(record)
    return out


def newey_west_variance(x: np.ndarray, lags: int | None = None) -> float:
    """Long-run variance of a series (sum of all its autocovariances) by Newey-West: Bartlett
    weights 1 - k/(L+1) up to L lags, L = floor(4 (n/100)^(2/9)) by default. The variance of
    the mean of n rows is about this / n. NaNs are dropped."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        return float("nan")
    if lags is None:
        lags = int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))
    lags = max(0, min(lags, n - 1))
    e = x - x.mean()
    total = float(e @ e) / n
    for k in range(1, lags + 1):
        total += 2.0 * (1.0 - k / (lags + 1.0)) * float(e[k:] @ e[:-k]) / n
    return max(total, 0.0)


def mean_shift_z(before: np.ndarray, prior: np.ndarray, lags: int | None = None,
                 noise: np.ndarray | None = None) -> float | None:
    """z of mean(before) - mean(prior) with the Newey-West long-run variance of `noise`
    (residuals of the series), by default of the two windows each demeaned by its own mean.
    None with < 4 finite rows in either window."""
    before = np.asarray(before, np.float64)
    prior = np.asarray(prior, np.float64)
    before, prior = before[np.isfinite(before)], prior[np.isfinite(prior)]
    if before.size < 4 or prior.size < 4:
        return None
    resid = (np.concatenate([prior - prior.mean(), before - before.mean()])
             if noise is None else noise)
    lrv = newey_west_variance(resid, lags)
    se = math.sqrt(lrv * (1.0 / before.size + 1.0 / prior.size))
    diff = before.mean() - prior.mean()
    if se == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return float(diff / se)


def _predictor_series(run) -> dict[str, np.ndarray]:
    out = {}
    for name, s in run.metrics.items():
        if not name.startswith("predictors/"):
            continue
        if s.values.ndim == 1:
            out[name] = s.values
        elif s.values.ndim == 2:
            labels = s.labels.get(s.dims[0]) or [str(i) for i in range(s.values.shape[1])]
            for i, label in enumerate(labels):
                out[f"{name}[{label}]"] = s.values[:, i]
    return out


def segment_residuals(values: np.ndarray, points: list[int]) -> np.ndarray:
    """The series minus the mean of its segment between change points (NaNs stay NaN): its
    noise, without the level changes (a slow trend stays in, which only makes z smaller)."""
    values = np.asarray(values, np.float64)
    out = np.full_like(values, np.nan)
    edges = [0, *points, len(values)]
    for a, b in zip(edges[:-1], edges[1:]):
        seg = values[a:b]
        if np.isfinite(seg).any():
            out[a:b] = seg - np.nanmean(seg)
    return out


def predictor_leads(run, hops: list, window: int, beta: float | None = None) -> list[dict]:
    """One record per predictor series and hop (see the module doc). The noise of z is the
    long-run variance of the whole series around its change-point segment means, so that the
    move itself, inside the window before the hop, is not counted as noise."""
    out = []
    for label, values in _predictor_series(run).items():
        points = change_points(values) if beta is None else change_points(values, beta)
        noise = segment_residuals(values, points)
        for hop in hops:
            family, step, direction = _hop_fields(hop)
            a, b = _window_rows(run, step, window)
            inside = [p for p in points if a <= p < b]
            change = int(run.steps[max(inside)]) if inside else None
            z = mean_shift_z(values[a:b], values[max(0, a - window):a], noise=noise)
            out.append({"series": label, "family": family, "step": step,
                        "direction": direction, "moved": change is not None,
                        "change_step": change,
                        "lead": step - change if change is not None else None,
                        "z": z, "p": None if z is None else
                        float(math.erfc(abs(z) / math.sqrt(2.0)))})
    return out


def spike_events(run) -> dict[str, dict]:
    """Per `spikes/*` flag: the watched series and every flagged step with its value there."""
    from genjax.analysis.spikes import WATCHED

    out = {}
    for flag in sorted(n for n in run.metrics if n.startswith("spikes/")):
        flags = np.asarray(run.metrics[flag].values)
        source = WATCHED.get(flag)
        values = run.metrics[source].values if source in run.metrics else None
        events = []
        for r in np.flatnonzero(flags == 1):
            v = None if values is None or not np.isfinite(values[r]) else float(values[r])
            events.append({"step": int(run.steps[r]), "value": v})
        out[flag] = {"source": source, "events": events}
    return out


# ------------------------------------------------------------------------------ report
def _f(v, spec=".4g") -> str:
    return "n/a" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def gradient_tables(result: dict) -> list[tuple[str, list[str], list[list]]]:
    """(title, headers, rows) of each gradient-monitor section present in `result` (the
    report renders them)."""
    out = []
    if "hop_attribution" in result:
        rows = [[h["family"], h["step"], ", ".join(h["domains"]), h["attribution_rows"],
                 _f(h["predicted_change"], "+.4g"), _f(h["measured_change"], "+.4g"),
                 "n/a" if h["heldout_train_cos"] is None else ", ".join(
                     f"{t} {_f(c, '+.2f')}" for t, c in h["heldout_train_cos"].items())]
                for h in result["hop_attribution"]]
        out.append(("Gradient attribution before each hop (window rows: sum of g_d . update "
                    "for the family's domain; mean cosine of its held-out gradient with each "
                    "train domain's, negative = that domain's data lowered it)",
                    ["family", "step", "domain", "rows", "predicted change",
                     "measured change", "held-out x train cos"], rows))
    if "predictor_leads" in result:
        rows = [[p["series"], p["family"], p["step"], "yes" if p["moved"] else "no",
                 _f(p["lead"]), _f(p["z"], "+.2f"), _f(p["p"], ".3g")]
                for p in result["predictor_leads"]]
        out.append(("Predictors before each hop (change point in the window before; z of the "
                    "window's mean vs the window before it, Newey-West noise)",
                    ["series", "family", "hop step", "moved", "lead (steps)", "z", "p"], rows))
    if "spikes" in result:
        rows = [[flag, s["source"], e["step"], _f(e["value"])]
                for flag, s in result["spikes"].items() for e in s["events"]]
        out.append(("Spike events", ["flag", "series", "step", "value"], rows))
    return out
