"""Summaries of a sweep's records over seeds: one row per cell, and the best learning rate per cell.

Each row says how many seeds solved the cell (`solved`, `success_rate`, by the metric's solved rule:
`SOLVED`) and gives the mean of the metric over seeds with a 95% interval: Student's t for five
seeds or more, a percentile bootstrap of the mean for two to four (with so few seeds it is close to
the range of the values), none for one. A record of a seed already counted in its cell (a duplicated
line) is not counted again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["SOLVED", "best_per_cell", "interval", "is_solved", "summarize"]

SOLVED: dict[str, tuple[str, float]] = {"accuracy": (">", 0.95), "mse": ("<", 0.01)}
"""The rule that calls a run solved, by metric: held-out accuracy above 95% (Arjovsky et al. 2016 and
Gu & Dao 2023 report copying tasks as solved near 100%), or an adding-problem MSE below 0.01 (a
constant guess scores 1/6; Hochreiter & Schmidhuber 1997 stop training their adding problem at an
absolute error below 0.04 per sequence). Metrics without a rule (`bits_per_char`) have no success rate."""

BOOTSTRAP_SAMPLES = 10_000
"""Resamples of the percentile bootstrap (seeded: the same records give the same interval)."""


def is_solved(metric: str, value: float | None, rules: Mapping[str, tuple[str, float]] | None = None) -> bool | None:
    """Whether a run's held-out metric counts as solving its task.

    Args:
        metric: the metric's name (`"accuracy"`, `"mse"`, ...).
        value: the run's metric (`None` for a run without a finite one: not solved).
        rules: `{metric: (">" or "<", threshold)}` replacing `SOLVED` entries.

    Returns:
        `True`/`False`, or `None` if the metric has no rule.
    """
    op, threshold = {**SOLVED, **(rules or {})}.get(metric, (None, 0.0))
    if op is None:
        return None
    if value is None or not math.isfinite(value):
        return False
    return value > threshold if op == ">" else value < threshold


def interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, str] | None:
    """A `confidence` interval of the mean of `values` (one value per seed).

    Args:
        values: the finite metric of each seed.
        confidence: the coverage, in (0, 1).

    Returns:
        `(low, high, method)` with `method` `"t"` (Student's t, for five values or more) or
        `"bootstrap"` (percentile bootstrap of the mean, `BOOTSTRAP_SAMPLES` resamples, for two to
        four); `None` for fewer than two values.

    References:
        Efron, B. & Tibshirani, R. (1993). An introduction to the bootstrap, ch. 13 (percentile intervals).
    """
    n = len(values)
    if n < 2:
        return None
    x = np.asarray(values, dtype=np.float64)
    alpha = (1.0 - confidence) / 2
    if n >= 5:
        from scipy.stats import t

        half = float(t.ppf(1 - alpha, n - 1) * x.std(ddof=1) / math.sqrt(n))
        return float(x.mean()) - half, float(x.mean()) + half, "t"
    means = x[np.random.default_rng(0).integers(0, n, size=(BOOTSTRAP_SAMPLES, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high), "bootstrap"


def _higher_is_better(rec: dict[str, Any]) -> bool:
    flag = rec.get("higher_is_better")
    return flag if isinstance(flag, bool) else rec.get("metric", "accuracy") == "accuracy"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(
    records: Iterable[dict[str, Any]], rules: Mapping[str, tuple[str, float]] | None = None
) -> list[dict[str, Any]]:
    """Aggregate records over seeds: one row per (task, model, seq_len, budget, lr), first-seen order.

    Args:
        records: records from `compare` or `read_results`.

        rules: solved rules replacing `SOLVED` entries, `{metric: (">" or "<", threshold)}`.

    Returns:
        Rows with `task`, `model`, `seq_len`, `params_budget`, `lr`, `metric` (name),
        `higher_is_better`, `mean`, `min`, `max` (of the metric over seeds with a finite value),
        `ci_low`, `ci_high`, `ci_method` (the 95% interval of the mean, see `interval`; `None`
        with one seed), `solved` (seeds that solved it), `success_rate` (`solved / n`; `None` for a
        metric without a rule), `loss` (mean held-out loss), `params`, `state_bytes`, `wall_s`
        (mean), `n` (distinct seeds), `seeds` (their list), `missing` (seeds without a finite
        metric) and `diverged` (seeds that hit NaN/inf).
    """
    groups: dict[tuple[Any, ...], dict[Any, dict[str, Any]]] = {}
    for rec in records:
        key = (rec.get("task"), rec.get("model"), rec.get("seq_len"), rec.get("params_budget"), rec.get("lr"))
        groups.setdefault(key, {}).setdefault(rec.get("seed"), rec)  # a seed counts once per cell
    rows = []
    for (task, model, T, budget, rate), by_seed in groups.items():
        recs = list(by_seed.values())
        name = recs[0].get("metric", "accuracy")
        values = [r[name] for r in recs if isinstance(r.get(name), (int, float))]
        ci = interval(values)
        solved = [is_solved(name, r.get(name), rules) for r in recs]
        losses = [r["loss"] for r in recs if isinstance(r.get("loss"), (int, float))]
        walls = [r["wall_s"] for r in recs if isinstance(r.get("wall_s"), (int, float))]
        rows.append({
            "task": task,
            "model": model,
            "seq_len": T,
            "params_budget": budget,
            "lr": rate,
            "metric": name,
            "higher_is_better": _higher_is_better(recs[0]),
            "mean": _mean(values),
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "ci_low": ci[0] if ci else None,
            "ci_high": ci[1] if ci else None,
            "ci_method": ci[2] if ci else None,
            "solved": sum(1 for v in solved if v),
            "success_rate": None if solved[0] is None else sum(1 for v in solved if v) / len(recs),
            "loss": _mean(losses),
            "params": recs[0].get("params"),
            "state_bytes": recs[0].get("state_bytes"),
            "wall_s": _mean(walls),
            "n": len(recs),
            "seeds": list(by_seed),
            "missing": len(recs) - len(values),
            "diverged": sum(1 for r in recs if r.get("diverged_at") is not None),
        })
    return rows


def best_per_cell(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep, for each (task, model, seq_len, budget), the learning rate with the best mean metric.

    "Best" is the highest mean over seeds for accuracy, the lowest for losses (`mse`,
    `bits_per_char`); a rate with seeds that have no finite metric (diverged beyond evaluation)
    ranks after every rate without, and ties go to the rate seen first. With a single rate per
    cell this returns the rows unchanged (plus the `lrs` field).

    Args:
        rows: rows of `summarize`.

    Returns:
        One row per cell, in first-seen order, each with `lrs`: the sorted list of rates tried.

    References:
        Arora, S. et al. (2023). Zoology: measuring and improving recall in efficient language
        models. arXiv:2312.04927, sec. 3 (the best learning rate of a sweep per configuration).
    """
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["task"], row["model"], row["seq_len"], row.get("params_budget"))
        cells.setdefault(key, []).append(row)
    out = []
    for group in cells.values():
        def rank(row: dict[str, Any]) -> tuple[int, float]:
            mean = row["mean"]
            if mean is None:
                return (1, 0.0)
            return (int(row.get("missing", 0) > 0), -mean if row["higher_is_better"] else mean)

        best = min(group, key=rank)
        lrs = sorted({r["lr"] for r in group if r.get("lr") is not None})
        out.append({**best, "lrs": lrs})
    return out
