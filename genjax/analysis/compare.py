"""`genjax compare RUN [RUN ...]`: runs overlaid against steps, tokens and training FLOPs.

Each run is a workdir (or a metric store) with the config its trainer stored. Per run: the
model's parameter count N (embeddings included) and training FLOPs per token
(`ModelConfig.flops_per_token`: 6 x matmul params + causal attention at half), so that a row's
training FLOPs are tokens_seen x FLOPs/token; its Chinchilla-optimal point is 20 tokens per
parameter (Hoffmann et al. 2022), marked where a run reaches it. Hops come from each run's own
mode analysis (`genjax.analysis.analyze`, with the run's stored `config.analysis` settings).
Hop timing across model size: for each probe family and direction seen in runs of at least two
sizes, the least-squares slope of log(tokens at the first such hop) on log N.
Writes compare.json, compare.html, summary.md and one PNG per compared metric.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genjax import paths as paths_lib
from genjax.analysis.analyze import AnalysisOptions, analyze
from genjax.analysis.report import Section, render_html, render_markdown
from genjax.stream.cli import store_path
from genjax.stream.store import Run, StreamError, read

CHINCHILLA_TOKENS_PER_PARAM = 20.0
# compared metrics, when every run has them (one panel row per label)
COMPARED = ("train/loss", "heldout/loss", "gap/loss", "probes/soft_margin",
            "memorization/gap")
AXES = (("step", "step"), ("tokens", "tokens seen"), ("flops", "training FLOPs"))


@dataclasses.dataclass
class RunFacts:
    """One run as `compare` sees it."""

    name: str
    run: Run
    params: int
    flops_per_token: float
    tokens_per_step: int
    result: dict[str, Any]

    @property
    def chinchilla_tokens(self) -> float:
        return CHINCHILLA_TOKENS_PER_PARAM * self.params

    def x(self, axis: str) -> np.ndarray:
        tokens = self.run.tokens_seen.astype(np.float64)
        return {"step": self.run.steps.astype(np.float64), "tokens": tokens,
                "flops": tokens * self.flops_per_token}[axis]

    def at_tokens(self, tokens: float) -> dict[str, float]:
        return {"step": tokens / self.tokens_per_step, "tokens": tokens,
                "flops": tokens * self.flops_per_token}


def run_facts(run: Run, name: str) -> RunFacts:
    """A run's model size, FLOPs per token and mode analysis, from its stored config."""
    from genjax.config import from_stored
    from genjax.model import ModelConfig

    stored = json.loads(run.attrs.get("config") or "{}")
    if "model" not in stored or "train" not in stored:
        raise StreamError(f"{name}: the metric store has no run config (model size unknown); "
                          "compare needs runs written by `genjax train`")
    model = ModelConfig.from_config(from_stored(stored).model)  # keys added since: defaults
    seq_len, batch = stored["train"]["seq_len"], stored["train"]["batch_size"]
    fields = set(AnalysisOptions.__dataclass_fields__)
    opts = AnalysisOptions(**{k: v for k, v in stored.get("analysis", {}).items()
                              if k in fields})
    result = analyze(run, (), opts) if len(run) >= 2 else {"hops": [], "regimes": {}}
    return RunFacts(name, run, model.num_params(), model.flops_per_token(seq_len),
                    batch * seq_len, result)


def run_names(paths: Sequence[str]) -> list[str]:
    """Each path's last part, or the whole paths when two share it."""
    names = [p.rstrip("/").rsplit("/", 1)[-1] or p for p in paths]
    return names if len(set(names)) == len(names) else list(paths)


def hop_table(runs: list[RunFacts]) -> list[dict[str, Any]]:
    """Every hop of every run, with its step, tokens and training FLOPs."""
    rows = []
    for r in runs:
        for hop in r.result["hops"]:
            row = int(np.searchsorted(r.run.steps, hop["step"]))
            tokens = float(r.run.tokens_seen[min(row, len(r.run) - 1)])
            rows.append({"run": r.name, "params": r.params, "family": hop["family"],
                         "direction": hop["direction"], "step": hop["step"],
                         "tokens": tokens, "flops": tokens * r.flops_per_token,
                         "tokens_per_param": tokens / r.params})
    return rows


def hop_scaling(runs: list[RunFacts], hops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (family, direction) seen at two or more model sizes: log-log slope of the tokens
    at each run's first such hop against N (a slope of 1: hops at a fixed tokens/param)."""
    first: dict[tuple[str, str], dict[str, dict]] = {}
    for h in hops:
        by_run = first.setdefault((h["family"], h["direction"]), {})
        if h["run"] not in by_run or h["step"] < by_run[h["run"]]["step"]:
            by_run[h["run"]] = h
    out = []
    for (family, direction), by_run in sorted(first.items()):
        n = np.array([h["params"] for h in by_run.values()], np.float64)
        t = np.array([h["tokens"] for h in by_run.values()], np.float64)
        slope = None
        if len(set(n)) >= 2 and (t > 0).all():
            slope = float(np.polyfit(np.log(n), np.log(t), 1)[0])
        out.append({"family": family, "direction": direction, "runs": len(by_run),
                    "sizes": sorted({int(v) for v in n}), "tokens_vs_params_slope": slope,
                    "missing_in": [r.name for r in runs if r.name not in by_run]})
    return out


def compared_metrics(runs: list[RunFacts]) -> list[tuple[str, list[str]]]:
    """(metric, labels) of the COMPARED metrics every run has, labels those all runs share."""
    out = []
    for name in COMPARED:
        if not all(name in r.run.metrics for r in runs):
            continue
        series = [r.run.metrics[name] for r in runs]
        if series[0].dims:
            shared = [lab for lab in series[0].labels.get(series[0].dims[0], [])
                      if all(lab in s.labels.get(s.dims[0], []) for s in series)]
            if shared:
                out.append((name, shared))
        else:
            out.append((name, [""]))
    return out


def plot_metric(runs: list[RunFacts], name: str, labels: list[str],
                out: str | os.PathLike) -> str:
    """One row per label, one column per x axis (step, tokens, FLOPs); Chinchilla points
    dashed, hops of the label's family as dots on each run's curve."""
    fig = Figure(figsize=(11, 0.6 + 2.1 * len(labels)), layout="constrained")
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for i, label in enumerate(labels):
        for j, (axis, title) in enumerate(AXES):
            ax = fig.add_subplot(len(labels), len(AXES), i * len(AXES) + j + 1)
            for r, color in zip(runs, colors):
                s = r.run.metrics[name]
                y = s.values if not s.dims else s.values[:, s.labels[s.dims[0]].index(label)]
                ok = np.isfinite(y)
                x = r.x(axis)
                ax.plot(x[ok], y[ok], lw=1, color=color, label=f"{r.name} ({r.params:,})")
                chin = r.at_tokens(r.chinchilla_tokens)[axis]
                if chin <= x[-1]:
                    ax.axvline(chin, color=color, ls="--", lw=0.8)
                for hop in r.result["hops"]:
                    if hop["family"] == label:
                        k = min(int(np.searchsorted(r.run.steps, hop["step"])), len(x) - 1)
                        ax.plot(x[k], y[k] if np.isfinite(y[k]) else 0.0, "o", ms=4,
                                color=color)
            if axis != "step":
                ax.set_xscale("log")
            ax.tick_params(labelsize=7)
            if i == len(labels) - 1:
                ax.set_xlabel(title, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{name}[{label}]" if label else name, fontsize=8)
    fig.axes[len(AXES) - 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                                   frameon=False)
    file = name.replace("/", "_") + ".png"
    FigureCanvasAgg(fig)
    with (paths_lib.as_path(out) / file).open("wb") as f:
        fig.savefig(f, dpi=100, format="png")
    return file


def compare(paths: Sequence[str], out: str | os.PathLike) -> dict[str, Any]:
    """`genjax compare`: reads the runs at `paths` and writes the comparison to `out`."""
    runs = [run_facts(read(store_path(p)), n) for p, n in zip(paths, run_names(paths))]
    return compare_runs(runs, out)


def compare_runs(runs: list[RunFacts], out: str | os.PathLike) -> dict[str, Any]:
    """Writes compare.json, compare.html, summary.md and the PNGs; returns compare.json."""
    out = paths_lib.as_path(out)
    out.mkdir(parents=True, exist_ok=True)
    hops = hop_table(runs)
    scaling = hop_scaling(runs, hops)
    figures = {name: plot_metric(runs, name, labels, out)
               for name, labels in compared_metrics(runs)}
    result = {
        "runs": [{"name": r.name, "params": r.params, "flops_per_token": r.flops_per_token,
                  "tokens_per_step": r.tokens_per_step, "rows": len(r.run),
                  "last_step": int(r.run.steps[-1]) if len(r.run) else None,
                  "tokens_seen": int(r.run.tokens_seen[-1]) if len(r.run) else 0,
                  "chinchilla_tokens": r.chinchilla_tokens,
                  "chinchilla_step": r.at_tokens(r.chinchilla_tokens)["step"],
                  "final_regimes": {f: v["final"] for f, v in r.result["regimes"].items()}}
                 for r in runs],
        "hops": hops, "hop_scaling": scaling, "figures": figures,
    }
    (out / "compare.json").write_text(json.dumps(result, indent=1))
    sections = [
        Section("Runs", headers=["run", "params", "FLOPs / token", "steps", "tokens",
                                 "Chinchilla tokens (20 / param)", "reached"],
                rows=[[r["name"], f"{r['params']:,}", f"{r['flops_per_token']:.3g}",
                       r["rows"], f"{r['tokens_seen']:,}", f"{r['chinchilla_tokens']:.3g}",
                       "yes" if r["tokens_seen"] >= r["chinchilla_tokens"] else "no"]
                      for r in result["runs"]]),
        Section("Hops per run", [] if hops else ["none: no run's analysis found a hop"],
                headers=["run", "params", "family", "direction", "step", "tokens", "FLOPs",
                         "tokens / param"],
                rows=[[h["run"], f"{h['params']:,}", h["family"], h["direction"], h["step"],
                       f"{h['tokens']:.4g}", f"{h['flops']:.4g}",
                       f"{h['tokens_per_param']:.3g}"] for h in hops]),
        Section("Hop timing against model size", [] if scaling else ["no hops to compare"],
                headers=["family", "direction", "runs with it", "sizes",
                         "slope of log tokens on log N", "missing in"],
                rows=[[s["family"], s["direction"], s["runs"],
                       ", ".join(f"{v:,}" for v in s["sizes"]),
                       "n/a" if s["tokens_vs_params_slope"] is None
                       else f"{s['tokens_vs_params_slope']:+.2f}",
                       ", ".join(s["missing_in"]) or "-"] for s in scaling],
                caption="A slope of 1: the hop comes at a fixed number of tokens per "
                        "parameter; 0: at a fixed number of tokens whatever the size."),
    ]
    sections += [Section(name, image=file, caption="Against steps, tokens and training FLOPs "
                         "(log); dashed: each run's Chinchilla-optimal point; dots: hops of "
                         "that family.") for name, file in figures.items()]
    (out / "summary.md").write_text(render_markdown(sections, title="Run comparison"))
    (out / "compare.html").write_text(render_html(sections, title="Run comparison"))
    return result
