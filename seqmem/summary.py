"""Summaries of a sweep's records over seeds: one row per cell, and the best learning rate per cell."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["best_per_cell", "summarize"]


def _higher_is_better(rec: dict[str, Any]) -> bool:
    flag = rec.get("higher_is_better")
    return flag if isinstance(flag, bool) else rec.get("metric", "accuracy") == "accuracy"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate records over seeds: one row per (task, model, seq_len, budget, lr), first-seen order.

    Args:
        records: records from `compare` or `read_results`.

    Returns:
        Rows with `task`, `model`, `seq_len`, `params_budget`, `lr`, `metric` (name),
        `higher_is_better`, `mean`, `min`, `max` (of the metric over seeds with a finite value),
        `loss` (mean held-out loss), `params`, `state_bytes`, `wall_s` (mean), `n` (seeds),
        `missing` (seeds without a finite metric) and `diverged` (seeds that hit NaN/inf).
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in records:
        key = (rec.get("task"), rec.get("model"), rec.get("seq_len"), rec.get("params_budget"), rec.get("lr"))
        groups.setdefault(key, []).append(rec)
    rows = []
    for (task, model, T, budget, rate), recs in groups.items():
        name = recs[0].get("metric", "accuracy")
        values = [r[name] for r in recs if isinstance(r.get(name), (int, float))]
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
            "loss": _mean(losses),
            "params": recs[0].get("params"),
            "state_bytes": recs[0].get("state_bytes"),
            "wall_s": _mean(walls),
            "n": len(recs),
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
