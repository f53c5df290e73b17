"""Figures of a summary: each `*_figure` returns a matplotlib Figure (no pyplot, no global state),
so a page can embed the same figures; `write_plots` saves them all as PNG and SVG.

  pareto_figure                speedup vs fidelity, one point per row (the paper's Fig. 7 view)
  tau_histogram_figure         per-sample tau, one histogram per row of a task
  acceptance_by_position_figure  share of rounds whose draft token at position i was accepted
  tau_vs_length_figure         per-sample tau against the answer length (new tokens)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from lvspec_eval.report.pairing import Group
from lvspec_eval.report.summary import Summary, short_model

#: x axes of the Pareto view: a row field in [0, 1] and its axis label.
FIDELITY_AXES = {
    "retention": "task-score retention (method / ar)",
    "edit_sim_ar_mean": "token edit similarity to ar",
    "exact_match_ar_mean": "exact match with ar",
}
MARKERS = {"ar": "s", "sd": "o", "specvlm": "D", "lvspec": "*", "fly": "^", "fly_plus": "v", "random": "x"}


def _figure(title: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    return fig, ax


def series_label(row: dict[str, Any]) -> str:
    return row["method"] if row["settings_label"] == "-" else f"{row['method']} [{row['settings_label']}]"


def _err(value: float, ci: Optional[list[float]]) -> Optional[list[list[float]]]:
    if ci is None:
        return None
    return [[max(0.0, value - ci[0])], [max(0.0, ci[1] - value)]]


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (higher is better on both), by ascending x."""
    front = [p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(set(front))


def pareto_figure(rows: list[dict[str, Any]], x: str = "retention", speedup: str = "decode") -> Any:
    """Speedup (ratio of summed times) vs `x`, one point per row, with 95% intervals where known."""
    from matplotlib.ticker import PercentFormatter

    first = rows[0]
    fig, ax = _figure(f"{first['task']} - {short_model(first['target'])}")
    points = []
    for row in rows:
        xv, yv = row[x], row[f"speedup_{speedup}_pooled"]
        if xv is None or yv is None:
            continue
        points.append((xv, yv))
        xerr = _err(xv, row.get("retention_ci")) if x == "retention" else None
        ax.errorbar(xv, yv, xerr=xerr, yerr=_err(yv, row[f"speedup_{speedup}_pooled_ci"]), fmt=MARKERS.get(row["method"], "o"),
                    markersize=8, capsize=3, label=series_label(row))
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", lw=1, label="Pareto front")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(FIDELITY_AXES[x])
    ax.set_ylabel(f"{speedup} speedup over ar (x)")
    ax.legend(fontsize="small")
    return fig


def _speculative(rows: list[dict[str, Any]], groups: list[Group]) -> list[tuple[dict[str, Any], Group]]:
    return [(r, g) for r, g in zip(rows, groups, strict=True) if r["method"] != "ar"]


def _ok(group: Group) -> list[dict[str, Any]]:
    return [r for r in group.records.values() if not r.get("error")]


def tau_histogram_figure(rows: list[dict[str, Any]], groups: list[Group]) -> Any:
    """Histogram of per-sample tau, one step outline per speculative row."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure(f"{rows[0]['task']} - tau per sample")
    series = [(r, [x["tau"] for x in _ok(g) if x["tau"] is not None]) for r, g in _speculative(rows, groups)]
    values = [v for _, vs in series for v in vs]
    if values:
        lo, hi = min(values), max(values)
        edges = np.linspace(lo, hi, 21) if hi > lo else np.array([lo - 0.5, lo + 0.5])
        for row, vs in series:
            if vs:
                ax.hist(vs, bins=edges, histtype="step", lw=1.5, label=series_label(row))
        ax.legend(fontsize="small")
    ax.set_xlabel("tau (tokens per target forward)")
    ax.set_ylabel("samples")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def acceptance_by_position(group: Group) -> Optional[np.ndarray]:
    """[K] share of rounds whose draft token at position i was accepted (sum over samples)."""
    ok = [r for r in _ok(group) if r["accepted_per_position"]]
    rounds = sum(r["rounds"] for r in ok)
    if not ok or not rounds:
        return None
    k = max(len(r["accepted_per_position"]) for r in ok)
    counts = np.zeros(k)
    for r in ok:
        counts[: len(r["accepted_per_position"])] += r["accepted_per_position"]
    return counts / rounds


def acceptance_by_position_figure(rows: list[dict[str, Any]], groups: list[Group]) -> Any:
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure(f"{rows[0]['task']} - acceptance by draft position")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for row, group in _speculative(rows, groups):
        shares = acceptance_by_position(group)
        if shares is not None:
            ax.plot(np.arange(1, len(shares) + 1), shares, marker=MARKERS.get(row["method"], "o"),
                    label=series_label(row))
    ax.set_xlabel("draft position i")
    ax.set_ylabel("rounds with d_i accepted / rounds")
    ax.set_ylim(0, 1.05)
    if ax.lines:
        ax.legend(fontsize="small")
    return fig


def tau_vs_length_figure(rows: list[dict[str, Any]], groups: list[Group]) -> Any:
    fig, ax = _figure(f"{rows[0]['task']} - tau vs answer length")
    for row, group in _speculative(rows, groups):
        ok = [r for r in _ok(group) if r["tau"] is not None]
        if ok:
            ax.scatter([r["new_tokens"] for r in ok], [r["tau"] for r in ok], s=14, alpha=0.7,
                       marker=MARKERS.get(row["method"], "o"), label=series_label(row))
    ax.set_xlabel("answer length (new tokens)")
    ax.set_ylabel("tau")
    if ax.collections:
        ax.legend(fontsize="small")
    return fig


def slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", p).strip("-") for p in parts)


def pick_fidelity(rows: list[dict[str, Any]], wanted: str) -> str:
    """`wanted`, or for 'auto': retention when every row with a speedup has one, else edit similarity."""
    if wanted != "auto":
        return wanted
    timed = [r for r in rows if r["speedup_decode_pooled"] is not None]
    return "retention" if timed and all(r["retention"] is not None for r in timed) else "edit_sim_ar_mean"


def figures(summary: Summary, x: str = "auto") -> Iterable[tuple[str, Any, Optional[str]]]:
    """(file stem, figure, note) of every plot of `summary`; note says when the x axis fell back."""
    by_task: dict[str, list[int]] = {}
    by_model: dict[tuple[str, str, str], list[int]] = {}
    for i, row in enumerate(summary.rows):
        by_task.setdefault(row["task"], []).append(i)
        by_model.setdefault((row["task"], row["target"], row["dtype"]), []).append(i)
    for (task, target, dtype), idx in by_model.items():
        rows = [summary.rows[i] for i in idx]
        axis = pick_fidelity(rows, x)
        note = None
        if x == "auto" and axis != "retention":
            note = f"pareto {task} {short_model(target)}: retention unknown for some rows; x axis is {axis}"
        yield slug("pareto", task, short_model(target), dtype), pareto_figure(rows, axis), note
    for task, idx in by_task.items():
        rows = [summary.rows[i] for i in idx]
        groups = [summary.groups[i] for i in idx]
        yield slug("tau_hist", task), tau_histogram_figure(rows, groups), None
        yield slug("acceptance_by_position", task), acceptance_by_position_figure(rows, groups), None
        yield slug("tau_vs_length", task), tau_vs_length_figure(rows, groups), None


def write_plots(summary: Summary, outdir: str | Path, formats: Iterable[str] = ("png", "svg"),
                x: str = "auto") -> tuple[list[Path], list[str]]:
    """Save every figure of `summary` under `outdir` in each format; returns (files, notes)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written, notes = [], []
    for stem, fig, note in figures(summary, x):
        if note:
            notes.append(note)
        for fmt in formats:
            path = outdir / f"{stem}.{fmt}"
            fig.savefig(path, dpi=150, metadata={"Date": None} if fmt == "svg" else None)
            written.append(path)
    return written, notes
