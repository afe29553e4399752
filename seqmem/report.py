"""`seqmem report`: the table, a Markdown report and the plots of a sweep, from `results.jsonl` alone.

Nothing is trained: every number comes from the records `seqmem.compare` appended. For each task in
the file, `write_report` draws

- `<task>.png`: the metric against `seq_len`, one line per model (`seqmem.compare.plot_results`);
- `<task>_params.png`: the metric against the network's parameter count, one panel per `seq_len`
  (a line per model across parameter budgets, when the sweep had several);
- `<task>_state.png`: the metric against the bytes of state a network carries per sequence after
  `seq_len` steps (constant for the recurrences and SSMs, growing for attention's KV cache);

and writes `report.md`: the settings of the sweep, the table (mean over seeds at the best learning
rate of each cell, with its 95% interval and success rate), the runs that diverged, and links to the plots.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._files import atomic_write_bytes
from .plots import LOG_SCALE_METRICS, _band, figure_class, plot_results
from .results import RESULTS_FILE, read_results
from .summary import SOLVED, best_per_cell, summarize

__all__ = [
    "REPORT_FILE",
    "format_bytes",
    "format_metric",
    "markdown_table",
    "plot_metric_vs",
    "table_rows",
    "write_report",
]

REPORT_FILE = "report.md"
"""The name of the Markdown report in a sweep's folder."""

_X_AXES = {"params": "parameters", "state_bytes": "state per sequence (bytes)"}


def format_bytes(n: Any) -> str:
    """Bytes in a short human form: `"512 B"`, `"1.5 KiB"`, `"2.0 MiB"`.

    Args:
        n: a number of bytes, or `None`.

    Returns:
        The text (`"n/a"` for `None`).
    """
    if not isinstance(n, (int, float)):
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _short(n: float) -> str:
    """A parameter count in short form: 950, 20k, 1.5M."""
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    return f"{n / 1e3:.3g}k" if n >= 1e3 else f"{n:.0f}"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def format_metric(value: Any, metric: str) -> str:
    """A metric or loss for a table: three decimals, or three significant digits for a quantity
    that spans decades (an MSE of 3e-5 is not `0.000`; see `LOG_SCALE_METRICS`).

    Args:
        value: the number, or `None`/NaN for a missing one (`"n/a"`).
        metric: the metric's name (`"accuracy"`, `"mse"`, `"bits_per_char"`, or `"loss"` for a
            training loss, which is printed with significant digits too).

    Returns:
        The text.
    """
    if metric in LOG_SCALE_METRICS or metric == "loss":
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        return f"{value:.3g}"
    return _fmt(value)


def table_rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], str]:
    """The comparison table as text cells: headers, rows and a caption (for rich and Markdown alike).

    One row per (model, seq_len, budget) at its best learning rate (`best_per_cell`), grouped by model
    in the order the models first appear, then by length and budget: the mean
    metric over seeds with its 95% interval and, with several seeds, how many solved the cell
    (`seqmem.summary.SOLVED`); the budget column appears with several budgets, the learning-rate
    column with several rates.

    Args:
        records: records of one task (from `seqmem.compare.compare` or `read_results`).

    Returns:
        `(headers, rows, caption)`.
    """
    rows = best_per_cell(summarize(records))
    # grouped by model (in the order models first appear), then by length and budget: a sweep's file
    # lists runs in the order they finished, which interleaves models once several workers run
    order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
    rows.sort(key=lambda r: (order[r["model"]], r["seq_len"], r.get("params_budget") or 0))
    metric = rows[0]["metric"] if rows else "metric"
    multi_seed = any(r["n"] > 1 for r in rows)
    multi_budget = len({r.get("params_budget") for r in rows}) > 1
    multi_lr = any(len(r["lrs"]) > 1 for r in rows)
    with_rate = multi_seed and any(r["success_rate"] is not None for r in rows)
    headers = ["model", "seq_len"] + (["budget"] if multi_budget else []) + [metric.replace("_", " ")]
    headers += (["solved"] if with_rate else []) + (["best lr"] if multi_lr else [])
    headers += ["loss", "params", "state", "wall s"]
    out = []
    for r in rows:
        value = format_metric(r["mean"], metric)
        if r["ci_low"] is not None:
            value += f" [{format_metric(r['ci_low'], metric)}, {format_metric(r['ci_high'], metric)}]"
        if r["diverged"]:
            value += f" ({r['diverged']} diverged)"
        cells = [str(r["model"]), str(r["seq_len"])]
        if multi_budget:
            cells.append(str(r.get("params_budget")))
        cells.append(value)
        if with_rate:
            cells.append("n/a" if r["success_rate"] is None else f"{r['solved']}/{r['n']}")
        if multi_lr:
            cells.append(f"{r['lr']:g}" if isinstance(r.get("lr"), (int, float)) else "n/a")
        cells += [format_metric(r["loss"], "loss"), str(r["params"]), format_bytes(r.get("state_bytes"))]
        cells.append(_fmt(r["wall_s"], 1))
        out.append(cells)
    notes = []
    if multi_seed:
        seeds = max(r["n"] for r in rows)
        methods = sorted({r["ci_method"] for r in rows if r["ci_method"]})
        how = {"t": "Student's t", "bootstrap": "percentile bootstrap"}
        notes.append(f"mean [95% interval: {' or '.join(how[m] for m in methods)}] over up to {seeds} seeds")
        if with_rate:
            op, threshold = SOLVED[metric]
            notes.append(f"solved: seeds with {metric.replace('_', ' ')} {op} {threshold:g}")
    if multi_lr:
        n_lrs = max(len(r["lrs"]) for r in rows)
        notes.append(f"best of {n_lrs} learning rates per cell by mean held-out {metric.replace('_', ' ')}")
    return headers, out, "; ".join(notes)


def markdown_table(records: Sequence[dict[str, Any]]) -> str:
    """The comparison table as GitHub-flavoured Markdown (see `table_rows`).

    Args:
        records: records of one task.

    Returns:
        The table, with its caption in italics below it when there is one.
    """
    headers, rows, caption = table_rows(records)
    align = ["---" if i == 0 else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    if caption:
        lines += ["", f"*{caption}*"]
    return "\n".join(lines)


def plot_metric_vs(records: Sequence[dict[str, Any]], path: str | os.PathLike[str], x: str) -> Path | None:
    """Plot the metric against parameters or state size: one panel per `seq_len`, a line per model.

    Each point is a (model, seq_len, budget) cell at its best learning rate, mean over seeds with its
    95% interval as an error bar (none with one seed); the x axis is logarithmic. Written atomically, as `plot_results`.

    Args:
        records: records of one task.
        path: where to write the PNG.
        x: `"params"` (the actual parameter count) or `"state_bytes"` (state per sequence).

    Returns:
        The path written, or `None` (no matplotlib, or no records).

    Raises:
        ValueError: for another `x`.
    """
    if x not in _X_AXES:
        raise ValueError(f"plot_metric_vs: x must be one of {list(_X_AXES)}, got {x!r}")
    if figure_class() is None:
        return None
    rows = [r for r in best_per_cell(summarize(records)) if r["mean"] is not None and r.get(x)]
    if not rows:
        return None
    from .plotstyle import plot_style, save_figure

    with plot_style():
        fig = _metric_vs_figure(records, rows, x)
        return save_figure(fig, Path(path))


def _metric_vs_figure(records: Sequence[dict[str, Any]], rows: list[dict[str, Any]], x: str) -> Any:
    """The figure of `plot_metric_vs`: panels in two columns, the page's width, one legend on top."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    from .plotstyle import FIGURE_WIDTH, model_style

    seq_lens = sorted({r["seq_len"] for r in rows})
    cols = min(2, len(seq_lens))
    n_rows = math.ceil(len(seq_lens) / cols)
    fig = Figure(figsize=(FIGURE_WIDTH, 1.2 + 2.9 * n_rows))
    axes = fig.subplots(n_rows, cols, squeeze=False, sharey=True)
    models = list(dict.fromkeys(r["model"] for r in rows))
    chance = records[0].get("chance")
    for k, T in enumerate(seq_lens):
        ax = axes[k // cols][k % cols]
        for model in models:
            pts = sorted((r[x], r["mean"], *_band(r)) for r in rows if r["seq_len"] == T and r["model"] == model)
            if not pts:
                continue
            xs, ys, lo, hi = zip(*pts, strict=True)
            err = [[y - a for y, a in zip(ys, lo, strict=True)], [b - y for y, b in zip(ys, hi, strict=True)]]
            color, marker = model_style(model)
            ax.errorbar(xs, ys, yerr=err, marker=marker, color=color, label=model if k == 0 else None, capsize=2)
        if chance is not None:
            ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance" if k == 0 else None)
        if rows[0]["metric"] in LOG_SCALE_METRICS and all(r["min"] > 0 for r in rows):
            ax.set_yscale("log")
        ax.set_xscale("log")
        ticks = sorted({r[x] for r in rows if r["seq_len"] == T})
        lo, hi = ticks[0], ticks[-1]
        kept = [lo]
        for t in ticks[1:]:
            if t >= 3.5 * kept[-1]:  # no overlapping labels at 11 pt in a half-page panel
                kept.append(t)
        ax.set_xlim(lo / 1.6, hi * 1.6)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(kept, [format_bytes(v) if x == "state_bytes" else _short(v) for v in kept])
        ax.set_title(f"seq_len {T}")
        if k // cols == n_rows - 1 or k + cols >= len(seq_lens):
            ax.set_xlabel(_X_AXES[x])
        if k % cols == 0:
            ax.set_ylabel(rows[0]["metric"].replace("_", " "))
    for k in range(len(seq_lens), n_rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] == "chance")  # the models first
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside lower center",
               ncols=min(4, len(labels)))
    fig.suptitle(f"{records[0].get('task')}: {rows[0]['metric'].replace('_', ' ')} vs {_X_AXES[x]}")
    return fig


def _settings(records: Sequence[dict[str, Any]]) -> list[str]:
    first = records[0]

    def values(key: str) -> str:
        seen = list(dict.fromkeys(json_safe(r.get(key)) for r in records))
        return ", ".join(str(v) for v in seen)

    def json_safe(v: Any) -> Any:
        return v if not isinstance(v, (dict, list)) else str(v)

    lines = [
        f"- task config: `{first.get('task_config')}`",
        f"- models: {values('model')}",
        f"- sequence lengths: {values('seq_len')}",
        f"- parameter budgets: {values('params_budget')}; seeds: {values('seed')}",
        f"- steps: {values('steps')}; batch size: {values('batch_size')}; learning rates: {values('lr')}",
        f"- weight decay: {values('weight_decay')}; clip: {values('clip')}; tbptt: {values('tbptt')}; "
        f"backend: {values('backend')}",
        f"- runs: {len(records)}; trained with seqmem {values('seqmem')}, torch {values('torch')}",
    ]
    return lines


def write_report(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, plot: bool = True
) -> Path:
    """Render the report of a sweep from its `results.jsonl`, without training anything.

    Args:
        run_dir: the sweep's folder (holding `results.jsonl`), or the file itself.
        out: the folder for `report.md` and the plots; default: the sweep's folder.
        plot: draw the plots (needs matplotlib; without it the report has no figures).

    Returns:
        The path of `report.md`.

    Raises:
        FileNotFoundError: if there is no `results.jsonl` or it holds no complete record.
    """
    src = Path(run_dir)
    results = src / RESULTS_FILE if src.is_dir() else src
    records = read_results(results)
    if not records:
        raise FileNotFoundError(
            f"seqmem report: no records in {results} (run seqmem compare --out {src} first)"
        )
    dest = Path(out) if out is not None else results.parent
    dest.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_task.setdefault(str(rec.get("task")), []).append(rec)
    lines = [f"# seqmem report: {', '.join(by_task)}", "",
             f"From `{results}` ({len(records)} runs), rendered by seqmem {__version__}.", ""]
    for task, recs in by_task.items():
        lines += [f"## {task}", "", *_settings(recs), "", markdown_table(recs), ""]
        diverged = [r for r in recs if r.get("diverged_at") is not None]
        if diverged:
            lines += ["Runs that diverged (NaN or inf; evaluated with their last finite parameters):", ""]
            lines += [f"- {r['model']} seq_len={r['seq_len']} lr={r.get('lr')} seed={r.get('seed')}: "
                      f"step {r['diverged_at']} ({r.get('diverged') or 'non-finite'})" for r in diverged]
            lines.append("")
        if plot:
            figures = [
                (plot_results(recs, dest / f"{task}.png"), f"{task}: metric vs seq_len"),
                (plot_metric_vs(recs, dest / f"{task}_params.png", "params"),
                 f"{task}: metric vs parameters"),
                (plot_metric_vs(recs, dest / f"{task}_state.png", "state_bytes"),
                 f"{task}: metric vs state size"),
            ]
            for path, alt in figures:
                if path is not None:
                    lines += [f"![{alt}]({os.path.relpath(path, dest)})", ""]
    report = dest / REPORT_FILE
    atomic_write_bytes(report, ("\n".join(lines).rstrip() + "\n").encode("utf-8"))
    return report
