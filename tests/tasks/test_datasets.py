"""The data-set tasks: digits (scikit-learn) and Japanese vowels (sktime's bundled files).

Tests that read the data skip, with the reason, when the `data` extra is not installed; the
messages without the extra are tested either way.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seqmem.tasks import Digits, JapaneseVowels, get_task, task_names
from seqmem.tasks import datasets as ds

from .helpers import assert_seeded, gen, learn, rebuilt

NO_SKTIME = importlib.util.find_spec("sktime") is None
needs_sktime = pytest.mark.skipif(NO_SKTIME, reason='sktime is not installed (pip install "seqmem[data]")')


@pytest.fixture(scope="module")
def sk_digits():
    sk = pytest.importorskip("sklearn.datasets", reason='scikit-learn is not installed (pip install "seqmem[data]")')
    bunch = sk.load_digits()
    return bunch.data, bunch.target


# ---------------------------------------------------------------------------------------- without the extra
def test_registered_without_the_extra_and_import_errors_name_it(monkeypatch):
    assert {"digits", "vowels"} <= set(task_names())
    ds._load_digits.cache_clear()
    ds._load_vowels.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn...` raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sktime" else real_find_spec(name, *a))
    try:
        with pytest.raises(ImportError, match=r'scikit-learn.*pip install "seqmem\[data\]"'):
            get_task("digits", seq_len=64)
        with pytest.raises(ImportError, match=r'sktime.*pip install "seqmem\[data\]"'):
            get_task("vowels", seq_len=29)
    finally:
        ds._load_digits.cache_clear()
        ds._load_vowels.cache_clear()


def test_vowels_missing_files(monkeypatch, tmp_path):
    class Spec:
        submodule_search_locations = [str(tmp_path)]

    ds._load_vowels.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: Spec())
    try:
        with pytest.raises(FileNotFoundError, match="no bundled Japanese vowels"):
            JapaneseVowels(29)
    finally:
        ds._load_vowels.cache_clear()


def test_digits_seq_len_and_layout_errors_before_loading():
    with pytest.raises(ValueError, match="64 .* or 8"):
        Digits(32)
    with pytest.raises(ValueError, match="layout"):
        Digits(64, layout="columns")
    with pytest.raises(TypeError, match="layout"):
        Digits(64, layout=8)


# ---------------------------------------------------------------------------------------- digits
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 32), split=st.sampled_from(["train", "eval"]))
def test_digits_batches_are_images_with_their_labels(sk_digits, seed, batch, split):
    images, labels = sk_digits
    task = Digits(64)
    x, y, mask = task.sample(batch, gen(seed), split)
    assert x.shape == (batch, 64, 1) and x.dtype == torch.float32
    assert y.shape == (batch,) and y.dtype == torch.int64 and mask is None
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    pixels = (x[..., 0] * 16).round().numpy()
    assert np.allclose(pixels, x[..., 0].numpy() * 16, atol=1e-5)  # 17 grey levels, scaled by 1/16
    for r in range(batch):  # each sequence is an image of the data set, labelled as there
        same = np.flatnonzero((images == pixels[r]).all(axis=1))
        assert len(same) >= 1 and y[r].item() in set(labels[same].tolist())
    rows = Digits(8).sample(batch, gen(seed), split)  # the same images, read row by row
    assert rows.x.shape == (batch, 8, 8)
    assert torch.equal(rows.x.reshape(batch, 64, 1), x) and torch.equal(rows.y, y)


def test_digits_split_is_fixed_stratified_and_disjoint(sk_digits):
    images, labels = sk_digits
    task = get_task("digits", seq_len=64)
    assert task.layout == "pixels" and task.input_size == 1 and task.output_size == 10
    assert task.n_train + task.n_eval == len(labels) == 1797
    counts = np.bincount(labels, minlength=10)
    x_eval, y_eval = task.split("eval")
    assert np.array_equal(np.bincount(y_eval.numpy(), minlength=10), counts // 5)  # every 5th of each class
    x_train, y_train = task.split("train")
    assert np.array_equal(np.bincount(y_train.numpy(), minlength=10), counts - counts // 5)
    eval_rows = {r.tobytes() for r in (x_eval[..., 0].numpy() * 16).round().astype(np.int64)}
    train_rows = (x_train[..., 0].numpy() * 16).round().astype(np.int64)
    leaked = sum(r.tobytes() in eval_rows for r in train_rows)
    duplicates = len(images) - len({r.astype(np.int64).tobytes() for r in images})
    assert leaked <= duplicates  # only images that occur twice in the data set can be on both sides
    assert torch.equal(Digits(64).split("eval")[0], x_eval)  # the same every time
    seen = task.sample(4000, gen(0), "eval").x.reshape(4000, -1)
    assert {r.tobytes() for r in (seen.numpy() * 16).round().astype(np.int64)} <= eval_rows


def test_digits_chance_config_seeded(sk_digits):
    task = Digits(8, layout="rows")
    _, y_eval = task.split("eval")
    assert task.chance == torch.bincount(y_eval).max().item() / task.n_eval
    assert 0.09 < task.chance < 0.11
    config = task.config()
    assert config["layout"] == "rows" and len(config["data_sha256"]) == 64
    assert rebuilt(task).config() == config
    assert repr(task) == "Digits(seq_len=8, layout='rows')"
    assert_seeded(task)
    with pytest.raises(ValueError, match="layout 'rows' has seq_len 8"):
        Digits(64, layout="rows")
    with pytest.raises(ValueError, match="split"):
        task.split("test")


def test_a_gru_learns_digits_row_by_row(sk_digits):
    task = Digits(8)
    result = learn(task, "gru", 32, 300, lr=1e-2)
    assert result.metric > 0.9  # chance about 0.1


# ---------------------------------------------------------------------------------------- vowels
@pytest.fixture(scope="module")
def vowels29():
    if NO_SKTIME:
        pytest.skip('sktime is not installed (pip install "seqmem[data]")')
    return JapaneseVowels(29)


def lengths(x):
    """Frames of each padded utterance: standardised frames are never all zero, the padding is."""
    return (x.abs().sum(dim=-1) > 0).sum(dim=1)


@needs_sktime
def test_vowels_split_shapes_labels(vowels29):
    task = vowels29
    assert task.input_size == 12 and task.output_size == 9 and task.vocab_size is None
    assert task.n_train == 270 and task.n_eval == 370
    x_train, y_train = task.split("train")
    x_eval, y_eval = task.split("eval")
    assert x_train.shape == (270, 29, 12) and x_train.dtype == torch.float32
    assert torch.equal(torch.bincount(y_train), torch.full((9,), 30))
    eval_counts = torch.bincount(y_eval, minlength=9)
    assert int(eval_counts.min()) == 24 and int(eval_counts.max()) == 88
    assert task.chance == 88 / 370
    for x, longest in ((x_train, 26), (x_eval, 29)):  # 7 to 29 frames in all
        n = lengths(x)
        assert int(n.min()) == 7 and int(n.max()) == longest
        for i in range(len(x)):  # left-padded: zeros first, then every frame
            assert (x[i, : 29 - n[i]] == 0).all() and (x[i, 29 - n[i]:].abs().sum(dim=-1) > 0).all()
    frames = x_train[x_train.abs().sum(dim=-1) > 0]  # (frames, 12): standardised on the training frames
    assert torch.allclose(frames.mean(dim=0), torch.zeros(12), atol=1e-4)
    assert torch.allclose(frames.std(dim=0, unbiased=False), torch.ones(12), atol=1e-4)


@needs_sktime
@pytest.mark.parametrize("seq_len", [1, 5, 20, 40])
def test_vowels_padding_and_truncation(vowels29, seq_len):
    task = JapaneseVowels(seq_len)
    for split in ("train", "eval"):
        full, y_full = vowels29.split(split)
        x, y = task.split(split)
        assert torch.equal(y, y_full) and x.shape == (len(y), seq_len, 12)
        n = lengths(full)
        for i in range(len(y)):
            frames = full[i, 29 - n[i]:]  # (n_i, 12)
            kept = frames[:seq_len]  # the first seq_len frames
            assert torch.equal(x[i, seq_len - len(kept):], kept)
            assert (x[i, : seq_len - len(kept)] == 0).all()


@needs_sktime
def test_vowels_parse_matches_sktimes_loader(vowels29):
    pytest.importorskip("sktime.datasets")
    from sktime.datasets import load_japanese_vowels

    train_s, train_y, eval_s, eval_y, _ = ds._load_vowels()
    for split, series, labels in (("train", train_s, train_y), ("test", eval_s, eval_y)):
        X, y = load_japanese_vowels(split=split, return_X_y=True)  # nested pandas frame
        assert len(X) == len(series) and X.shape[1] == 12
        assert [int(v) - 1 for v in y] == labels.tolist()
        for i in (0, 1, len(series) // 2, len(series) - 1):
            theirs = np.stack([np.asarray(X.iloc[i, c], dtype=np.float64) for c in range(12)], axis=1)
            assert np.array_equal(theirs, series[i])


@needs_sktime
def test_vowels_seeded_config_registry(vowels29):
    task = get_task("vowels", seq_len=29)
    assert isinstance(task, JapaneseVowels)
    assert set(task.config()) == {"data_sha256"} and task.config() == vowels29.config()
    assert repr(task) == "JapaneseVowels(seq_len=29)"
    assert rebuilt(task).config() == task.config()
    assert_seeded(task)
    x, y, mask = task.sample(64, gen(0), "eval")
    assert x.shape == (64, 29, 12) and y.shape == (64,) and mask is None
    eval_x, _ = task.split("eval")
    for r in range(4):  # eval batches come from the held-out utterances
        assert any(torch.equal(x[r], e) for e in eval_x)
    with pytest.raises(TypeError):
        get_task("vowels", seq_len=29, layout="rows")


@needs_sktime
def test_a_gru_learns_vowels(vowels29):
    result = learn(vowels29, "gru", 32, 300, lr=1e-2)
    assert result.metric > 0.9  # chance 0.24
