"""SequenceNetwork's input checks: token ids in range, tensors only, before any work is done."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import seqmem
from seqmem.network import SequenceNetwork

MODELS = seqmem.model_names()


def _network(model: str, vocab_size: int) -> SequenceNetwork:
    torch.manual_seed(0)
    return SequenceNetwork(model, 8, vocab_size=vocab_size, output_size=2)


def _no_work(net: SequenceNetwork) -> list[str]:
    """Hooks that record every call of the embedding: an input refused before any work leaves it empty."""
    calls: list[str] = []
    net.embed.register_forward_pre_hook(lambda *_: calls.append("embed"))
    return calls


@settings(max_examples=30, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    vocab_size=st.integers(1, 50),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 6)),
    data=st.data(),
    dtype=st.sampled_from([torch.int64, torch.int32, torch.int16]),
)
@example(model="lstm", vocab_size=5, shape=(1, 3), data=None, dtype=torch.int64)
def test_token_ids_outside_the_vocabulary_are_refused(model, vocab_size, shape, data, dtype):
    net = _network(model, vocab_size)
    calls = _no_work(net)
    x = torch.randint(0, vocab_size, shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    if data is None:
        index, bad = (0, 2), vocab_size  # the first id past the end
    else:
        index = (data.draw(st.integers(0, shape[0] - 1)), data.draw(st.integers(0, shape[1] - 1)))
        bad = data.draw(st.one_of(st.integers(vocab_size, 20_000), st.integers(-20_000, -1)), label="bad id")
    x[index] = bad
    with pytest.raises(ValueError, match=rf"token ids must be in \[0, {vocab_size}\).*got {bad} at index {re.escape(str(index))}"):
        net(x)
    with pytest.raises(ValueError, match=rf"got {bad} at index \({index[0]},\)"):
        net.step(x[:, index[1]])
    assert calls == []
    x[index] = vocab_size - 1  # the last id is fine
    assert net(x)[0].shape == (*shape, 2)


def test_uint8_ids_past_the_vocabulary():
    net = _network("gru", 4)
    with pytest.raises(ValueError, match=r"got 200 at index \(0, 1\); 1 of 2 ids are outside"):
        net(torch.tensor([[3, 200]], dtype=torch.uint8))


@pytest.mark.parametrize("tokens", [True, False])
@pytest.mark.parametrize(
    "make, hint",
    [
        (lambda shape, dtype: np.zeros(shape, dtype=dtype), "numpy.ndarray; convert it with torch.from_numpy"),
        (lambda shape, dtype: np.zeros(shape, dtype=dtype).tolist(), "got list"),
    ],
)
def test_inputs_that_are_not_tensors_are_refused(tokens, make, hint):
    torch.manual_seed(0)
    if tokens:
        net = SequenceNetwork("mamba", 8, vocab_size=4, output_size=2)
        shape, step_shape, dtype, want = (2, 5), (2,), np.int64, "an integer torch.Tensor"
    else:
        net = SequenceNetwork("mamba", 8, input_size=3, output_size=2)
        shape, step_shape, dtype, want = (2, 5, 3), (2, 3), np.float32, "a float torch.Tensor"
    calls = _no_work(net)
    with pytest.raises(TypeError, match=f"{want} of shape .*{hint}"):
        net(make(shape, dtype))
    with pytest.raises(TypeError, match=f"{want} of shape .*{hint}"):
        net.step(make(step_shape, dtype))
    assert calls == []
