"""The comparison plot of a sweep (metric against `seq_len`, one line per model) and the atomic PNG writer."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .summary import best_per_cell, summarize

__all__ = ["LOG_SCALE_METRICS", "figure_class", "plot_results", "save_figure"]

LOG_SCALE_METRICS = frozenset({"mse"})
"""Metrics that span decades (an MSE from 1e-5 to the chance level 1/6): plotted on a log axis and
printed with significant digits rather than three decimals."""


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically, with the mode `open()` would give (`seqmem.plotstyle.save_figure`).

    Args:
        fig: a `matplotlib.figure.Figure`.
        path: where to write (its folder is created).

    Returns:
        `path`.
    """
    from . import plotstyle

    return plotstyle.save_figure(fig, path)


def figure_class() -> Any:
    """`matplotlib.figure.Figure`, or `None` (with a note on stderr) when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("seqmem: matplotlib is not installed; no plot (pip install 'seqmem[plot]')", file=sys.stderr)
        return None
    return Figure


def _band(row: dict[str, Any]) -> tuple[float, float]:
    """A row's 95% interval of the mean (the mean itself with one seed), kept positive for a log axis."""
    if row.get("ci_low") is None:
        return row["mean"], row["mean"]
    low = row["ci_low"] if row["ci_low"] > 0 or row["metric"] not in LOG_SCALE_METRICS else row["min"]
    return low, row["ci_high"]


def plot_results(records: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path | None:
    """Plot the metric against `seq_len`, one line per model: mean over seeds, a band for its 95% interval
    (an error bar where a line has a single length).

    With a learning-rate grid, each point is the best rate of its cell (`best_per_cell`); with
    several budgets, each (model, budget) gets its own line (one dash pattern per budget). Each model
    keeps its colour and marker (`seqmem.plotstyle.model_style`), and the figure is sized for the
    docs' page at 11 pt. The PNG is written atomically (`seqmem.plotstyle.save_figure`), so a reader
    never sees half a plot. Without matplotlib, nothing is written and a note goes to stderr.

    Args:
        records: records of one task (from `compare` or `read_results`).
        path: where to write the PNG.

    Returns:
        The path written, or `None` (no matplotlib, or no records).
    """
    if figure_class() is None:
        return None
    rows = best_per_cell(summarize(records))
    if not rows:
        return None
    from .plotstyle import plot_style

    with plot_style():
        return save_figure(_results_figure(records, rows), Path(path))


def _results_figure(records: Sequence[dict[str, Any]], rows: list[dict[str, Any]]) -> Any:
    """The figure of `plot_results`: the page's width, each model in its own colour and marker."""
    from matplotlib.figure import Figure

    from .plotstyle import FIGURE_WIDTH, model_style

    metric = rows[0]["metric"]
    fig = Figure(figsize=(FIGURE_WIDTH, 4.4), layout="constrained")
    ax = fig.add_subplot()
    budgets = list(dict.fromkeys(r.get("params_budget") for r in rows))
    lines = list(dict.fromkeys((r["model"], r.get("params_budget")) for r in rows))
    dashes = ["-", "--", ":", "-."]
    for i, (model, budget) in enumerate(lines):
        pts = sorted((r["seq_len"], r["mean"], *_band(r)) for r in rows
                     if (r["model"], r.get("params_budget")) == (model, budget) and r["mean"] is not None)
        if not pts:
            continue
        xs, means, lows, highs = zip(*pts, strict=True)
        color, marker = model_style(str(model))
        size = max(4.0, 10.0 - 1.0 * i)  # earlier lines drawn larger, so overlapping ones stay visible
        label = model if len(budgets) == 1 else f"{model} ({budget} params)"
        ax.plot(xs, means, marker=marker, color=color, markersize=size, label=label, zorder=2 + i,
                linestyle=dashes[budgets.index(budget) % len(dashes)])
        if any(lo != hi for lo, hi in zip(lows, highs, strict=True)):
            if len(xs) > 1:
                ax.fill_between(xs, lows, highs, color=color, alpha=0.2, linewidth=0)
            else:  # a band over one length has no width: an error bar shows the interval there
                ax.errorbar(xs, means, yerr=[[means[0] - lows[0]], [highs[0] - means[0]]], color=color,
                            linestyle="none", capsize=4, zorder=2 + i)
    first = records[0]
    chance = first.get("chance")
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance")
    if metric in LOG_SCALE_METRICS and all(r["min"] > 0 for r in rows if r["mean"] is not None):
        ax.set_yscale("log")  # an MSE from 1e-5 to the chance level of 0.17 is flat on a linear axis
    seq_lens = sorted({r["seq_len"] for r in rows})
    if len(seq_lens) > 1 and seq_lens[-1] / seq_lens[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(seq_lens, [str(t) for t in seq_lens])
    ax.set_xlabel("seq_len")
    ax.set_ylabel(metric.replace("_", " "))
    seeds = len({r.get("seed") for r in records})
    n_lrs = max(len(r["lrs"]) for r in rows)
    budget_text = f"{budgets[0]} params" if len(budgets) == 1 else f"{len(budgets)} budgets"
    ax.set_title(
        f"{first['task']}: {budget_text}, {first.get('steps', '?')} steps, "
        f"{seeds} seed{'s' if seeds != 1 else ''}" + (f", best of {n_lrs} lrs" if n_lrs > 1 else "")
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig
