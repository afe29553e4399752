"""Tasks: labels correct by construction, seeded determinism, shapes, balance; the text task's split,
vocabulary, metric and errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from seqmem.tasks import Batch, CharText, Task, XorEcho, get_task, task_names


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------- registry
def test_registry_names_and_unknown_name():
    assert {"xor-echo", "text"} <= set(task_names())
    for name in task_names():
        if name == "data":  # your own data needs a file: tests/tasks/test_arrays.py
            continue
        try:
            task = get_task(name, seq_len=64)  # long enough for every task at its defaults
        except ImportError:  # digits, vowels without the seqmem[data] extra
            continue
        assert isinstance(task, Task)
        assert task.name == name and task.description
    with pytest.raises(ValueError, match="xor-echo"):  # lists the known names
        get_task("no-such-task", seq_len=8)


@pytest.mark.parametrize("seq_len", [0, -3, 2.5, True])
def test_bad_seq_len(seq_len):
    with pytest.raises(ValueError, match="seq_len"):
        get_task("xor-echo", seq_len=seq_len)


# ---------------------------------------------------------------------------------------- xor-echo
@given(
    seq_len=st.integers(2, 50),
    batch=st.integers(1, 65),
    alphabet=st.integers(2, 9),
    seed=st.integers(0, 2**32 - 1),
)
@example(seq_len=2, batch=1, alphabet=2, seed=0)
def test_xor_echo_labels_shapes_balance(seq_len, batch, alphabet, seed):
    task = XorEcho(seq_len, alphabet=alphabet)
    x, y, mask = task.sample(batch, gen(seed))
    assert x.shape == (batch, seq_len) and x.dtype == torch.int64
    assert y.shape == (batch,) and y.dtype == torch.int64
    assert mask is None
    assert int(x.min()) >= 0 and int(x.max()) < alphabet
    assert torch.equal(y, (x[:, 0] == x[:, -1]).long())  # the label is the rule
    assert abs(int(y.sum()) - batch / 2) <= 0.5  # exactly balanced (odd batches: one extra)


@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 20))
def test_xor_echo_seeded(seed, batch):
    task = XorEcho(12)
    a, b = task.sample(batch, gen(seed)), task.sample(batch, gen(seed))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_xor_echo_different_seeds_differ_and_symbols_uniform():
    task = XorEcho(10, alphabet=4)
    a, b = task.sample(4096, gen(0)), task.sample(4096, gen(1))
    assert not torch.equal(a.x, b.x)
    for col in (0, 5, -1):  # every position, the last one included, stays uniform
        freq = torch.bincount(a.x[:, col], minlength=4).float() / 4096
        assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.04)


def test_xor_echo_options_and_errors():
    task = XorEcho(5, alphabet=3)
    assert task.vocab_size == 3 and task.output_size == 2 and task.chance == 0.5
    assert task.config() == {"alphabet": 3}
    assert task.higher_is_better and task.metric_name == "accuracy"
    with pytest.raises(ValueError, match="at least 2"):
        XorEcho(1)
    with pytest.raises(ValueError, match="alphabet"):
        XorEcho(5, alphabet=1)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(0, gen(0))
    with pytest.raises(ValueError, match="split"):
        task.sample(2, gen(0), split="test")


def test_xor_echo_loss_and_score_read_the_last_position():
    task = XorEcho(6)
    batch = task.sample(10, gen(3))
    logits = torch.zeros(10, 6, 2)
    logits[torch.arange(10), -1, batch.y] = 5.0  # right at the last position only
    logits[:, 0, 0] = 100.0  # wrong elsewhere: must not matter
    score = task.score(logits, batch)
    assert score.count == 10 and score.metric_sum == 10
    assert math.isclose(score.loss_sum / 10, task.loss(logits, batch).item(), rel_tol=1e-6)
    with pytest.raises(ValueError, match="output_size"):
        task.loss(torch.zeros(10, 6, 3), batch)


# ---------------------------------------------------------------------------------------- text
@pytest.fixture(scope="module")
def text_task() -> CharText:
    return CharText(seq_len=16)


def test_text_default_corpus_split_and_vocab(text_task):
    t = text_task
    assert t.config()["corpus"] == "pydoc_data.topics"
    assert t.n_train + t.n_valid > 400_000
    assert abs(t.n_valid / (t.n_train + t.n_valid) - 0.1) < 1e-3
    assert list(t.chars) == sorted(set(t.chars))  # sorted, unique
    assert t.vocab_size == len(t.chars) + 1 and t.unk_id == t.vocab_size - 1
    assert t.output_size == t.vocab_size
    assert t.decode(t.encode("def f(x):")) == "def f(x):"


@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 8), split=st.sampled_from(["train", "eval"]))
def test_text_windows_are_shifted_by_one(text_task, seed, batch, split):
    x, y, mask = text_task.sample(batch, gen(seed), split=split)
    assert x.shape == y.shape == mask.shape == (batch, 16)
    assert x.dtype == y.dtype == torch.int64 and mask.all()
    assert torch.equal(x[:, 1:], y[:, :-1])
    again = text_task.sample(batch, gen(seed), split=split)
    assert torch.equal(again.x, x)


def test_text_eval_windows_come_from_the_held_out_end(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a" * 900 + "b" * 100, encoding="utf-8")
    t = CharText(seq_len=8, corpus=corpus)
    assert t.chars == "a" and t.vocab_size == 2  # 'b' only in the held-out part: UNK
    assert (t.sample(32, gen(0), split="eval").x == t.unk_id).all()
    assert (t.sample(32, gen(0), split="train").x == 0).all()


def test_text_uniform_model_scores_log2_vocab(text_task):
    t = text_task
    batch = t.sample(4, gen(0), split="eval")
    score = t.score(torch.zeros(4, 16, t.vocab_size), batch)
    assert score.count == 4 * 16
    assert math.isclose(score.metric_sum / score.count, math.log2(t.vocab_size), rel_tol=1e-6)
    assert math.isclose(t.chance, math.log2(t.vocab_size))
    assert not t.higher_is_better


def test_text_custom_corpus_unicode(tmp_path):
    corpus = tmp_path / "poem.txt"
    corpus.write_text("Grüße aus Köln! ☃ " * 40, encoding="utf-8")
    t = get_task("text", seq_len=10, corpus=str(corpus))
    assert "☃" in t.chars and "ü" in t.chars
    assert t.config()["corpus"] == str(corpus.resolve())
    assert len(t.config()["corpus_sha256"]) == 64
    b = t.sample(3, gen(1))
    assert int(b.x.max()) < t.vocab_size


def test_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CharText(8, corpus=tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        CharText(8, corpus=empty)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(ValueError, match="UTF-8"):
        CharText(8, corpus=latin1)
    short = tmp_path / "short.txt"
    short.write_text("hello world, " * 5, encoding="utf-8")  # 65 chars: 6 held out
    with pytest.raises(ValueError, match="too short"):
        CharText(8, corpus=short)
    with pytest.raises(ValueError, match="not a regular file"):
        CharText(8, corpus=tmp_path)
    with pytest.raises(ValueError, match="valid_fraction"):
        CharText(8, valid_fraction=1.0)


def test_batch_is_a_namedtuple():
    b = Batch(torch.zeros(1, 2), torch.zeros(1))
    assert b.mask is None and len(b) == 3
