"""`genjax metrics WORKDIR`: each metric's latest finite value, CSV export, follow."""

from __future__ import annotations

import csv as csv_lib

import numpy as np

from genjax import paths
from genjax.stream.store import Run, StreamError, follow, read


def store_path(workdir: str) -> str:
    """WORKDIR/metrics for a run directory (local or gs://); the path itself for a store
    (or a URL epath cannot list, such as memory://)."""
    try:
        p = paths.as_path(workdir)
    except paths.PathError:
        return workdir
    if (p / "metrics" / "zarr.json").exists():
        return str(p / "metrics")
    if (p / "zarr.json").exists():
        return workdir
    raise StreamError(f"no metric store in {workdir} (expected {p / 'metrics'})")


def columns(run: Run) -> dict[str, np.ndarray]:
    """Flat columns: scalars by name, vectors as `name[label]` (first dim labelled)."""
    out = {"step": run.steps, "tokens_seen": run.tokens_seen}
    for name, s in run.metrics.items():
        if s.values.ndim == 1:
            out[name] = s.values
        elif s.values.ndim == 2:
            labels = s.labels.get(s.dims[0]) or [str(i) for i in range(s.values.shape[1])]
            for i, label in enumerate(labels):
                out[f"{name}[{label}]"] = s.values[:, i]
    return out


def last_finite_row(values: np.ndarray) -> int | None:
    """Index of the last row with any finite value (hooks with `every` > 1 write NaN rows
    between their evaluations), or None when there is none."""
    finite = np.isfinite(values.reshape(len(values), -1)).any(axis=1)
    rows = np.flatnonzero(finite)
    return int(rows[-1]) if len(rows) else None


def latest_table(run: Run, max_items: int = 8) -> str:
    """The latest finite value of every metric, with its step where it is not the last row."""
    if not len(run):
        return "no rows yet"
    latest = int(run.steps[-1])
    lines = [f"step {latest}  ({len(run)} rows, {int(run.tokens_seen[-1]):,} tokens)"]
    width = max(len(n) for n in run.metrics)
    for name, s in run.metrics.items():
        row = last_finite_row(s.values)
        if row is None:
            lines.append(f"  {name:<{width}}  nan (no finite value yet)")
            continue
        last = s.values[row]
        if last.ndim == 0:
            text = f"{float(last):.5g}"
        else:
            labels = s.labels.get(s.dims[0]) or [str(i) for i in range(last.shape[0])]
            pairs = [f"{lab}={float(v):.4g}" for lab, v in zip(labels, last)][:max_items]
            more = len(labels) - len(pairs)
            text = "  ".join(pairs) + (f"  (+{more} more)" if more > 0 else "")
        if int(run.steps[row]) != latest:
            text += f"  (at step {int(run.steps[row])})"
        lines.append(f"  {name:<{width}}  {text}")
    return "\n".join(lines)


def write_csv(run: Run, path: str) -> None:
    cols = columns(run)
    with paths.as_path(path).open("w") as f:
        w = csv_lib.writer(f, lineterminator="\n")
        w.writerow(cols)
        for i in range(len(run)):
            w.writerow([c[i].item() for c in cols.values()])


def show_metrics(workdir: str, csv: str = "", follow_run: bool = False) -> int:
    path = store_path(workdir)
    if follow_run:
        try:
            for run in follow(path):
                print(latest_table(run), flush=True)
        except KeyboardInterrupt:
            return 0
    run = read(path)
    print(latest_table(run))
    if csv:
        write_csv(run, csv)
        print(f"wrote {len(run)} rows x {len(columns(run))} columns to {csv}")
    return 0
