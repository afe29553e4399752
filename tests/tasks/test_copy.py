"""Copy and selective copy: layouts and targets recomputed from x, masks, uniformity, chance,
errors, and a GRU that learns each at a short seq_len."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from seqmem.tasks import Copy, SelectiveCopy, get_task

from .helpers import assert_seeded, gen, learn, rebuilt

sizes = {
    "n_tokens": st.integers(1, 6),
    "alphabet": st.integers(2, 9),
    "extra": st.integers(0, 20),  # seq_len beyond the least, 2 * n_tokens + 1
    "batch": st.integers(1, 16),
    "seed": st.integers(0, 2**32 - 1),
}


def check_output_region(task, x, y, mask):
    """Delimiter, blank output inputs, mask on the last n positions, blank targets elsewhere."""
    B, T = x.shape
    n = task.n_tokens
    assert x.dtype == y.dtype == torch.int64 and mask.dtype == torch.bool
    assert y.shape == mask.shape == (B, T)
    assert int(x.min()) >= 0 and int(x.max()) < task.vocab_size
    assert (x[:, T - n - 1] == task.alphabet + 1).all()  # the delimiter
    assert ((x == task.alphabet + 1).sum(dim=1) == 1).all()  # only there
    assert (x[:, T - n:] == 0).all()  # blanks where the output is written
    expected_mask = torch.zeros(B, T, dtype=torch.bool)
    expected_mask[:, T - n:] = True
    assert torch.equal(mask, expected_mask)
    assert (y[~mask] == 0).all()


# ---------------------------------------------------------------------------------------- copy
@given(**sizes)
@example(n_tokens=1, alphabet=2, extra=0, batch=1, seed=0)
@example(n_tokens=10, alphabet=8, extra=0, batch=2, seed=1)
def test_copy_layout_and_targets(n_tokens, alphabet, extra, batch, seed):
    T = 2 * n_tokens + 1 + extra
    task = Copy(T, n_tokens=n_tokens, alphabet=alphabet)
    assert task.delay == extra
    x, y, mask = task.sample(batch, gen(seed))
    check_output_region(task, x, y, mask)
    symbols = x[:, :n_tokens]
    assert int(symbols.min()) >= 1 and int(symbols.max()) <= alphabet
    assert (x[:, n_tokens:T - n_tokens - 1] == 0).all()  # the delay: blanks only
    for r in range(batch):  # the targets are the first n inputs, in order
        assert y[r, mask[r]].tolist() == x[r, :n_tokens].tolist()


def test_copy_symbols_uniform():
    x = Copy(25, n_tokens=10, alphabet=8).sample(4000, gen(0)).x
    freq = torch.bincount(x[:, :10].flatten(), minlength=10).float() / 40_000
    assert torch.allclose(freq[1:9], torch.full((8,), 1 / 8), atol=0.01)
    assert freq[0] == 0 and freq[9] == 0


def test_copy_seeded_and_chance():
    task = Copy(30, n_tokens=4, alphabet=6)
    assert_seeded(task)
    assert task.chance == 1 / 6 and task.higher_is_better
    batch = task.sample(5000, gen(2))
    logits = torch.zeros(5000, 30, task.output_size)
    logits[..., 3] = 1.0  # always the same symbol: right 1 time in 6
    score = task.score(logits, batch)
    assert score.count == 5000 * 4  # only the output region is scored
    assert abs(score.metric_sum / score.count - 1 / 6) < 0.015


def test_copy_score_reads_only_the_output_region():
    task = Copy(12, n_tokens=3, alphabet=4)
    batch = task.sample(6, gen(3))
    logits = torch.zeros(6, 12, task.output_size)
    logits.scatter_(2, batch.y.unsqueeze(-1), 5.0)  # the target everywhere ...
    logits[:, :8, 0] = -100.0  # ... and nonsense before the output region, which must not count
    logits[:, :8, 5] = 100.0
    assert task.score(logits, batch).metric_sum == 18


def test_copy_config_and_errors():
    task = get_task("copy", seq_len=21)
    assert isinstance(task, Copy) and task.config() == {"n_tokens": 10, "alphabet": 8}
    assert task.vocab_size == task.output_size == 10 and task.delay == 0
    again = rebuilt(Copy(15, n_tokens=3, alphabet=5))
    assert again.config() == {"n_tokens": 3, "alphabet": 5} and again.seq_len == 15
    with pytest.raises(ValueError, match=r"at least 21 \(2 \* n_tokens \+ 1"):
        Copy(20)
    with pytest.raises(ValueError, match="at least 7"):
        get_task("copy", seq_len=6, n_tokens=3)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n_tokens"):
            Copy(30, n_tokens=bad)
    for bad in (1, 0, True, "8"):
        with pytest.raises(ValueError, match="alphabet"):
            Copy(30, alphabet=bad)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(-1, gen(0))


def test_a_gru_learns_copy_at_a_short_seq_len():
    task = Copy(12, n_tokens=3, alphabet=4)  # a delay of 5 blanks
    result = learn(task, "gru", 32, 300, lr=1e-2)
    assert result.metric > 0.95  # chance 0.25


# ---------------------------------------------------------------------------------------- selective copy
@given(**sizes)
@example(n_tokens=1, alphabet=2, extra=0, batch=1, seed=0)  # no noise: the copy task
@example(n_tokens=3, alphabet=4, extra=1, batch=3, seed=2)
def test_selective_copy_layout_and_targets(n_tokens, alphabet, extra, batch, seed):
    T = 2 * n_tokens + 1 + extra
    task = SelectiveCopy(T, n_tokens=n_tokens, alphabet=alphabet)
    x, y, mask = task.sample(batch, gen(seed))
    check_output_region(task, x, y, mask)
    region = x[:, :T - n_tokens - 1]
    for r in range(batch):  # recompute the answer: the non-noise tokens before the delimiter, in order
        data = [t for t in region[r].tolist() if t != 0]
        assert len(data) == n_tokens and all(1 <= t <= alphabet for t in data)
        assert y[r, mask[r]].tolist() == data


def test_selective_copy_positions_uniform_over_the_region():
    task = SelectiveCopy(20, n_tokens=3, alphabet=4)
    x = task.sample(20_000, gen(0)).x
    region = x[:, :16]  # T - n - 1
    freq = (region != 0).float().mean(dim=0)  # each position holds a symbol with chance 3 / 16
    assert torch.allclose(freq, torch.full((16,), 3 / 16), atol=0.015)
    assert torch.equal(SelectiveCopy(7, n_tokens=3).sample(4, gen(0)).mask, Copy(7, n_tokens=3).sample(4, gen(0)).mask)


def test_selective_copy_seeded_config_errors():
    task = get_task("selective-copy", seq_len=40)
    assert isinstance(task, SelectiveCopy) and task.config() == {"n_tokens": 8, "alphabet": 8}
    assert task.chance == 1 / 8 and task.input_kind == "tokens" and task.target == "all"
    assert_seeded(task)
    again = rebuilt(SelectiveCopy(20, n_tokens=4, alphabet=3))
    assert again.config() == {"n_tokens": 4, "alphabet": 3}
    with pytest.raises(ValueError, match="at least 17"):
        SelectiveCopy(16)
    with pytest.raises(ValueError, match="n_tokens"):
        SelectiveCopy(16, n_tokens=0)
    with pytest.raises(ValueError, match="alphabet"):
        SelectiveCopy(40, alphabet=1)


def test_a_gru_learns_selective_copy_at_a_short_seq_len():
    task = SelectiveCopy(16, n_tokens=3, alphabet=4)
    result = learn(task, "gru", 48, 400, lr=1e-2)
    assert result.metric > 0.9  # chance 0.25
