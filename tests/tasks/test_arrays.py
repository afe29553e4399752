"""Users' data (`from_arrays`, `get_task("data", path=...)`): the kinds, padding, the split, every bad
file's message, determinism, exact evaluation, and a small LSTM that learns from an `.npz` file."""

from __future__ import annotations

import copy
import doctest
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import seqmem.tasks.arrays as arrays_module
from seqmem.compare import compare, read_results
from seqmem.network import SequenceNetwork, size_for_budget
from seqmem.tasks import ArrayTask, Batch, from_arrays, get_task
from seqmem.tasks.arrays import KINDS
from seqmem.train import backward_loss, evaluate

from .helpers import assert_seeded, gen, learn


# ---------------------------------------------------------------------------------------- data
def make(kind: str, N: int = 40, T: int = 6, *, padded: bool = False, tokens: bool = False, K: int = 2,
         seed: int = 0) -> dict[str, np.ndarray]:
    """A data set of one kind: `x`, `y` and (if `padded`) `lengths`, padding left as zeros."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 7, size=(N, T)) if tokens else rng.normal(size=(N, T, 3))
    if kind == "sequence classification":
        y = np.arange(N) % 3  # three classes, every one present
    elif kind == "per-step labelling":
        y = rng.integers(0, 4, size=(N, T))
        y[:, 0] = np.arange(N) % 4
    elif kind == "sequence regression":
        y = rng.normal(size=(N, K)) if K > 1 else rng.normal(size=N)
    else:
        y = rng.normal(size=(N, T, K))
    out = {"x": x, "y": y}
    if padded:
        lengths = rng.integers(1, T + 1, size=N)
        lengths[0] = max(T - 1, 1)  # some padding, where T allows
        out["lengths"] = lengths
        pad = np.arange(T) >= lengths[:, None]  # (N, T)
        out["x"] = np.where(pad[..., None] if x.ndim == 3 else pad, 0, x)
    return out


def garbled(arrays: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """The same data with garbage (huge, negative, NaN, inf) at every padded step of x and per-step y."""
    rng = np.random.default_rng(seed)
    out = dict(arrays)
    x, y, lengths = arrays["x"], arrays["y"], arrays["lengths"]
    N, T = x.shape[:2]
    pad = np.arange(T) >= lengths[:, None]  # (N, T)
    if x.dtype.kind in "iu":
        junk = rng.integers(-50, 10**6, size=x.shape)
    else:
        junk = rng.choice([np.nan, np.inf, -np.inf, 1e30, -7.0], size=x.shape)
    out["x"] = np.where(pad if x.ndim == 2 else pad[..., None], junk, x)
    if y.ndim >= 2 and y.shape[1] == T and (y.ndim == 3 or y.dtype.kind in "iu"):  # per-step targets
        fill = rng.integers(-100, 100, size=y.shape) if y.dtype.kind in "iu" else np.full(y.shape, np.nan)
        out["y"] = np.where(pad if y.ndim == 2 else pad[..., None], fill, y)
    return out


def save(tmp_path, name: str = "data.npz", **arrays) -> str:
    path = str(tmp_path / name)
    np.savez(path, **arrays)
    return path


def kinds_and_inputs():
    return [(kind, tokens) for kind in KINDS for tokens in (False, True)]


# ---------------------------------------------------------------------------------------- the kinds
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize(("kind", "tokens"), kinds_and_inputs())
def test_each_kind_reads_its_batch_contract(kind, tokens, padded):
    task = from_arrays(**make(kind, tokens=tokens, padded=padded))
    per_step, classes = kind in KINDS[1::2], kind in KINDS[:2]
    assert task.kind == kind and task.name == "data"
    assert task.target == ("all" if per_step else "last")
    assert (task.loss_kind, task.metric_name) == (("cross_entropy", "accuracy") if classes else ("mse", "mse"))
    assert task.input_kind == ("tokens" if tokens else "real")
    assert (task.vocab_size, task.input_size) == ((7, None) if tokens else (None, 3))
    assert task.output_size == {KINDS[0]: 3, KINDS[1]: 4}.get(kind, 2)
    assert (task.n_train, task.n_eval) == (32, 8)
    B, T = 5, task.seq_len
    for split in ("train", "eval"):
        x, y, mask = batch = task.sample(B, gen(0), split)  # still unpacks as three
        assert x.shape == ((B, T) if tokens else (B, T, 3))
        assert x.dtype == (torch.int64 if tokens else torch.float32)
        assert y.shape == {KINDS[0]: (B,), KINDS[1]: (B, T), KINDS[2]: (B, 2), KINDS[3]: (B, T, 2)}[kind]
        assert y.dtype == (torch.int64 if classes else torch.float32)
        assert (batch.lengths is not None) == padded
        if per_step:
            want = torch.ones(B, T, dtype=torch.bool) if not padded else torch.arange(T) < batch.lengths[:, None]
            assert torch.equal(mask, want)
        else:
            assert mask is None
    assert_seeded(task)
    text = task.describe()
    assert text.startswith(f"{kind}, ") and "32 train / 8 validation" in text and f"seq_len {T}" in text
    assert ("vocab 7" if tokens else "3 features") in text and ("lengths 1-6" in text) == padded
    assert ("accuracy, chance" if classes else "mse, chance") in text


def test_one_regression_target_and_kind_override():
    task = from_arrays(**make("sequence regression", K=1))
    assert task.output_size == 1 and task.sample(4, gen(0)).y.shape == (4, 1)
    x = np.random.default_rng(0).normal(size=(20, 5, 2))
    per_step = from_arrays(x, x[..., 0], kind="per-step regression")  # (N, T) float read per step
    assert per_step.kind == "per-step regression" and per_step.sample(3, gen(0)).y.shape == (3, 5, 1)
    labels = np.arange(20) % 2
    with pytest.warns(UserWarning, match=r"holds only the integers \{0, 1\}.*kind='sequence classification'"):
        floats = from_arrays(x, labels.astype(np.float64))
    assert floats.kind == "sequence regression"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forced = from_arrays(x, labels.astype(np.float64), kind="sequence classification")
        from_arrays(x, labels.astype(np.float64), kind="sequence regression")  # silences the warning
    assert forced.kind == "sequence classification" and forced.config() == from_arrays(x, labels).config()


def test_chance_is_the_best_constant_guess_on_the_validation_split():
    for kind in KINDS:
        task = from_arrays(**make(kind, padded=True))
        x, y, lengths = task.split("eval")
        steps = torch.arange(task.seq_len) < lengths[:, None]
        targets = y[steps] if kind in KINDS[1::2] else y
        if kind in KINDS[:2]:
            want = torch.bincount(targets).max().item() / len(targets)
        else:
            want = targets.double().var(dim=0, unbiased=False).mean().item()
        assert math.isclose(task.chance, want, rel_tol=1e-6)
        assert (0 < task.chance < 1) if task.higher_is_better else task.chance > 0


def test_doctests_run():
    assert doctest.testmod(arrays_module).failed == 0


# ---------------------------------------------------------------------------------------- padding
@given(
    kind=st.sampled_from(KINDS), tokens=st.booleans(), seed=st.integers(0, 2**31 - 1),
    N=st.integers(8, 24), T=st.integers(2, 7),
)
@example(kind=KINDS[0], tokens=False, seed=0, N=8, T=2)
def test_garbage_in_the_padding_changes_nothing(kind, tokens, seed, N, T):
    clean = make(kind, N=N, T=T, tokens=tokens, padded=True, seed=seed)
    a, b = from_arrays(**clean), from_arrays(**garbled(clean, seed))
    assert a.config() == b.config()  # the same data: the same run id
    for split in ("train", "eval"):
        for u, v in zip(a.split(split), b.split(split), strict=True):
            assert (u is None and v is None) or torch.equal(u, v)
    # the loss and the metric read no padded output and no padded target
    batch = a.sample(6, gen(seed))
    logits = torch.randn(6, T, a.output_size, generator=gen(seed + 1))
    pad = torch.arange(T) >= batch.lengths[:, None]  # (6, T)
    noisy = logits.masked_fill(pad[..., None], float("nan"))
    y = batch.y
    if a.target == "all":
        y = y.masked_fill(pad if y.dim() == 2 else pad[..., None], -3 if y.dtype == torch.int64 else float("inf"))
    noisy_batch = batch._replace(y=y)
    assert torch.equal(a.loss(logits, batch), a.loss(noisy, noisy_batch))
    assert a.score(logits, batch) == a.score(noisy, noisy_batch)


@pytest.mark.parametrize("kind", KINDS)
def test_a_network_ignores_the_padding_of_its_inputs(kind):
    task = from_arrays(**make(kind, T=7, padded=True))
    batch = task.sample(16, gen(3))
    pad = torch.arange(7) >= batch.lengths[:, None]
    junk = batch._replace(x=batch.x.masked_fill(pad[..., None], 1e3))
    for model in ("lstm", "transformer", "mamba"):
        torch.manual_seed(0)
        net = SequenceNetwork.for_task(model, task, 8)
        losses = [task.loss(net(b.x)[0], b) for b in (batch, junk)]
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tbptt", [1, 2, 3, 7])
def test_truncated_bptt_scores_every_sequence_once(kind, tbptt):
    """Chunks of truncated BPTT add up to the loss of the whole batch, padding and all."""
    task = from_arrays(**make(kind, T=7, padded=True))
    batch = task.sample(12, gen(4))
    torch.manual_seed(0)
    net = SequenceNetwork.for_task("gru", task, 8)
    full = task.loss(net(batch.x)[0], batch).item()
    assert math.isclose(backward_loss(net, task, batch, tbptt), full, rel_tol=1e-5)


def test_sequence_labels_are_read_at_the_last_valid_step():
    x = np.zeros((6, 4, 1), dtype=np.float32)
    task = from_arrays(x, np.array([0, 1, 0, 1, 0, 1]), lengths=np.array([1, 2, 3, 4, 2, 3]),
                       x_val=x[:2], y_val=np.array([0, 1]), lengths_val=np.array([4, 1]))
    batch = task.sample(6, gen(0))
    logits = torch.zeros(6, 4, 2)
    last = batch.lengths - 1
    logits[torch.arange(6), last, batch.y] = 5.0  # right only at the last valid step
    assert task.score(logits, batch).metric_sum == 6
    logits[:, -1] = torch.tensor([9.0, -9.0])  # class 0 at the last position: only sequences of length 4 see it
    want = int((last < 3).sum() + ((last == 3) & (batch.y == 0)).sum())
    assert task.score(logits, batch).metric_sum == want < 6


# ---------------------------------------------------------------------------------------- Batch
def test_batch_keeps_lengths_through_copies_and_unpacks_as_before():
    x, y, lengths = torch.zeros(2, 3), torch.zeros(2), torch.tensor([1, 3])
    batch = Batch(x, y, None, lengths)
    assert len(batch) == 3 and tuple(batch) == (x, y, None) and Batch(x, y).lengths is None
    for other in (copy.copy(batch), copy.deepcopy(batch), pickle.loads(pickle.dumps(batch)),
                  batch._replace(y=y + 1), Batch._make([x, y, None, lengths]), batch.to("cpu")):
        assert type(other) is Batch and torch.equal(other.lengths, lengths)
    assert "lengths=tensor([1, 3])" in repr(batch) and "lengths" not in repr(Batch(x, y))
    with pytest.raises(AttributeError, match="immutable"):
        batch.lengths = None


# ---------------------------------------------------------------------------------------- split
@given(
    N=st.integers(4, 120), n_classes=st.integers(2, 5), fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**64 - 1), labels=st.integers(0, 2**32 - 1),
)
@example(N=4, n_classes=2, fraction=0.5, seed=0, labels=0)
def test_split_is_stratified_seeded_disjoint_and_covering(N, n_classes, fraction, seed, labels):
    y = np.random.default_rng(labels).integers(0, n_classes, size=N)
    y[:2] = [0, 1]
    x = np.arange(N, dtype=np.float32)[:, None, None]  # each sequence names its row
    n_val = math.floor(N * fraction + 0.5)
    try:
        task = from_arrays(x, y, val_fraction=fraction, seed=seed)
    except ValueError as e:  # an empty split, or a single class left to train on: said so
        assert ("empty split" in str(e) and not 1 <= n_val <= N - 1) or "training split" in str(e)
        return
    rows = {s: task.split(s)[0][:, 0, 0].long() for s in ("train", "eval")}
    assert len(set(rows["train"].tolist()) & set(rows["eval"].tolist())) == 0
    assert sorted(rows["train"].tolist() + rows["eval"].tolist()) == list(range(N))
    assert task.n_eval == n_val
    for c in range(n_classes):  # each class keeps its share, to within one sequence
        share = int((y == c).sum()) * n_val / N
        assert abs(int((y[rows["eval"].numpy()] == c).sum()) - share) < 1
    again = from_arrays(x, y, val_fraction=fraction, seed=seed)
    assert torch.equal(again.split("eval")[0], task.split("eval")[0])


def test_split_depends_on_the_seed_and_not_on_numpy_or_torch():
    # SplitMix64 seeded with 0 starts 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F
    # (Vigna's reference splitmix64.c); the split orders rows by these numbers
    assert arrays_module._splitmix64(3, 0).tolist() == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    x = np.arange(200, dtype=np.float32)[:, None, None]
    y = np.arange(200) % 2
    a, b = from_arrays(x, y, seed=1), from_arrays(x, y, seed=2)
    assert not torch.equal(a.split("eval")[0], b.split("eval")[0]) and a.config() != b.config()
    with torch.random.fork_rng(devices=[]):  # the global generator plays no part
        torch.manual_seed(123)
        assert torch.equal(from_arrays(x, y, seed=1).split("eval")[0], a.split("eval")[0])


def test_given_validation_set_is_used_as_it_is():
    train, val = make("per-step labelling", padded=True), make("per-step labelling", N=9, padded=True, seed=1)
    task = from_arrays(**train, x_val=val["x"], y_val=val["y"], lengths_val=val["lengths"])
    assert (task.n_train, task.n_eval) == (40, 9)
    x, y, lengths = task.split("eval")
    assert torch.equal(x, torch.from_numpy(val["x"]).float()) and torch.equal(lengths, torch.from_numpy(val["lengths"]))


# ---------------------------------------------------------------------------------------- files
def test_a_file_and_the_same_arrays_give_the_same_task(tmp_path):
    arrays = make("sequence classification", padded=True)
    path = save(tmp_path, **arrays)
    task = get_task("data", seq_len=6, path=path)
    assert isinstance(task, ArrayTask) and task.path == path
    assert task.config() == from_arrays(**arrays).config()
    assert set(task.config()) == {"kind", "data_sha256", "val_fraction", "seed"}
    assert repr(task).startswith(f"ArrayTask(seq_len=6, path={path!r}, kind='sequence classification'")
    assert ArrayTask(None, path).seq_len == 6  # seq_len=None: the data's T
    moved = save(tmp_path, "elsewhere.npz", **arrays)  # the same data, written again elsewhere
    assert get_task("data", seq_len=6, path=moved).config() == task.config()
    changed = dict(arrays, y=arrays["y"].copy())
    changed["y"][0] = (changed["y"][0] + 1) % 3
    assert get_task("data", 6, path=save(tmp_path, "changed.npz", **changed)).config() != task.config()
    assert get_task("data", 6, path=path, seed=1).config() != task.config()
    for a, b in zip(task.sample(8, gen(5)), from_arrays(**arrays).sample(8, gen(5)), strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def test_file_options_vocab_classes_and_kind(tmp_path):
    arrays = make("sequence classification", tokens=True)
    path = save(tmp_path, **arrays, vocab_size=np.array(12), n_classes=np.array(5), kind=np.array(KINDS[0]))
    task = get_task("data", seq_len=6, path=path)
    assert (task.vocab_size, task.output_size) == (12, 5)
    with pytest.raises(ValueError, match=r"kind='sequence regression' was asked for.*'sequence classification'"):
        get_task("data", seq_len=6, path=path, kind="sequence regression")


# ---------------------------------------------------------------------------------------- bad files
def bad(tmp_path, match: str, kwargs: dict | None = None, **arrays) -> None:
    """Writing `arrays` to an .npz and reading it raises a ValueError matching `match`."""
    path = save(tmp_path, **arrays)
    with pytest.raises(ValueError, match=match):
        get_task("data", seq_len=arrays["x"].shape[1] if np.ndim(arrays.get("x")) > 1 else 5, path=path,
                 **(kwargs or {}))


X = np.zeros((10, 5, 2), dtype=np.float32)
Y = np.arange(10) % 2
T_OK = np.full(10, 5)


@pytest.mark.parametrize(("arrays", "match"), [
    ({"y": Y}, r"no 'x' key .*it holds 'y'"),
    ({"x": X}, r"no 'y' key .*it holds 'x'"),
    ({"x": X, "y": Y[:9]}, r"y has 9 rows but x has 10 sequences \(x: \(10, 5, 2\), y: \(9,\)\)"),
    ({"x": X, "y": Y, "lengths": T_OK[:8]}, r"lengths must have shape \(N,\) = \(10,\) .* got \(8,\)"),
    ({"x": np.where(np.arange(10)[:, None, None] == 3, np.nan, X), "y": Y}, r"x must be finite .* x\[3, 0, 0\] = .*nan.*\(10, 5, 2\)"),
    ({"x": X.astype(np.float64) + 1e39, "y": np.linspace(0, 1, 10)}, r"x must be finite .*beyond float32's range"),
    ({"x": X, "y": np.where(np.arange(10) == 4, np.inf, np.linspace(0, 1, 10))}, r"y must be finite .* y\[4\] = .*inf"),
    ({"x": X, "y": np.where(np.arange(10) == 2, -1, Y)}, r"y holds class labels, which must be >= 0, got y\[2\] = -1 \(shape \(10,\)\)"),
    ({"x": X, "y": Y, "n_classes": np.array(2), "x_val": X[:3], "y_val": np.array([0, 1, 2])},
     r"labels must be in \[0, n_classes\) = \[0, 2\), got y_val\[2\] = 2 \(shape \(3,\)\)"),
    ({"x": X, "y": np.zeros(10, dtype=np.int64)}, r"at least two classes, but y \(10,\) holds only class 0"),
    ({"x": X, "y": np.full((10, 5), 3)}, r"at least two classes, but y \(10, 5\) holds only class 3"),
    ({"x": X, "y": Y, "lengths": np.where(np.arange(10) == 6, 0, T_OK)}, r"lengths must be in \[1, T\] = \[1, 5\].*lengths\[6\] = 0 \(shape \(10,\)\)"),
    ({"x": X, "y": Y, "lengths": np.where(np.arange(10) == 1, 6, T_OK)}, r"lengths\[1\] = 6"),
    ({"x": X, "y": Y, "lengths": T_OK.astype(np.float64)}, r"lengths must hold integers, got dtype float64 of shape \(10,\)"),
    ({"x": X[:2], "y": Y[:2]}, r"empty split: val_fraction=0.2 of 2 sequences \(x: \(2, 5, 2\)\) leaves no validation"),
    ({"x": X[:0], "y": Y[:0]}, r"x of shape \(0, 5, 2\) is empty"),
    ({"x": X, "y": Y, "x_val": X[:0], "y_val": Y[:0]}, r"x_val of shape \(0, 5, 2\) is empty"),
    ({"x": X[:, :, 0], "y": Y}, r"a 2-d x must hold integer token ids \(N, T\), got dtype float32 of shape \(10, 5\); "
                                r"pass x\[\.\.\., None\] of shape \(10, 5, 1\)"),
    ({"x": X[..., None], "y": Y}, r"x must be \(N, T, F\) real features or \(N, T\) integer tokens, got shape \(10, 5, 2, 1\)"),
    ({"x": X, "y": np.zeros((10, 5, 2), dtype=np.int64)}, r"y of dtype int64 and shape \(10, 5, 2\) fits no kind"),
    ({"x": X, "y": np.zeros((10, 4), dtype=np.int64)}, r"y of dtype int64 and shape \(10, 4\) fits no kind .* \(N, T\) = \(10, 5\)"),
    ({"x": np.where(np.arange(10)[:, None] == 5, -2, np.ones((10, 5), dtype=np.int64)), "y": Y},
     r"x holds token ids, which must be >= 0, got x\[5, 0\] = -2 \(shape \(10, 5\)\)"),
    ({"x": np.full((10, 5), 9), "y": Y, "vocab_size": np.array(4)}, r"token ids must be in \[0, vocab_size\) = \[0, 4\), got x\[0, 0\] = 9"),
    ({"x": X, "y": Y, "lenghts": T_OK}, r"unknown key 'lenghts' \('lenghts': did you mean 'lengths'\?\)"),
    ({"x": X, "y": np.array(["a", "b"] * 5)}, r"y must hold numbers, got dtype <U1 of shape \(10,\) \(map string labels"),
    ({"x": X, "y": Y, "x_val": X[:3]}, r"x_val \(3, 5, 2\) is given without y_val"),
    ({"x": X, "y": Y, "lengths": T_OK, "x_val": X[:3], "y_val": Y[:3]}, r"lengths_val is missing for x_val \(3, 5, 2\)"),
    ({"x": X, "y": Y, "x_val": X[:3, :4], "y_val": Y[:3]}, r"x_val must match x \(10, 5, 2\).*got \(3, 4, 2\)"),
    ({"x": X, "y": Y, "x_val": X[:3], "y_val": np.array([0.0, 1.5, 1.0])}, r"y_val holds class labels, which must be integers, got y_val\[1\] = .*1\.5"),
    ({"x": X, "y": Y, "kind": np.array("sequence labelling")}, r"unknown kind 'sequence labelling'"),
    ({"x": X, "y": Y, "kind": np.array(1)}, r"kind must be one string"),
    ({"x": X, "y": Y, "vocab_size": np.array(4)}, r"vocab_size is for token inputs"),
    ({"x": X, "y": Y, "n_classes": np.array([2, 3])}, r"n_classes must be one integer, got dtype int64 of shape \(2,\)"),
])
def test_bad_files_are_refused_with_the_key_and_the_shape(tmp_path, arrays, match):
    bad(tmp_path, match, **arrays)


def test_labels_that_are_not_integers(tmp_path):
    bad(tmp_path, r"y holds class labels, which must be integers, got y\[3\] = .*0\.5 \(dtype float64, shape \(10,\)\)",
        {"kind": "sequence classification"}, x=X, y=np.where(np.arange(10) == 3, 0.5, Y))


def test_a_single_class_left_to_train_on(tmp_path):
    bad(tmp_path, r"training split \(1 sequences\) holds only class 1", {"val_fraction": 0.5},
        x=X[:2], y=np.array([0, 1]))


def test_an_object_array_is_refused_unread(tmp_path):
    ragged = np.empty(10, dtype=object)
    ragged[:] = [np.zeros((n, 2)) for n in range(1, 11)]
    path = save(tmp_path, x=ragged, y=Y)
    with pytest.raises(ValueError, match=r"x is an object array of shape \(10,\), which is not loaded \(allow_pickle stays off"):
        get_task("data", seq_len=5, path=path)
    with pytest.raises(ValueError, match=r"from_arrays: x is an object array of shape \(10,\)"):
        from_arrays(ragged, Y)
    with pytest.raises(ValueError, match=r"x is not a rectangular array"):
        from_arrays([[1, 2], [3]], Y[:2])


def test_files_that_are_no_npz_archive(tmp_path):
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(ValueError, match=r"single array of shape \(10, 5, 2\) \(an \.npy file\)"):
        get_task("data", seq_len=5, path=tmp_path / "x.npy")
    (tmp_path / "notes.npz").write_text("not a zip")
    with pytest.raises(ValueError, match=r"not an \.npz archive written by np\.savez"):
        get_task("data", seq_len=5, path=tmp_path / "notes.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_task("data", seq_len=5, path=tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="not a regular file"):
        get_task("data", seq_len=5, path=tmp_path)
    with pytest.raises(ValueError, match=r"pass path='data\.npz'"):
        get_task("data", seq_len=5)
    with pytest.raises(TypeError, match="path must be a path"):
        get_task("data", seq_len=5, path=3)


def test_seq_len_and_options_are_checked(tmp_path):
    path = save(tmp_path, x=X, y=Y)
    with pytest.raises(ValueError, match=r"seq_len must be the data's T = 5 \(x: \(10, 5, 2\)\), got 6"):
        get_task("data", seq_len=6, path=path)
    for options, match in (({"val_fraction": 1.0}, "val_fraction"), ({"seed": -1}, "seed"),
                           ({"kind": "clustering"}, "unknown kind")):
        with pytest.raises(ValueError, match=match):
            get_task("data", seq_len=5, path=path, **options)
        with pytest.raises(ValueError, match=match):
            from_arrays(X, Y, **options)
    with pytest.raises(ValueError, match=r"from_arrays: y missing"):
        from_arrays(X, None)
    with pytest.raises(ValueError, match=r"a sequence classification needs y of shape \(N,\), got \(10, 5\)"):
        from_arrays(X, np.zeros((10, 5)), kind="sequence classification")


# ---------------------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_scores_the_whole_validation_split_once(kind):
    task = from_arrays(**make(kind, N=45, padded=True))  # 9 held out: batches of 4, 4, 1
    torch.manual_seed(0)
    net = SequenceNetwork.for_task("gru", task, 8)
    x, y, lengths = task.split("eval")
    whole = task.score(net(x)[0].detach(), Batch(x, y, None if task.target == "last" else
                                                 torch.arange(task.seq_len) < lengths[:, None], lengths))
    want = len(y) if task.target == "last" else int(lengths.sum())
    for n_batches, seed in ((1, 0), (5, 3)):  # neither matters for a finite validation set
        result = evaluate(net, task, n_batches=n_batches, seed=seed, batch_size=4)
        assert result.count == whole.count == want
        assert math.isclose(result.metric, whole.metric_sum / want, rel_tol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        task.eval_set(0)


def test_synthetic_tasks_still_sample_their_evaluation():
    task = get_task("xor-echo", seq_len=5)
    assert task.eval_set(8) is None
    torch.manual_seed(0)
    net = SequenceNetwork.for_task("gru", task, 8)
    assert evaluate(net, task, n_batches=3, batch_size=7).count == 21


# ---------------------------------------------------------------------------------------- learning
def test_a_small_lstm_learns_from_an_npz_file(tmp_path):
    """The label is the sign of the first step; sequences of 3 to 12 steps, NaN in the padding."""
    rng = np.random.default_rng(0)
    N, T = 600, 12
    x = rng.normal(size=(N, T, 2)).astype(np.float32)
    lengths = rng.integers(3, T + 1, size=N)
    y = (x[:, 0, 0] > 0).astype(np.int64)
    x[np.arange(T) >= lengths[:, None]] = np.nan
    task = get_task("data", seq_len=T, path=save(tmp_path, x=x, y=y, lengths=lengths))
    result = learn(task, "lstm", 16, steps=200, lr=1e-2)
    assert task.chance < 0.6 and result.metric > 0.9


def test_a_small_lstm_learns_per_step_regression(tmp_path):
    """Targets: the running sum of feature 0, scaled; MSE far below the targets' variance."""
    rng = np.random.default_rng(1)
    N, T = 400, 10
    x = rng.normal(size=(N, T, 2)).astype(np.float32)
    lengths = rng.integers(2, T + 1, size=N)
    y = np.cumsum(x[..., :1], axis=1) / np.sqrt(np.arange(1, T + 1))[:, None]
    task = from_arrays(x, y, lengths=lengths)
    result = learn(task, "lstm", 16, steps=150, lr=1e-2)
    assert task.kind == "per-step regression" and result.metric < 0.1 * task.chance


# ---------------------------------------------------------------------------------------- compare
@pytest.mark.parametrize(("kind", "padded"), [(KINDS[0], True), (KINDS[1], False), (KINDS[2], True),
                                              (KINDS[3], False)])
def test_compare_runs_on_a_file_and_resumes(tmp_path, kind, padded):
    path = save(tmp_path, **make(kind, padded=padded))
    opts = {"steps": 3, "params": 3000, "batch_size": 8, "eval_batches": 1, "plot": False,
            "task_kwargs": {"path": path}, "out": tmp_path / "sweep"}
    first = compare("data", ["gru", "transformer"], [6], [0], **opts)
    assert [r["status"] for r in first] == ["ok", "ok"]
    assert all(r["task_config"]["kind"] == kind and r["chance"] > 0 for r in first)
    again = compare("data", ["gru", "transformer"], [6], [0], **opts)
    assert again == first and len(read_results(tmp_path / "sweep")) == 2
    sizing = size_for_budget("gru", 3000, get_task("data", seq_len=6, path=path))
    assert first[0]["width"] == sizing.width
