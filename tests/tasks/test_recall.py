"""Induction heads and multi-query associative recall: answers recomputed from x, trigger and query
placement, masks, uniformity, chance, errors, and a small model that learns each at a short seq_len."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from seqmem.tasks import AssocRecall, Induction, get_task

from .helpers import assert_seeded, gen, learn, rebuilt


# ---------------------------------------------------------------------------------------- induction
@given(
    seq_len=st.integers(3, 60),
    vocab_size=st.integers(3, 20),
    batch=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
@example(seq_len=3, vocab_size=3, batch=1, seed=0)
@example(seq_len=4, vocab_size=3, batch=4, seed=1)
def test_induction_answer_is_the_token_after_the_first_trigger(seq_len, vocab_size, batch, seed):
    task = Induction(seq_len, vocab_size=vocab_size)
    x, y, mask = task.sample(batch, gen(seed))
    assert x.shape == (batch, seq_len) and x.dtype == torch.int64
    assert y.shape == (batch,) and y.dtype == torch.int64 and mask is None
    trigger = vocab_size - 1
    assert int(x.min()) >= 0 and int(x.max()) == trigger
    for r in range(batch):
        row = x[r].tolist()
        where = [t for t, tok in enumerate(row) if tok == trigger]
        assert len(where) == 2 and where[1] == seq_len - 1  # once early, once at the end
        p = where[0]
        assert p < (seq_len - 1) // 2  # the pair lies in the first half
        assert y[r].item() == row[p + 1] != trigger


def test_induction_positions_and_answers_uniform():
    T, V = 21, 6
    x, y, _ = Induction(T, vocab_size=V).sample(30_000, gen(0))
    p = (x == V - 1).int().argmax(dim=1)  # the first trigger
    freq = torch.bincount(p, minlength=10).float() / 30_000
    assert torch.allclose(freq, torch.full((10,), 1 / 10), atol=0.01)  # uniform over [0, (T - 1) // 2)
    answers = torch.bincount(y, minlength=V).float() / 30_000
    assert torch.allclose(answers[:-1], torch.full((V - 1,), 1 / (V - 1)), atol=0.015)
    assert answers[-1] == 0


def test_induction_seeded_chance_config_errors():
    task = get_task("induction", seq_len=16)
    assert isinstance(task, Induction) and task.config() == {"vocab_size": 16}
    assert task.vocab_size == task.output_size == 16 and task.chance == 1 / 15
    assert_seeded(task)
    again = rebuilt(Induction(9, vocab_size=5))
    assert again.config() == {"vocab_size": 5} and again.seq_len == 9
    with pytest.raises(ValueError, match="at least 3"):
        Induction(2)
    for bad in (2, 0, True, 4.0):
        with pytest.raises(ValueError, match="vocab_size"):
            Induction(10, vocab_size=bad)


def test_induction_score_reads_the_last_position():
    task = Induction(10, vocab_size=5)
    batch = task.sample(8, gen(1))
    logits = torch.zeros(8, 10, 5)
    logits[torch.arange(8), -1, batch.y] = 3.0
    logits[:, :-1, 0] = 50.0
    score = task.score(logits, batch)
    assert score.count == 8 and score.metric_sum == 8


def test_a_gru_learns_induction_at_a_short_seq_len():
    task = Induction(16, vocab_size=8)
    result = learn(task, "gru", 32, 300, lr=1e-2)
    assert result.metric > 0.95  # chance 1/7


# ---------------------------------------------------------------------------------------- associative recall
@given(
    n=st.integers(1, 6),
    extra_vocab=st.integers(0, 12),
    extra_len=st.integers(0, 20),
    batch=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
@example(n=1, extra_vocab=0, extra_len=0, batch=1, seed=0)
@example(n=3, extra_vocab=1, extra_len=0, batch=2, seed=1)  # odd vocab: one more value than keys
def test_assoc_recall_values_recomputed_from_the_pairs(n, extra_vocab, extra_len, batch, seed):
    V, T = 2 * n + 2 + extra_vocab, 3 * n + extra_len
    task = AssocRecall(T, num_kv_pairs=n, vocab_size=V)
    x, y, mask = task.sample(batch, gen(seed))
    assert x.shape == y.shape == mask.shape == (batch, T)
    assert x.dtype == y.dtype == torch.int64 and mask.dtype == torch.bool
    assert int(x.min()) >= 0 and int(x.max()) < V
    for r in range(batch):
        keys, values = x[r, 0:2 * n:2].tolist(), x[r, 1:2 * n:2].tolist()
        assert len(set(keys)) == n and all(1 <= k < V // 2 for k in keys)
        assert len(set(values)) == n and all(V // 2 <= v < V for v in values)
        table = dict(zip(keys, values, strict=True))
        queries = torch.nonzero(mask[r]).flatten().tolist()
        assert len(queries) == n and min(queries) >= 2 * n
        assert sorted(x[r, queries].tolist()) == sorted(keys)  # every key asked once
        assert y[r, queries].tolist() == [table[k] for k in x[r, queries].tolist()]
        rest = [t for t in range(2 * n, T) if t not in queries]
        assert (x[r, rest] == 0).all()  # filler between the queries
        assert (y[r][~mask[r]] == 0).all()


def test_assoc_recall_uniform_queries_keys_values():
    task = AssocRecall(16, num_kv_pairs=2, vocab_size=12)
    x, y, mask = task.sample(30_000, gen(0))
    freq = mask[:, 4:].float().mean(dim=0)  # each of the 12 query slots asked with chance 2/12
    assert torch.allclose(freq, torch.full((12,), 2 / 12), atol=0.012)
    keys = torch.bincount(x[:, 0:4:2].flatten(), minlength=12).float() / 60_000
    assert torch.allclose(keys[1:6], torch.full((5,), 1 / 5), atol=0.012)
    values = torch.bincount(y[mask], minlength=12).float() / 60_000
    assert torch.allclose(values[6:], torch.full((6,), 1 / 6), atol=0.012)
    first = x[:, 0:4:2]
    asked_first = x[:, 4:][mask[:, 4:]].view(-1, 2)[:, 0]  # the key asked first, in sequence order
    assert abs((asked_first == first[:, 0]).float().mean().item() - 0.5) < 0.02  # queries in random order


def test_assoc_recall_seeded_chance_config_errors():
    task = get_task("assoc-recall", seq_len=24)
    assert isinstance(task, AssocRecall)
    assert task.config() == {"num_kv_pairs": 8, "vocab_size": 64}
    assert task.chance == 1 / 32 and task.output_size == 64 and task.target == "all"
    assert_seeded(task)
    again = rebuilt(AssocRecall(10, num_kv_pairs=3, vocab_size=9))
    assert again.config() == {"num_kv_pairs": 3, "vocab_size": 9}
    batch = task.sample(2000, gen(3))
    logits = torch.zeros(2000, 24, 64)
    logits[..., 40] = 1.0  # always one value: right 1 time in 32
    score = task.score(logits, batch)
    assert score.count == 2000 * 8
    assert abs(score.metric_sum / score.count - 1 / 32) < 0.006
    with pytest.raises(ValueError, match=r"at least 24 \(3 \* num_kv_pairs"):
        AssocRecall(23)
    with pytest.raises(ValueError, match="num_kv_pairs"):
        AssocRecall(30, num_kv_pairs=0)
    with pytest.raises(ValueError, match="vocab_size must be an int >= 10"):
        AssocRecall(30, num_kv_pairs=4, vocab_size=9)
    with pytest.raises(ValueError, match="vocab_size"):
        AssocRecall(30, vocab_size=True)


@pytest.mark.slow  # about 6 s
def test_a_transformer_learns_assoc_recall_at_a_short_seq_len():
    task = AssocRecall(12, num_kv_pairs=2, vocab_size=16)
    result = learn(task, "transformer", 32, 600, lr=3e-3)
    assert result.metric > 0.9  # chance 1/8; 0.98 to 1.0 over seeds 0-7
