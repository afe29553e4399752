"""RNN, LSTM and GRU on the torch backend: torch.nn parity both ways, the two forms agree, the
variants that torch.nn lacks (peepholes, reset_after=False) behave as their equations say."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch import nn

import seqmem
from seqmem.testing import Tolerance

F64 = Tolerance().kwargs(torch.float64)
FAMILIES = {"rnn": (seqmem.RNN, nn.RNN, nn.RNNCell), "lstm": (seqmem.LSTM, nn.LSTM, nn.LSTMCell),
            "gru": (seqmem.GRU, nn.GRU, nn.GRUCell)}


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _torch_state(family: str, state):
    """seqmem state -> torch.nn's (1, B, H) layout."""
    if family == "lstm":
        return (state.h.unsqueeze(0), state.c.unsqueeze(0))
    return state.h.unsqueeze(0)


sizes = st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 7), st.integers(1, 9))


@given(family=st.sampled_from(list(FAMILIES)), size=sizes, bias=st.booleans(), batch_first=st.booleans(),
       relu=st.booleans(), seed=st.integers(0, 2**31 - 1))
@example(family="lstm", size=(1, 1, 1, 1), bias=True, batch_first=True, relu=False, seed=0)
def test_from_torch_matches_torch_nn(family, size, bias, batch_first, relu, seed):
    """Outputs and final states equal torch.nn.RNN/LSTM/GRU with the same weights, from any initial state."""
    B, T, I, H = size
    cls, seq_cls, _ = FAMILIES[family]
    kw = {"nonlinearity": "relu" if relu else "tanh"} if family == "rnn" else {}
    torch.manual_seed(seed)
    ref = seq_cls(I, H, bias=bias, batch_first=batch_first, **kw).double()
    model = cls.from_torch(ref)
    gen = torch.Generator().manual_seed(seed)
    x = _randn(gen, B, T, I)
    state = type(model.initial_state(B))(*(_randn(gen, B, H) for _ in model.state_type._fields))
    y, final = model(x, state)
    y_ref, final_ref = ref(x if batch_first else x.transpose(0, 1), _torch_state(family, state))
    if not batch_first:
        y_ref = y_ref.transpose(0, 1)
    torch.testing.assert_close(y, y_ref, **F64)
    for ours, theirs in zip(_torch_state(family, final) if family == "lstm" else [final.h.unsqueeze(0)],
                            final_ref if family == "lstm" else [final_ref]):
        torch.testing.assert_close(ours, theirs, **F64)


@given(family=st.sampled_from(list(FAMILIES)), size=sizes, bias=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_to_torch_cell_and_module_match(family, size, bias, seed):
    """to_torch() and to_torch(cell=True) reproduce the model: step by step, and over the sequence."""
    B, T, I, H = size
    cls, _, _ = FAMILIES[family]
    torch.manual_seed(seed)
    model = cls(I, H, bias=bias).double()
    cell, module = model.to_torch(cell=True), model.to_torch()
    assert module.batch_first
    gen = torch.Generator().manual_seed(seed)
    x = _randn(gen, B, T, I)
    y, final = model(x)
    torch.testing.assert_close(module(x)[0], y, **F64)
    state = None
    for t in range(T):
        state = cell(x[:, t], state)
        h = state[0] if family == "lstm" else state
        torch.testing.assert_close(h, y[:, t], **F64)
    # and back: from the cell
    again = cls.from_torch(cell)
    torch.testing.assert_close(again(x)[0], y, **F64)


@given(family=st.sampled_from(list(FAMILIES)), size=sizes, seed=st.integers(0, 2**31 - 1))
def test_gradients_match_torch_nn(family, size, seed):
    """Every parameter's gradient equals torch.nn's (autograd through the reference loop)."""
    B, T, I, H = size
    cls, seq_cls, _ = FAMILIES[family]
    torch.manual_seed(seed)
    ref = seq_cls(I, H, batch_first=True).double()
    model = cls.from_torch(ref)
    x = _randn(torch.Generator().manual_seed(seed), B, T, I)
    model(x)[0].square().sum().backward()
    ref(x)[0].square().sum().backward()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(getattr(model, name).grad, getattr(ref, name + "_l0").grad, **F64)


def test_from_torch_rejects_what_it_cannot_represent():
    with pytest.raises(TypeError, match="torch.nn.LSTM or torch.nn.LSTMCell, got GRU"):
        seqmem.LSTM.from_torch(nn.GRU(2, 3))
    with pytest.raises(ValueError, match="num_layers=1, got 2"):
        seqmem.GRU.from_torch(nn.GRU(2, 3, num_layers=2))
    with pytest.raises(ValueError, match="unidirectional"):
        seqmem.RNN.from_torch(nn.RNN(2, 3, bidirectional=True))
    with pytest.raises(ValueError, match="proj_size=0, got 2"):
        seqmem.LSTM.from_torch(nn.LSTM(2, 3, proj_size=2))
    with pytest.raises(ValueError, match="peephole"):
        seqmem.LSTM(2, 3, peephole=True).to_torch()
    with pytest.raises(ValueError, match="reset_after=False"):
        seqmem.GRU(2, 3, reset_after=False).to_torch(cell=True)


@pytest.mark.parametrize("forget_bias", [0.0, 1.0, 2.5])
def test_forget_bias_is_an_initialisation(forget_bias):
    """b_if + b_hf starts at forget_bias, then is an ordinary parameter that from_torch copies as it is."""
    lstm = seqmem.LSTM(3, 5, forget_bias=forget_bias)
    H = 5
    total = lstm.bias_ih[H:2 * H] + lstm.bias_hh[H:2 * H]
    torch.testing.assert_close(total, torch.full((H,), forget_bias))
    other = lstm.bias_ih[:H]
    assert not torch.allclose(other, torch.full((H,), forget_bias))  # only the forget slice is set
    ref = nn.LSTM(3, 5)
    copied = seqmem.LSTM.from_torch(ref, forget_bias=forget_bias)
    torch.testing.assert_close(copied.bias_ih, ref.bias_ih_l0)


@given(size=sizes, seed=st.integers(0, 2**31 - 1))
def test_zero_peepholes_equal_plain_lstm_and_nonzero_ones_differ(size, seed):
    B, T, I, H = size
    torch.manual_seed(seed)
    plain = seqmem.LSTM(I, H).double()
    peep = seqmem.LSTM(I, H, peephole=True).double()
    peep.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        peep.weight_peephole.zero_()
    x = _randn(torch.Generator().manual_seed(seed), B, T, I)
    torch.testing.assert_close(peep(x)[0], plain(x)[0], **F64)
    with torch.no_grad():
        peep.weight_peephole.fill_(0.5)
    assert not torch.allclose(peep(x)[0], plain(x)[0])


def test_peephole_equations_by_hand():
    """One step of the peephole LSTM, written out from Gers & Schmidhuber (2000)."""
    gen = torch.Generator().manual_seed(3)
    m = seqmem.LSTM(2, 3, peephole=True).double()
    with torch.no_grad():
        m.weight_peephole.copy_(_randn(gen, 3, 3))
    x, h, c = _randn(gen, 1, 2), _randn(gen, 1, 3), _randn(gen, 1, 3)
    pre = x @ m.weight_ih.T + m.bias_ih + h @ m.weight_hh.T + m.bias_hh
    i, f, g, o = pre.split(3, dim=-1)
    wci, wcf, wco = m.weight_peephole
    i, f, g = torch.sigmoid(i + wci * c), torch.sigmoid(f + wcf * c), torch.tanh(g)
    c_new = f * c + i * g
    h_new = torch.sigmoid(o + wco * c_new) * torch.tanh(c_new)
    y, state = m.step(x[0:1], seqmem.LSTMState(h, c))
    torch.testing.assert_close(state.c, c_new, **F64)
    torch.testing.assert_close(y, h_new, **F64)


def test_gru_reset_conventions_by_hand():
    """reset_after=False applies r before W_hn (Cho et al. 2014); True after (torch.nn); both differ."""
    gen = torch.Generator().manual_seed(5)
    a = seqmem.GRU(2, 3, reset_after=True).double()
    b = seqmem.GRU(2, 3, reset_after=False).double()
    b.load_state_dict(a.state_dict())
    x, h = _randn(gen, 1, 2), _randn(gen, 1, 3)
    gx = (x @ a.weight_ih.T + a.bias_ih).split(3, dim=-1)
    W, bh = a.weight_hh.split(3), a.bias_hh.split(3)
    r = torch.sigmoid(gx[0] + h @ W[0].T + bh[0])
    z = torch.sigmoid(gx[1] + h @ W[1].T + bh[1])
    n_after = torch.tanh(gx[2] + r * (h @ W[2].T + bh[2]))
    n_before = torch.tanh(gx[2] + (r * h) @ W[2].T + bh[2])
    torch.testing.assert_close(a.step(x, seqmem.GRUState(h))[0], (1 - z) * n_after + z * h, **F64)
    torch.testing.assert_close(b.step(x, seqmem.GRUState(h))[0], (1 - z) * n_before + z * h, **F64)
    assert not torch.allclose(n_after, n_before)


@given(size=sizes, seed=st.integers(0, 2**31 - 1))
def test_lstm_gates_reproduce_the_cell_path(size, seed):
    """gates() reports the activations the forward pass used: c_t = f_t c_{t-1} + i_t g_t, h_t = o_t tanh(c_t)."""
    B, T, I, H = size
    torch.manual_seed(seed)
    m = seqmem.LSTM(I, H).double()
    x = _randn(torch.Generator().manual_seed(seed), B, T, I)
    y, _ = m(x)
    i, f, g, o = m.gates(x)
    c = torch.zeros(B, H, dtype=torch.float64)
    for t in range(T):
        c = f[:, t] * c + i[:, t] * g[:, t]
        torch.testing.assert_close(o[:, t] * torch.tanh(c), y[:, t], **F64)
    assert bool(((f > 0) & (f < 1)).all())
