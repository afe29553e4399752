"""Summaries over seeds: success rates by the solved rule, 95% intervals, and seeds counted once."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqmem.report import table_rows
from seqmem.summary import SOLVED, interval, is_solved, summarize


def record(model="lstm", seed=0, accuracy=0.5, seq_len=10, lr=1e-2, **extra):
    return {"task": "xor-echo", "model": model, "seq_len": seq_len, "params_budget": 20000, "lr": lr,
            "seed": seed, "metric": "accuracy", "accuracy": accuracy, "higher_is_better": True,
            "loss": 0.1, "params": 19994, "state_bytes": 392, "wall_s": 1.0, **extra}


def test_solved_rules():
    assert SOLVED["accuracy"] == (">", 0.95) and SOLVED["mse"] == ("<", 0.01)
    assert is_solved("accuracy", 0.96) and not is_solved("accuracy", 0.95) and not is_solved("accuracy", None)
    assert is_solved("mse", 0.005) and not is_solved("mse", float("nan"))
    assert is_solved("bits_per_char", 1.2) is None
    assert is_solved("mse", 0.05, {"mse": ("<", 0.1)})


def test_interval_methods_and_coverage_of_the_t_interval():
    assert interval([0.7]) is None
    low, high, method = interval([0.2, 0.9, 0.5])
    assert method == "bootstrap" and 0.2 <= low <= 0.5 <= high <= 0.9
    low, high, method = interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert method == "t" and math.isclose(high - 3.0, 2.776445105 * math.sqrt(2.5) / math.sqrt(5), rel_tol=1e-6)
    # the t interval covers the true mean about 95% of the time
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        lo, hi, _ = interval(list(rng.normal(1.0, 2.0, size=6)))
        hits += lo <= 1.0 <= hi
    assert 0.93 < hits / 2000 < 0.97


@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=4))
def test_the_bootstrap_interval_lies_within_the_values(values):
    low, high, _ = interval(values)
    assert min(values) - 1e-12 <= low <= high <= max(values) + 1e-12


def test_success_rate_interval_and_a_duplicated_seed_counted_once():
    recs = [record(seed=0, accuracy=1.0), record(seed=1, accuracy=0.97), record(seed=2, accuracy=0.51),
            record(seed=1, accuracy=0.2)]  # a second record of seed 1 (a duplicated line): not another seed
    (row,) = summarize(recs)
    assert row["n"] == 3 and row["seeds"] == [0, 1, 2] and row["solved"] == 2
    assert row["success_rate"] == pytest.approx(2 / 3) and row["mean"] == pytest.approx((1.0 + 0.97 + 0.51) / 3)
    assert row["ci_method"] == "bootstrap" and row["ci_low"] < row["mean"] < row["ci_high"]
    headers, rows, caption = table_rows(recs)
    assert headers[2:4] == ["accuracy", "solved"] and rows[0][3] == "2/3"
    assert rows[0][2].startswith("0.827 [") and "95% interval: percentile bootstrap" in caption
    assert "solved: seeds with accuracy > 0.95" in caption


def test_one_seed_has_no_interval_and_no_solved_column():
    (row,) = summarize([record()])
    assert row["ci_low"] is None and row["success_rate"] == 0.0
    headers, rows, caption = table_rows([record()])
    assert "solved" not in headers and rows[0][2] == "0.500" and caption == ""


def test_table_rows_group_by_model_whatever_order_the_runs_finished_in():
    # two workers append runs as they finish: models and lengths interleave in the file
    finished = [("rnn", 5), ("lstm", 5), ("lstm", 40), ("rnn", 160), ("gru", 20), ("rnn", 40), ("lstm", 20)]
    recs = [record(model=m, seq_len=T, seed=s) for m, T in finished for s in (0, 1)]
    _, rows, _ = table_rows(recs)
    assert [(row[0], int(row[1])) for row in rows] == [
        ("rnn", 5), ("rnn", 40), ("rnn", 160), ("lstm", 5), ("lstm", 20), ("lstm", 40), ("gru", 20)]


def test_the_plot_shows_each_interval_as_a_band_or_at_one_length_an_error_bar(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.collections import PolyCollection
    from matplotlib.container import ErrorbarContainer

    from seqmem import plots, plotstyle

    figures = []
    monkeypatch.setattr(plotstyle, "save_figure", lambda fig, path: figures.append(fig) or path)
    spread = [0.6, 0.8, 1.0]
    two_lengths = [record(seed=s, accuracy=a, seq_len=T) for T in (10, 20) for s, a in enumerate(spread)]
    one_length = [record(seed=s, accuracy=a) for s, a in enumerate(spread)]
    plots.plot_results(two_lengths, tmp_path / "a.png")
    plots.plot_results(one_length, tmp_path / "b.png")
    band, bar = (fig.axes[0] for fig in figures)
    assert any(isinstance(c, PolyCollection) for c in band.collections)
    assert not any(isinstance(c, ErrorbarContainer) for c in band.containers)
    (container,) = [c for c in bar.containers if isinstance(c, ErrorbarContainer)]
    (segment,) = container.lines[2][0].get_segments()  # the vertical bar: from the interval's low to its high
    (row,) = summarize(one_length)
    assert segment[0][1] == pytest.approx(row["ci_low"]) and segment[1][1] == pytest.approx(row["ci_high"])
