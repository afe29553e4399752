"""The protocol's plumbing: state types, state_nbytes, build(), and the input checks of DESIGN.md 7
(each bad input raises a clear error before any work), for every model."""

from __future__ import annotations

import pytest
import torch

import seqmem

SMALL = {
    "rnn": ((3, 4), {}),
    "lstm": ((3, 4), {}),
    "gru": ((3, 4), {}),
    "transformer": ((8,), {"n_heads": 2, "n_layers": 1}),
    "mamba": ((3,), {"d_state": 4, "expand": 2}),
    "s4d": ((3,), {"d_state": 4, "expand": 2}),
    "hawk": ((4,), {"n_layers": 2}),
    "griffin": ((8,), {"n_heads": 2, "window": 3}),
}


def make(name: str) -> torch.nn.Module:
    args, kw = SMALL[name]
    torch.manual_seed(0)
    return seqmem.build(name, *args, **kw)


@pytest.fixture(params=list(SMALL))
def model(request):
    return make(request.param)


def test_model_names_match_the_design():
    """DESIGN.md's six come first, in its order; the families of issue 12 follow."""
    assert seqmem.model_names()[:6] == ["rnn", "lstm", "gru", "transformer", "mamba", "s4d"]
    assert set(SMALL) <= set(seqmem.model_names())


def test_every_model_satisfies_the_protocol(model):
    assert isinstance(model, seqmem.SequenceModel)
    assert isinstance(model, torch.nn.Module)
    assert "torch" in model.backends and model.backend == "torch"
    x = torch.randn(2, 5, model.input_size)
    y, state = model(x)
    assert y.shape == (2, 5, model.output_size)
    assert isinstance(state, model.state_type)
    assert state.batch_size == 2
    y_t, state = model.step(x[:, 0], state)
    assert y_t.shape == (2, model.output_size)


def test_not_a_sequence_model():
    assert not isinstance(torch.nn.Linear(2, 3), seqmem.SequenceModel)


def test_build_rejects_unknown_names_and_wrong_s4d():
    with pytest.raises(ValueError, match=r"unknown model 'lstn'; expected one of \['rnn'"):
        seqmem.build("lstn", 3, 4)
    with pytest.raises(TypeError, match="model must be a string"):
        seqmem.build(3)
    with pytest.raises(ValueError, match="selective must be False"):
        seqmem.build("s4d", 4, selective=True)
    assert seqmem.build("s4d", 4).selective is False


def test_state_nbytes_and_state_methods():
    lstm = seqmem.LSTM(3, 16)
    state = lstm.initial_state(2)
    assert seqmem.state_nbytes(state) == 2 * 2 * 16 * 4
    assert seqmem.state_nbytes(state.to(torch.float64)) == 2 * 2 * 16 * 8
    x = torch.randn(2, 3, 3)
    _, state = lstm(x)
    assert state.h.requires_grad and not state.detach().h.requires_grad
    assert isinstance(state.detach(), seqmem.LSTMState)
    doubled = seqmem.map_state(state, lambda t: 2 * t)
    torch.testing.assert_close(doubled.c, 2 * state.c)
    with pytest.raises(TypeError, match="got str"):
        seqmem.state_nbytes("h")


# ---------------------------------------------------------------- DESIGN.md section 7: bad input
def test_wrong_rank(model):
    with pytest.raises(ValueError, match=rf"x must have shape \(batch, seq_len, {model.input_size}\), got \(5, {model.input_size}\).*step\(\)"):
        model(torch.randn(5, model.input_size))
    with pytest.raises(ValueError, match=rf"x_t must have shape \(batch, {model.input_size}\), got \(2, 1, {model.input_size}\)"):
        model.step(torch.randn(2, 1, model.input_size), None)


def test_wrong_feature_size(model):
    with pytest.raises(ValueError, match=rf"input_size={model.input_size}\), got \(2, 5, {model.input_size + 1}\)"):
        model(torch.randn(2, 5, model.input_size + 1))


def test_empty_sequence_and_empty_batch(model):
    with pytest.raises(ValueError, match="seq_len 0"):
        model(torch.randn(2, 0, model.input_size))
    with pytest.raises(ValueError, match="batch 0"):
        model(torch.randn(0, 3, model.input_size))


def test_not_a_tensor_or_not_float(model):
    with pytest.raises(TypeError, match="must be a torch.Tensor.*got list"):
        model([[0.0] * model.input_size])
    with pytest.raises(TypeError, match="floating-point tensor, got dtype torch.int64"):
        model(torch.ones(2, 3, model.input_size, dtype=torch.long))


def test_dtype_mismatch_with_parameters(model):
    with pytest.raises(TypeError, match="dtype torch.float64 but the parameters are torch.float32"):
        model(torch.randn(2, 3, model.input_size, dtype=torch.float64))


def test_device_mismatch_with_parameters(model):
    x = torch.randn(2, 3, model.input_size, device="meta")
    with pytest.raises(ValueError, match="on device meta but the parameters are on cpu"):
        model(x)


def test_batch_mismatch_between_x_and_state(model):
    _, state = model(torch.randn(3, 2, model.input_size))
    with pytest.raises(ValueError, match="batch mismatch: the input has batch 2 but the state has batch 3"):
        model(torch.randn(2, 2, model.input_size), state)
    with pytest.raises(ValueError, match="batch mismatch: the input has batch 2 but the state has batch 3"):
        model.step(torch.randn(2, model.input_size), state)


def test_state_of_the_wrong_shape(model):
    state = model.initial_state(2)
    bad = type(state)(*(torch.cat([t, t], dim=-1) for t in state))
    with pytest.raises(ValueError, match=r"state\.\w+ must have shape"):
        model(torch.randn(2, 2, model.input_size), bad)


def test_state_of_the_wrong_type_or_dtype(model):
    x = torch.randn(2, 2, model.input_size)
    with pytest.raises(TypeError, match=rf"state must be a {model.state_type.__name__}"):
        model(x, (torch.zeros(2, 4),))
    state = model.initial_state(2, dtype=torch.float64)
    with pytest.raises(TypeError, match="has dtype torch.float64 but the input is torch.float32"):
        model(x, state)


def test_unknown_backend(model):
    with pytest.raises(ValueError, match=rf"{type(model).__name__} does not support backend 'cuda'; supported backends: \['torch'"):
        model.backend = "cuda"
    assert model.backend == "torch"


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match="must be a positive int"):
        seqmem.LSTM(bad, 4)
    with pytest.raises(ValueError, match="must be a positive int"):
        seqmem.RNN(3, 4).initial_state(bad)


def test_unknown_nonlinearity():
    with pytest.raises(ValueError, match=r"unknown nonlinearity 'sigmoid'; expected one of \['tanh', 'relu'\]"):
        seqmem.RNN(3, 4, nonlinearity="sigmoid")
