"""The adding problem: targets by construction, marker placement, the two metrics and their chance
levels, errors, and a GRU that solves it at a short seq_len."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from seqmem.tasks import Adding, get_task

from .helpers import assert_seeded, gen, learn, rebuilt


@given(seq_len=st.integers(2, 60), batch=st.integers(1, 24), seed=st.integers(0, 2**32 - 1))
@example(seq_len=2, batch=1, seed=0)
@example(seq_len=3, batch=5, seed=1)
def test_adding_targets_and_markers(seq_len, batch, seed):
    task = Adding(seq_len)
    x, y, mask = task.sample(batch, gen(seed))
    assert x.shape == (batch, seq_len, 2) and x.dtype == torch.float32
    assert y.shape == (batch, 1) and y.dtype == torch.float32
    assert mask is None
    values, markers = x[..., 0], x[..., 1]
    assert float(values.min()) >= 0.0 and float(values.max()) < 1.0
    assert set(markers.unique().tolist()) <= {0.0, 1.0}
    half = seq_len // 2
    for r in range(batch):
        marked = torch.nonzero(markers[r]).flatten().tolist()
        assert len(marked) == 2  # exactly two markers
        first, second = marked
        assert 0 <= first < half <= second < seq_len  # one in each half
        assert math.isclose(y[r, 0].item(), values[r, first].item() + values[r, second].item(), rel_tol=1e-6)


def test_adding_markers_cover_both_halves_uniformly():
    T = 10
    x = Adding(T).sample(20_000, gen(0)).x
    freq = x[..., 1].mean(dim=0)  # (T,): each position's chance of a marker
    assert torch.allclose(freq, torch.full((T,), 1 / (T // 2)), atol=0.02)


def test_adding_seeded():
    assert_seeded(Adding(12))


def test_adding_mse_chance_is_one_sixth():
    task = Adding(16)
    assert task.chance == 1 / 6 and task.metric_name == "mse" and not task.higher_is_better
    batch = task.sample(40_000, gen(1))
    guess = torch.ones(40_000, 16, 1)  # the mean sum, at every position
    score = task.score(guess, batch)
    assert score.count == 40_000
    assert abs(score.metric_sum / score.count - 1 / 6) < 0.006  # std of the estimate ~0.001
    assert math.isclose(score.loss_sum / score.count, task.loss(guess, batch).item(), rel_tol=1e-4)


@pytest.mark.parametrize("tolerance", [0.04, 0.2])
def test_adding_accuracy_metric_and_its_chance(tolerance):
    task = Adding(16, metric="accuracy", tolerance=tolerance)
    assert task.metric_name == "accuracy" and task.higher_is_better
    assert math.isclose(task.chance, 2 * tolerance - tolerance**2)
    batch = task.sample(40_000, gen(2))
    score = task.score(torch.ones(40_000, 16, 1), batch)
    assert abs(score.metric_sum / score.count - task.chance) < 0.01
    # the loss is the squared error whatever the metric
    assert abs(score.loss_sum / score.count - 1 / 6) < 0.006
    # predictions within tolerance count, others do not; only the last position is read
    small = task.sample(4, gen(3))
    logits = torch.full((4, 16, 1), 100.0)
    logits[:, -1, 0] = small.y[:, 0] + torch.tensor([0.0, 0.5, -0.5, 0.99]) * tolerance
    logits[3, -1, 0] += 0.02 * tolerance + tolerance  # now outside
    assert task.score(logits, small).metric_sum == 3


def test_adding_config_round_trip_and_registry():
    task = get_task("adding", seq_len=9, metric="accuracy", tolerance=0.1)
    assert isinstance(task, Adding)
    assert task.config() == {"metric": "accuracy", "tolerance": 0.1}
    again = rebuilt(task)
    assert again.config() == task.config() and again.chance == task.chance
    assert torch.equal(again.sample(3, gen(0)).x, task.sample(3, gen(0)).x)
    assert task.input_kind == "real" and task.input_size == 2 and task.output_size == 1
    assert task.vocab_size is None and task.target == "last" and task.loss_kind == "mse"
    assert Adding(5).metric_name == "mse" and Adding.metric_name == "mse"  # the option is per instance


def test_adding_errors():
    with pytest.raises(ValueError, match="at least 2"):
        Adding(1)
    with pytest.raises(ValueError, match="metric"):
        Adding(8, metric="mae")
    with pytest.raises(TypeError, match="metric"):
        Adding(8, metric=None)
    for bad in (0, 1, -0.1, 1.5, True, "0.1"):
        with pytest.raises(ValueError, match="tolerance"):
            Adding(8, tolerance=bad)
    with pytest.raises(TypeError):
        get_task("adding", seq_len=8, alphabet=3)
    task = Adding(8)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(0, gen(0))
    with pytest.raises(ValueError, match="split"):
        task.sample(2, gen(0), split="test")
    with pytest.raises(ValueError, match="output_size"):
        task.score(torch.zeros(2, 8, 2), task.sample(2, gen(0)))


def test_a_gru_solves_adding_at_a_short_seq_len():
    task = Adding(20)
    result = learn(task, "gru", 32, 200, lr=1e-2)
    assert result.metric < task.chance / 20  # about 0.0003 against 0.167
