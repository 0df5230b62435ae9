"""`genjax analyze WORKDIR`: analysis.json, summary.md, report.html and PNG plots.

The report reads as a story: what happened in words and one figure first (hops on the probe
margins, per-domain held-out loss beside them), then per-domain generalization, then the
change points of the series that matter, then the evidence (attribution, predictors,
checkpoints); the final values of every series come last. summary.md and report.html are
rendered from the same sections."""

from __future__ import annotations

import dataclasses
import html
import json
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genjax import paths
from genjax.analysis.analyze import SMALL_GAP, AnalysisOptions, analyze, family_tracks
from genjax.stream.cli import store_path
from genjax.stream.store import Run, read

REGIME_COLORS = {1: "#c8e6c9", -1: "#ffcdd2"}
HOP_COLOR = "#6a1b9a"
# change-point tables list measurements of generalization first
SERIES_ORDER = ("probes/", "heldout/", "gap/", "memorization/", "train_domains/", "train/")


def checkpoint_steps(workdir: paths.Path) -> list[int]:
    ckpt = workdir / "checkpoints"
    if not ckpt.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())


def _save(fig: Figure, path: paths.Path) -> str:
    FigureCanvasAgg(fig)
    with path.open("wb") as f:
        fig.savefig(f, dpi=110, format="png")
    return path.name


def _legend(ax) -> None:
    """Outside the axes, so that it never covers the data."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              frameon=False)


def _margin_panel(ax, family: str, track, steps: np.ndarray, hops: list[dict]) -> None:
    """A family's margin with its interval, regimes shaded, hops as purple lines."""
    # each row's regime shades from halfway to the previous row to halfway to the next
    # (rows are `every` steps apart); a run of rows with one regime is one span
    mids = (steps[1:] + steps[:-1]) / 2.0 if len(steps) > 1 else np.zeros(0)
    edges = np.concatenate([[steps[0] - 0.5], mids, [steps[-1] + 0.5]]) if len(steps) else []
    labels = np.asarray(track.labels, int)
    start = 0
    for t in range(1, len(steps) + 1):
        if t == len(steps) or labels[t] != labels[start]:
            color = REGIME_COLORS.get(int(labels[start]))
            if color:
                ax.axvspan(edges[start], edges[t], color=color, lw=0)
            start = t
    ax.fill_between(steps, track.ci_low, track.ci_high, color="#90a4ae", alpha=0.5)
    ax.plot(steps, track.mean, color="#263238", lw=1)
    ax.axhline(0, color="k", lw=0.5)
    for hop in hops:
        if hop["family"] == family:
            ax.axvline(hop["step"], color=HOP_COLOR, lw=1.2)
    ax.set_ylabel(family, fontsize=8)
    ax.tick_params(labelsize=7)


def _series_panel(ax, run: Run, name: str, result: dict, hops: bool = False) -> None:
    """Every label of one metric; dotted lines at its change points (or the hops)."""
    s = run.metrics[name]
    values = s.values if s.values.ndim == 2 else s.values[:, None]
    labels = s.labels.get(s.dims[0], [name]) if s.dims else [name]
    for j, label in enumerate(labels):
        ok = np.isfinite(values[:, j])
        (line,) = ax.plot(run.steps[ok], values[ok, j], lw=1, label=label)
        key = f"{name}[{label}]" if s.dims else name
        if not hops:
            for cp in result["change_points"].get(key, {}).get("steps", []):
                ax.axvline(cp, color=line.get_color(), ls=":", lw=0.8)
    if hops:
        for hop in result["hops"]:
            ax.axvline(hop["step"], color=HOP_COLOR, lw=0.8, alpha=0.7)
    ax.set_ylabel(name, fontsize=8)
    ax.tick_params(labelsize=7)
    _legend(ax)


def plot_overview(run: Run, result: dict, tracks: dict, out: paths.Path) -> str | None:
    """The first figure: probe margins with their intervals and hops (left), per-domain
    held-out loss with the same hops (right)."""
    right = next((n for n in ("heldout/loss", "train_domains/loss", "train/loss")
                  if n in run.metrics), None)
    if not tracks and right is None:
        return None
    rows = max(len(tracks), 1)
    fig = Figure(figsize=(10.5 if tracks else 6.5, 1.4 + 1.6 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 2 if tracks and right else 1)
    for i, (family, (track, steps)) in enumerate(tracks.items()):
        ax = fig.add_subplot(grid[i, 0])
        _margin_panel(ax, family, track, steps, result["hops"])
        if i == rows - 1:
            ax.set_xlabel("step", fontsize=8)
    if right is not None:
        ax = fig.add_subplot(grid[:, 1] if tracks else grid[:, 0])
        _series_panel(ax, run, right, result, hops=True)
        ax.set_xlabel("step", fontsize=8)
    return _save(fig, out / "overview.png")


def plot_losses(run: Run, result: dict, out: paths.Path) -> str | None:
    panels = [n for n in ("train_domains/loss", "heldout/loss", "heldout/accuracy",
                          "gap/loss", "memorization/gap") if n in run.metrics]
    if not panels:  # a stream written by other code: its own series (up to four)
        panels = [n for n in ("train/loss", *run.metrics) if n in run.metrics
                  and run.metrics[n].values.ndim <= 2][:4]
    if not panels:
        return None
    fig = Figure(figsize=(7.5, 0.4 + 2.0 * len(panels)), layout="constrained")
    for i, name in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        _series_panel(ax, run, name, result)
    ax.set_xlabel("step  (dotted: change points)", fontsize=8)
    return _save(fig, out / "domains.png")


def plot_correlation(result: dict, out: paths.Path) -> str | None:
    u = result["universality"]
    if not u or u.get("correlation") is None or len(u["families"]) < 2:
        return None  # one family: nothing to correlate
    corr = np.asarray(u["correlation"], float)
    n = len(u["families"])
    fig = Figure(figsize=(2.2 + 0.7 * n, 1.4 + 0.6 * n), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(n), u["families"], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), u["families"], fontsize=7)
    for (r, c), v in np.ndenumerate(corr):
        ax.text(c, r, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title("family margins: correlation across steps", fontsize=8)
    return _save(fig, out / "universality.png")


@dataclasses.dataclass
class Section:
    """One part of the report: paragraphs, then a figure or a table."""

    title: str
    text: list[str] = dataclasses.field(default_factory=list)
    headers: list[str] = dataclasses.field(default_factory=list)
    rows: list[list] = dataclasses.field(default_factory=list)
    image: str | None = None
    caption: str = ""
    folded: bool = False  # long reference material: collapsed in report.html


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _pretty(direction_or_regime: str) -> str:
    return {"to_generalizing": "pattern-matching -> generalizing",
            "to_pattern_matching": "generalizing -> pattern-matching",
            "pattern_matching": "pattern-matching"}.get(direction_or_regime, direction_or_regime)


def story(result: dict) -> list[str]:
    """What happened, in words: hops, where each family ended, held-out gaps."""
    r = result["run"]
    lines = [f"{r['rows']} rows, steps {r['first_step']}..{r['last_step']}, "
             f"{r['tokens_seen']:,} tokens; domains: {', '.join(r['domains']) or 'n/a'}."]
    hops, regimes = result["hops"], result["regimes"]
    if not regimes:
        lines.append("No probe families in this run: no regimes or hops to find.")
    elif hops:
        fwd = sum(h["direction"] == "to_generalizing" for h in hops)
        lines.append(f"{len(hops)} hop{'s' * (len(hops) != 1)} ({fwd} to generalizing, "
                     f"{len(hops) - fwd} back to pattern-matching): " + "; ".join(
                         f"{h['family']} {_pretty(h['direction'])} at step {h['step']} "
                         f"(margin {h['size']:+.3f})" for h in hops) + ".")
    else:
        lines.append(f"No hops: no probe family changed regime ({len(regimes)} families).")
    if regimes:
        by_final: dict[str, list[str]] = {}
        for family, v in regimes.items():
            by_final.setdefault(_pretty(v["final"] or "undecided"), []).append(family)
        lines.append("At the end: " + "; ".join(f"{k}: {', '.join(v)}"
                                                for k, v in by_final.items()) + ".")
    gaps = result.get("gaps", {})
    big = {d: g for d, g in gaps.items()
           if g["opened"] is not None and (g.get("share") is None or g["share"] >= SMALL_GAP)}
    closed = [f"{d} (opened at step {g['opened']}, peak {g['peak']:.3f} at {g['peak_step']}"
              f"{_share(g)}, closed at {g['closed']})" for d, g in big.items()
              if g["closed"] is not None]
    still = [f"{d} (opened at step {g['opened']}, now {g['final']:.3f})"
             for d, g in big.items() if g["closed"] is None]
    small = [f"{d} (peak {g['peak']:.3f} at step {g['peak_step']}{_share(g)})"
             for d, g in gaps.items() if g["opened"] is not None and d not in big]
    if closed:
        lines.append("Held-out gap opened and closed: " + "; ".join(closed) + ".")
    if still:
        lines.append("Held-out gap still open: " + "; ".join(still) + ".")
    if small:
        lines.append(f"Small gap episodes (under {SMALL_GAP:.0%} of the held-out loss, which a "
                     "fixed held-out sample's make-up can produce without memorizing): "
                     + "; ".join(small) + ".")
    if gaps and not big and not small:
        lines.append("No domain's held-out gap rose above its starting level.")
    return lines


def _share(g: dict) -> str:
    return "" if g.get("share") is None else f", {g['share']:.0%} of the held-out loss"


def _series_rank(label: str) -> tuple[int, str]:
    name = label.split("[", 1)[0]
    rank = next((i for i, p in enumerate(SERIES_ORDER) if name.startswith(p)),
                len(SERIES_ORDER))
    return rank, label


def report_sections(result: dict, images: dict[str, str | None]) -> list[Section]:
    """The report, in reading order (`images`: figure name -> file, None when not drawn)."""
    from genjax.analysis.gradients import gradient_tables

    out = [Section("What happened", story(result), image=images.get("overview"),
                   caption="Left: each probe family's margin P(correct) - P(incorrect) with "
                           f"its {result['options']['level']:.0%} interval; green rows "
                           "generalizing, red pattern-matching, purple lines the hops. Right: "
                           "held-out loss per domain with the same hops. Look for a margin "
                           "that crosses zero where its domain's held-out loss bends.")]
    regimes = [[f, _pretty(v["final"] or "undecided"), v["counts"]["generalizing"],
                v["counts"]["pattern_matching"], v["counts"]["undecided"], v["hops"],
                f"{v['hops_per_1k_steps']:.2f}"] for f, v in result["regimes"].items()]
    if regimes:
        out.append(Section("Regimes per probe family (rows)", headers=[
            "family", "final", "generalizing", "pattern-matching", "undecided", "hops",
            "hops / 1k steps"], rows=regimes))
        out.append(Section("Hops", [] if result["hops"] else ["none"], headers=[
            "family", "step", "direction", "margin change", "left regime lasted"],
            rows=[[h["family"], h["step"], _pretty(h["direction"]), f"{h['size']:+.4f}",
                   h["left_duration"]] for h in result["hops"]]))
    out.append(Section("Per-domain generalization", image=images.get("domains"),
                       caption="Train-batch and held-out loss per domain, held-out accuracy, "
                               "the gap (held-out minus train loss) and memorization; dotted "
                               "lines are each series' change points. Look for a gap that "
                               "opens (memorizing) and closes (generalizing)."))
    gaps = result.get("gaps", {})
    if gaps:
        out.append(Section("Held-out gap per domain (moving average)", headers=[
            "domain", "start", "peak", "rise / held-out loss", "peak step", "opened", "closed",
            "final"],
            rows=[[d, _fmt(g["start"]), _fmt(g["peak"]),
                   "-" if g.get("share") is None else f"{g['share']:.0%}", g["peak_step"],
                   _fmt(g["opened"]),
                   "still open" if g["opened"] is not None and g["closed"] is None
                   else _fmt(g["closed"]), _fmt(g["final"])] for d, g in gaps.items()]))
    cps = sorted(((k, v) for k, v in result["change_points"].items() if v["steps"]),
                 key=lambda kv: _series_rank(kv[0]))
    out.append(Section("Change points", [] if cps else ["none"],
                       headers=["series", "count", "first steps"],
                       rows=[[k, len(v["steps"]), ", ".join(map(str, v["steps"][:8]))]
                             for k, v in cps],
                       caption="Measurements only (schedules and token counts are inputs). "
                               "Look for several domains changing at the same step."))
    att = [[a["family"], a["step"], ", ".join(f"{d} {z:+.1f}" for d, z in
                                               a["z"].get("train_loss", {}).items())]
           for a in result["attribution"]]
    if att:
        out.append(Section("Attribution (z-score of per-domain train loss in the window before "
                           "each hop vs hop-free windows)", headers=["family", "step", "z"],
                           rows=att))
    for title, headers, rows in gradient_tables(result):
        out.append(Section(title, [] if rows else ["none"], headers=headers, rows=rows))
    if "explain" in result:
        out.append(explain_section(result["explain"]))
    ck = [[c["rank"], c["step"], ", ".join(c["generalizing_families"]), c["distance_to_hop"]]
          for c in result["checkpoints"]]
    out.append(Section("Checkpoints inside generalizing regimes", [] if ck else ["none"],
                       headers=["rank", "step", "generalizing families", "steps to nearest hop"],
                       rows=ck))
    if images.get("universality"):
        out.append(Section("Universality", image=images["universality"],
                           caption="Correlation of the families' margins across steps. Look "
                                   "for blocks of families that move together."))
    out.append(Section("Final values", headers=["metric", "value"],
                       rows=[[k, _fmt(v)] for k, v in result["final"].items()], folded=True))
    return out


def explain_section(records: list[dict]) -> Section:
    """`--explain`: the interpolation and stability verdicts per hop."""
    rows = []
    for r in records:
        head = [r["family"], r["step"], _pretty(r["direction"]), f"{r['before']} -> {r['after']}"]
        if "skipped" in r:
            rows.append([*head, r["skipped"], "", "", ""])
            continue
        i = r["interpolation"]
        reruns = "; ".join(
            f"order {s['order']}: " + (f"recurs from step {s['step']}" if s["recurs"] else
                                       f"does not recur (ends {s['final']})")
            for s in r["stability"])
        ends = f"{i['margin'][0]:+.3f} / {i['midpoint_margin']:+.3f} / {i['margin'][-1]:+.3f}"
        rows.append([*head, i["verdict"], f"{i['barrier']:.4f}", ends, reruns])
    return Section("What caused each hop", [] if records else ["no hops to explain"], headers=[
        "family", "step", "direction", "checkpoints", "interpolation", "loss barrier",
        "margin at 0 / 0.5 / 1", "reruns from the first checkpoint"], rows=rows,
        caption="Interpolation: along the straight line between the two checkpoints, the "
                "held-out loss of the family's domain above its straight line (a barrier: two "
                "separate solutions; none: one basin moving) and the probe margin. "
                "Reruns: the same steps with another data order; a hop that recurs comes from "
                "the optimizer's trajectory, one that does not from the data it saw.")


def _md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(sections: list[Section], title: str = "Mode analysis") -> str:
    parts = [f"# {title}"]
    for s in sections:
        block = [f"## {s.title}", *s.text]
        if s.image:
            block.append(f"![{s.caption or s.title}]({s.image})")
        if s.rows:
            block.append(_md_table(s.headers, s.rows))
        if s.caption and (s.image or s.rows):
            block.append(f"*{s.caption}*")
        parts.append("\n\n".join(block))
    return "\n\n".join(parts) + "\n"


STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
         "color:#212121;line-height:1.45}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;"
         "margin-top:1.6em}table{border-collapse:collapse;font-size:.85em;margin:.6em 0}"
         "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f5f5f5}"
         "figure{margin:.6em 0}img{max-width:100%}figcaption{font-size:.85em;color:#555}"
         ".story p:first-child{color:#555}")


def render_html(sections: list[Section], title: str = "Mode analysis") -> str:
    e = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>genjax: {e(title)}</title>",
             f"<style>{STYLE}</style><h1>{e(title)}</h1>"]
    for i, s in enumerate(sections):
        body = "".join(f"<p>{e(t)}</p>" for t in s.text)
        if s.image:
            body += (f"<figure><img src='{e(s.image)}' alt='{e(s.title)}'>"
                     f"<figcaption>{e(s.caption)}</figcaption></figure>")
        if s.rows:
            head = "".join(f"<th>{e(h)}</th>" for h in s.headers)
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>"
                           for r in s.rows)
            body += f"<table><tr>{head}</tr>{rows}</table>"
            if s.caption and not s.image:
                body += f"<p><small>{e(s.caption)}</small></p>"
        cls = " class='story'" if i == 0 else ""
        if s.folded:
            parts.append(f"<details><summary><b>{e(s.title)}</b></summary>{body}</details>")
        else:
            parts.append(f"<section{cls}><h2>{e(s.title)}</h2>{body}</section>")
    return "".join(parts)


def write_report(run: Run, out: str | os.PathLike, checkpoints: list[int] = (),
                 opts: AnalysisOptions | None = None, explain=None) -> dict:
    """Runs the analysis and writes analysis.json, summary.md, report.html and PNGs to out.
    `explain(result) -> records`: what caused each hop (`genjax.analysis.explain`)."""
    opts, out = opts or AnalysisOptions(), paths.as_path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = analyze(run, checkpoints, opts)
    if explain is not None:
        result["explain"] = explain(result)
    (out / "analysis.json").write_text(json.dumps(result, indent=1, allow_nan=True))
    images = {"overview": plot_overview(run, result, family_tracks(run, opts), out),
              "domains": plot_losses(run, result, out),
              "universality": plot_correlation(result, out)}
    sections = report_sections(result, images)
    (out / "summary.md").write_text(render_markdown(sections))
    (out / "report.html").write_text(render_html(sections))
    return result


def analyze_workdir(workdir: str, opts: AnalysisOptions | None = None,
                    overrides: dict | None = None,
                    explain: dict | None = None) -> paths.Path:
    """`genjax analyze`: reads WORKDIR's metric store, writes WORKDIR/analysis/. Settings:
    `opts` as given, or the run's stored `config.analysis` settings with `overrides` (the
    command line's flags) on top; `explain`: also what caused each hop (`--explain`)."""
    path = paths.as_path(workdir)
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
    explainer = None
    if explain is not None:  # {steps, orders}: genjax.analysis.explain.explain's settings
        from genjax.analysis.explain import explain as explain_hops

        def explainer(result: dict) -> list[dict]:
            return explain_hops(path, run, result, opts, **explain)
    write_report(run, out, checkpoint_steps(path), opts, explain=explainer)
    return out
