"""The comparison plot of a sweep (metric against `seq_len`, one line per model) and the atomic PNG writer."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .summary import best_per_cell, summarize

__all__ = ["LOG_SCALE_METRICS", "figure_class", "plot_results", "save_figure"]

LOG_SCALE_METRICS = frozenset({"mse"})
"""Metrics that span decades (an MSE from 1e-5 to the chance level 1/6): plotted on a log axis and
printed with significant digits rather than three decimals."""


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically (temporary file + `os.replace`).

    Args:
        fig: a `matplotlib.figure.Figure`.
        path: where to write (its folder is created).

    Returns:
        `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    """Plot the metric against `seq_len`, one line per model: mean over seeds, a band for its 95% interval.

    With a learning-rate grid, each point is the best rate of its cell (`best_per_cell`); with
    several budgets, each (model, budget) gets its own line. The PNG is written to a temporary file
    beside `path` and moved into place (`os.replace`), so a reader never sees half a plot. Without
    matplotlib, nothing is written and a note goes to stderr.

    Args:
        records: records of one task (from `compare` or `read_results`).
        path: where to write the PNG.

    Returns:
        The path written, or `None` (no matplotlib, or no records).
    """
    Figure = figure_class()
    rows = best_per_cell(summarize(records))
    if Figure is None or not rows:
        return None
    path = Path(path)
    metric = rows[0]["metric"]
    fig = Figure(figsize=(6.4, 4.2), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    markers = "osD^vPX*"
    budgets = list(dict.fromkeys(r.get("params_budget") for r in rows))
    lines = list(dict.fromkeys((r["model"], r.get("params_budget")) for r in rows))
    for i, (model, budget) in enumerate(lines):
        pts = sorted((r["seq_len"], r["mean"], *_band(r)) for r in rows
                     if (r["model"], r.get("params_budget")) == (model, budget) and r["mean"] is not None)
        if not pts:
            continue
        xs, means, lows, highs = zip(*pts, strict=True)
        size = max(4.0, 10.0 - 1.5 * i)  # earlier lines drawn larger, so overlapping ones stay visible
        label = model if len(budgets) == 1 else f"{model} ({budget} params)"
        (line,) = ax.plot(xs, means, marker=markers[i % len(markers)], markersize=size,
                          linewidth=max(1.0, 3.0 - 0.4 * i), label=label, zorder=2 + i)
        if any(lo != hi for lo, hi in zip(lows, highs, strict=True)):
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
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
    ax.legend()
    return save_figure(fig, path)
