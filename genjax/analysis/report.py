"""`genjax analyze WORKDIR`: analysis.json, summary.md, report.html and PNG plots."""

from __future__ import annotations

import html
import json
import pathlib

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genjax.analysis.analyze import AnalysisOptions, analyze, family_tracks
from genjax.stream.cli import store_path
from genjax.stream.store import Run, read

REGIME_COLORS = {1: "#c8e6c9", -1: "#ffcdd2"}


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    ckpt = workdir / "checkpoints"
    if not ckpt.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())


def _save(fig: Figure, path: pathlib.Path) -> str:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def plot_losses(run: Run, result: dict, out: pathlib.Path) -> str | None:
    panels = [n for n in ("train_domains/loss", "heldout/loss", "heldout/accuracy",
                          "gap/loss", "memorization/gap") if n in run.metrics]
    if not panels:  # a stream written by other code: its own series (up to four)
        panels = [n for n in ("train/loss", *run.metrics) if n in run.metrics
                  and run.metrics[n].values.ndim <= 2][:4]
    if not panels:
        return None
    fig = Figure(figsize=(6.5, 2.4 * len(panels)))
    for i, name in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        s = run.metrics[name]
        values = s.values if s.values.ndim == 2 else s.values[:, None]
        labels = s.labels.get(s.dims[0], [name]) if s.dims else [name]
        for j, label in enumerate(labels):
            ok = np.isfinite(values[:, j])
            ax.plot(run.steps[ok], values[ok, j], lw=1, label=label)
            key = f"{name}[{label}]" if s.dims else name
            for cp in result["change_points"].get(key, {}).get("steps", []):
                ax.axvline(cp, color=ax.lines[-1].get_color(), ls=":", lw=0.8)
        ax.set_ylabel(name, fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel("step  (dotted: change points)")
    return _save(fig, out / "domains.png")


def plot_probes(run: Run, result: dict, opts: AnalysisOptions, out: pathlib.Path) -> str | None:
    tracks = family_tracks(run, opts)
    if not tracks:
        return None
    fig = Figure(figsize=(6.5, 2.0 * len(tracks)))
    for i, (family, (track, steps)) in enumerate(tracks.items()):
        ax = fig.add_subplot(len(tracks), 1, i + 1)
        for t in range(len(steps)):
            color = REGIME_COLORS.get(int(track.labels[t]))
            if color:
                ax.axvspan(steps[t] - 0.5, steps[t] + 0.5, color=color, lw=0)
        ax.fill_between(steps, track.ci_low, track.ci_high, color="#90a4ae", alpha=0.5)
        ax.plot(steps, track.mean, color="#263238", lw=1)
        ax.axhline(0, color="k", lw=0.5)
        for hop in result["hops"]:
            if hop["family"] == family:
                ax.axvline(hop["step"], color="#6a1b9a", lw=1.2)
        ax.set_ylabel(family, fontsize=8)
    ax.set_xlabel("step  (margin P(correct)-P(incorrect), 95% CI; green: generalizing, "
                  "red: pattern-matching, purple: hops)", fontsize=7)
    return _save(fig, out / "probes.png")


def plot_correlation(result: dict, out: pathlib.Path) -> str | None:
    u = result["universality"]
    if not u or u.get("correlation") is None or len(u["families"]) < 2:
        return None  # one family: nothing to correlate
    corr = np.asarray(u["correlation"], float)
    fig = Figure(figsize=(1.2 + 0.7 * len(u["families"]), 1.0 + 0.6 * len(u["families"])))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(u["families"])), u["families"], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(u["families"])), u["families"], fontsize=7)
    for (r, c), v in np.ndenumerate(corr):
        ax.text(c, r, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax)
    ax.set_title("family margins: correlation across steps", fontsize=8)
    return _save(fig, out / "universality.png")


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def summary_markdown(result: dict) -> str:
    r = result["run"]
    parts = [f"# Mode analysis\n\n{r['rows']} rows, steps {r['first_step']}..{r['last_step']}, "
             f"{r['tokens_seen']:,} tokens; domains: {', '.join(r['domains'])}."]
    finals = [[k, _fmt(v)] for k, v in result["final"].items()]
    parts.append("## Final values\n\n" + _table(["metric", "value"], finals))
    regimes = [[f, v["final"], v["counts"]["generalizing"], v["counts"]["pattern_matching"],
                v["counts"]["undecided"], v["hops"], f"{v['hops_per_1k_steps']:.2f}"]
               for f, v in result["regimes"].items()]
    if regimes:
        parts.append("## Regimes per probe family (rows)\n\n" + _table(
            ["family", "final", "generalizing", "pattern-matching", "undecided", "hops",
             "hops / 1k steps"], regimes))
    hops = [[h["family"], h["step"], h["direction"], f"{h['size']:+.4f}", h["left_duration"]]
            for h in result["hops"]]
    parts.append("## Hops\n\n" + (_table(["family", "step", "direction", "margin change",
                                          "left regime lasted"], hops) if hops else "none"))
    cps = [[k, len(v["steps"]), ", ".join(map(str, v["steps"][:8]))]
           for k, v in result["change_points"].items() if v["steps"]]
    parts.append("## Change points\n\n" + (_table(["series", "count", "first steps"], cps)
                                           if cps else "none"))
    att = [[a["family"], a["step"], ", ".join(f"{d} {z:+.1f}" for d, z in
                                               a["z"].get("train_loss", {}).items())]
           for a in result["attribution"]]
    if att:
        parts.append("## Attribution (z-score of per-domain train loss in the window before "
                     "each hop vs hop-free windows)\n\n" + _table(["family", "step", "z"], att))
    ck = [[c["rank"], c["step"], ", ".join(c["generalizing_families"]), c["distance_to_hop"]]
          for c in result["checkpoints"]]
    parts.append("## Checkpoints inside generalizing regimes\n\n" + (
        _table(["rank", "step", "generalizing families", "steps to nearest hop"], ck)
        if ck else "none"))
    from genjax.analysis.gradients import gradient_markdown

    parts += gradient_markdown(result)  # issue 17: only the sections whose metrics exist
    return "\n\n".join(parts) + "\n"


def write_report(run: Run, out: pathlib.Path, checkpoints: list[int] = (),
                 opts: AnalysisOptions | None = None) -> dict:
    """Runs the analysis and writes analysis.json, summary.md, report.html and PNGs to out."""
    opts = opts or AnalysisOptions()
    out.mkdir(parents=True, exist_ok=True)
    result = analyze(run, checkpoints, opts)
    (out / "analysis.json").write_text(json.dumps(result, indent=1, allow_nan=True))
    summary = summary_markdown(result)
    (out / "summary.md").write_text(summary)
    images = [p for p in (plot_losses(run, result, out), plot_probes(run, result, opts, out),
                          plot_correlation(result, out)) if p]
    body = "".join(f'<p><img src="{html.escape(i)}" alt="{html.escape(i)}"></p>' for i in images)
    from genjax.analysis.gradients import gradient_html

    body += gradient_html(result)
    (out / "report.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>genjax mode analysis</title>"
        "<style>body{font-family:sans-serif;max-width:900px;margin:auto}"
        "pre{white-space:pre-wrap}</style><h1>genjax mode analysis</h1>" + body +
        f"<pre>{html.escape(summary)}</pre>")
    return result


def analyze_workdir(workdir: str, opts: AnalysisOptions | None = None,
                    overrides: dict | None = None) -> pathlib.Path:
    """`genjax analyze`: reads WORKDIR's metric store, writes WORKDIR/analysis/. Settings:
    `opts` as given, or the run's stored `config.analysis` settings with `overrides` (the
    command line's flags) on top."""
    path = pathlib.Path(workdir)
    run = read(store_path(workdir))
    if len(run) < 2:
        from genjax.stream.store import StreamError

        raise StreamError(f"{workdir}: the metric store has {len(run)} rows; nothing to analyze")
    if opts is None:  # the run's own `config.analysis` settings, then the overrides
        stored = json.loads(run.attrs.get("config") or "{}").get("analysis", {})
        fields = set(AnalysisOptions.__dataclass_fields__)
        opts = AnalysisOptions(**{**{k: v for k, v in stored.items() if k in fields},
                                  **(overrides or {})})
    out = path / "analysis"
    write_report(run, out, checkpoint_steps(path), opts)
    return out
