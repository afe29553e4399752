"""The Elman RNN's numba backend equals its torch reference: outputs, final states and every
gradient (x, h_0, weight_ih, weight_hh, bias_ih, bias_hh), for the scan, the step and the model.

Under `NUMBA_DISABLE_JIT=1` the kernels run as plain Python: the sizes shrink (see `NO_JIT`).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import seqmem
from seqmem.rnn import numba_scan
from seqmem.rnn.numba_scan import rnn_scan_numba, rnn_step_numba
from seqmem.rnn.reference import rnn_cell, rnn_scan

from ..kernel_helpers import DTYPES, LONG_T, MAX_H, MAX_T, NAMES, NO_JIT, tolerance
from ..kernel_helpers import make_inputs as _make_inputs


def make_inputs(*args, **kwargs):
    return _make_inputs(*args, **kwargs, gates=1)


def run_with_grads(scan, tensors, nonlinearity: str, seed: int):
    """(y, h_T, grads by name) for a loss that weighs every output and the final state."""
    leaves = [t.clone().requires_grad_() if t is not None else None for t in tensors]
    x, h0, w_ih, w_hh, b_ih, b_hh = leaves
    y, hT = scan(x, w_ih, w_hh, b_ih, b_hh, nonlinearity, h0)
    gen = torch.Generator().manual_seed(seed + 1)
    wy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    wh = torch.randn(hT.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    ((y * wy).sum() + (hT * wh).sum()).backward()
    grads = {name: t.grad for name, t in zip(NAMES, leaves, strict=True) if t is not None}
    return y.detach(), hT.detach(), grads


def assert_same(ours, theirs, tol):
    y, hT, grads = ours
    y_ref, hT_ref, grads_ref = theirs
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(hT, hT_ref, **tol)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], **tol, msg=lambda m, n=name: f"d{n}: {m}")


# ---------------------------------------------------------------------------------------------- scan
@given(
    B=st.integers(1, 4), T=st.integers(1, MAX_T), I=st.integers(1, 6), H=st.integers(1, MAX_H),
    nonlinearity=st.sampled_from(["tanh", "relu"]), bias=st.booleans(), dtype=st.sampled_from(list(DTYPES)),
    scale=st.sampled_from([0.5, 1.0, 2.0]), seed=st.integers(0, 2**31 - 1),
)
@example(B=1, T=1, I=1, H=1, nonlinearity="tanh", bias=True, dtype="float64", scale=1.0, seed=0)
@example(B=3, T=7, I=5, H=3, nonlinearity="relu", bias=False, dtype="float32", scale=2.0, seed=1)
def test_scan_matches_torch(B, T, I, H, nonlinearity, bias, dtype, scale, seed):
    """Outputs, h_T and all six gradients equal the reference loop under autograd."""
    dt = DTYPES[dtype]
    tensors = make_inputs(seed, B, T, I, H, bias, dt, scale)
    ours = run_with_grads(rnn_scan_numba, tensors, nonlinearity, seed)
    theirs = run_with_grads(rnn_scan, tensors, nonlinearity, seed)
    assert_same(ours, theirs, tolerance(dt, T))
    assert ours[0].dtype == dt and ours[1].dtype == dt


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_long_scan_matches_torch(dtype, nonlinearity):
    """seq_len 1024: outputs, h_T and every gradient stay within tolerance over the long scan."""
    dt = DTYPES[dtype]
    B, I, H = (2, 3, 4) if NO_JIT else (3, 8, 16)
    tensors = make_inputs(7, B, LONG_T, I, H, True, dt)
    ours = run_with_grads(rnn_scan_numba, tensors, nonlinearity, 7)
    theirs = run_with_grads(rnn_scan, tensors, nonlinearity, 7)
    assert_same(ours, theirs, tolerance(dt, LONG_T))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(nonlinearity, bias):
    """torch.autograd.gradcheck of the hand-written BPTT against finite differences (float64)."""
    tensors = make_inputs(3, 2, 4, 3, 3, bias, torch.float64)
    leaves = [t.requires_grad_() for t in tensors if t is not None]

    def fn(x, h0, w_ih, w_hh, *biases):
        b_ih, b_hh = biases if biases else (None, None)
        return rnn_scan_numba(x, w_ih, w_hh, b_ih, b_hh, nonlinearity, h0)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


def test_gradient_reaches_every_input_from_either_output():
    """Only y, or only h_T, in the loss: the unused output's gradient is zero, not missing."""
    tensors = make_inputs(5, 2, 6, 3, 4, True, torch.float64)
    for pick in (0, 1):
        grads = []
        for scan in (rnn_scan_numba, rnn_scan):
            leaves = [t.clone().requires_grad_() for t in tensors]
            x, h0, w_ih, w_hh, b_ih, b_hh = leaves
            out = scan(x, w_ih, w_hh, b_ih, b_hh, "tanh", h0)[pick]
            grads.append(torch.autograd.grad(out.square().sum(), leaves))
        for ours, theirs in zip(*grads, strict=True):
            torch.testing.assert_close(ours, theirs, **tolerance(torch.float64, 6))


def test_scan_without_initial_state_and_chunked():
    """initial_state=None means zeros; scanning in two chunks equals one scan."""
    x, _, w_ih, w_hh, b_ih, b_hh = make_inputs(11, 2, 9, 3, 4, True, torch.float64)
    y, hT = rnn_scan_numba(x, w_ih, w_hh, b_ih, b_hh)
    y_ref, hT_ref = rnn_scan(x, w_ih, w_hh, b_ih, b_hh)
    torch.testing.assert_close(y, y_ref, **tolerance(torch.float64, 9))
    y1, h1 = rnn_scan_numba(x[:, :4], w_ih, w_hh, b_ih, b_hh)
    y2, h2 = rnn_scan_numba(x[:, 4:], w_ih, w_hh, b_ih, b_hh, initial_state=h1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, **tolerance(torch.float64, 9))
    torch.testing.assert_close(h2, hT, **tolerance(torch.float64, 9))


def test_non_contiguous_inputs():
    x, h0, w_ih, w_hh, b_ih, b_hh = make_inputs(2, 5, 4, 3, 6, True, torch.float64)
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, batch-major strides
    assert not xt.is_contiguous()
    y, _ = rnn_scan_numba(xt, w_ih, w_hh.T.contiguous().T, b_ih, b_hh, "tanh", h0)
    torch.testing.assert_close(y, rnn_scan(x, w_ih, w_hh, b_ih, b_hh, "tanh", h0)[0], **tolerance(torch.float64, 4))


# ---------------------------------------------------------------------------------------------- step
@given(
    B=st.integers(1, 4), T=st.integers(1, 8), I=st.integers(1, 6), H=st.integers(1, MAX_H),
    nonlinearity=st.sampled_from(["tanh", "relu"]), bias=st.booleans(), dtype=st.sampled_from(list(DTYPES)),
    seed=st.integers(0, 2**31 - 1),
)
@example(B=1, T=3, I=64, H=64, nonlinearity="tanh", bias=True, dtype="float32", seed=0)
def test_step_matches_torch_and_streams_like_the_scan(B, T, I, H, nonlinearity, bias, dtype, seed):
    """The no-grad fast path equals rnn_cell; feeding its output back T times equals the scan."""
    dt = DTYPES[dtype]
    x, h0, *params = make_inputs(seed, B, T, I, H, bias, dt)
    tol = tolerance(dt, T)
    with torch.no_grad():
        torch.testing.assert_close(
            rnn_step_numba(x[:, 0], h0, *params, nonlinearity), rnn_cell(x[:, 0], h0, *params, nonlinearity), **tol
        )
        h = h0
        for t in range(T):
            h = rnn_step_numba(x[:, t], h, *params, nonlinearity=nonlinearity)
        torch.testing.assert_close(h, rnn_scan(x, *params, nonlinearity, h0)[1], **tol)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_step_is_differentiable_when_autograd_records(nonlinearity, bias):
    """With grad enabled and inputs that require grad, step's value and gradients equal rnn_cell's."""
    x, h0, *params = make_inputs(4, 3, 1, 4, 5, bias, torch.float64)
    grads = []
    for cell in (rnn_step_numba, rnn_cell):
        leaves = [t.clone().requires_grad_() if t is not None else None for t in (x[:, 0], h0, *params)]
        h = cell(*leaves, nonlinearity=nonlinearity)
        assert h.requires_grad
        used = [t for t in leaves if t is not None]
        grads.append((h.detach(), torch.autograd.grad((h * h.detach().cos()).sum(), used)))
    (h, g), (h_ref, g_ref) = grads
    torch.testing.assert_close(h, h_ref, **tolerance(torch.float64, 1))
    for ours, theirs in zip(g, g_ref, strict=True):
        torch.testing.assert_close(ours, theirs, **tolerance(torch.float64, 1))
    gradcheck_inputs = [t.clone().requires_grad_() for t in (x[:, 0], h0, *params) if t is not None]

    def fn(x_t, h, w_ih, w_hh, *biases):
        return rnn_step_numba(x_t, h, w_ih, w_hh, *(biases or (None, None)), nonlinearity=nonlinearity)

    assert torch.autograd.gradcheck(fn, gradcheck_inputs, eps=1e-6, atol=1e-7)


def test_step_sees_parameter_updates():
    """The cached parameter views follow in-place updates, `.data` swaps and dtype changes."""
    model = seqmem.RNN(3, 4, backend="numba")
    ref = seqmem.RNN(3, 4)
    gen = torch.Generator().manual_seed(0)
    x, h = torch.randn(2, 3, generator=gen), torch.randn(2, 4, generator=gen)

    def check(dtype=torch.float32):
        ref.load_state_dict(model.state_dict())
        with torch.no_grad():
            ours = model.step(x.to(dtype), seqmem.RNNState(h.to(dtype)))[0]
            theirs = ref.step(x.to(dtype), seqmem.RNNState(h.to(dtype)))[0]
        torch.testing.assert_close(ours, theirs, **tolerance(dtype, 1))

    check()
    with torch.no_grad():
        model.weight_hh.mul_(-2.0)  # in place, as an optimizer step
    check()
    model.weight_ih.data = torch.randn(4, 3, generator=gen)  # a new storage
    check()
    model.double()
    ref.double()
    check(torch.float64)


def test_step_accepts_a_state_that_requires_grad_under_no_grad():
    x, h0, *params = make_inputs(1, 2, 1, 3, 4, True, torch.float64)
    h0.requires_grad_()
    with torch.no_grad():
        h = rnn_step_numba(x[:, 0], h0, *params)
    assert not h.requires_grad
    torch.testing.assert_close(h, rnn_cell(x[:, 0], h0.detach(), *params), **tolerance(torch.float64, 1))


# ---------------------------------------------------------------------------------------------- numerics
def test_saturation_and_nan():
    """tanh saturates to exactly +-1 for huge and infinite inputs (no overflow, no NaN); NaN propagates."""
    H = 3
    w_ih = torch.eye(H, dtype=torch.float64)
    w_hh = torch.zeros(H, H, dtype=torch.float64)
    x = torch.tensor([[[1e4, -1e4, 0.0]]], dtype=torch.float64)
    y, _ = rnn_scan_numba(x, w_ih, w_hh)
    assert y.flatten().tolist() == [1.0, -1.0, 0.0]
    b_ih = torch.tensor([math.inf, -math.inf, math.nan], dtype=torch.float64)
    y, _ = rnn_scan_numba(torch.zeros_like(x), w_ih, w_hh, b_ih, torch.zeros(H, dtype=torch.float64))
    assert y[0, 0, :2].tolist() == [1.0, -1.0] and math.isnan(y[0, 0, 2])
    y_relu, _ = rnn_scan_numba(x, w_ih, w_hh, nonlinearity="relu")
    assert y_relu.flatten().tolist() == [1e4, 0.0, 0.0]
    y_relu, _ = rnn_scan_numba(torch.zeros_like(x), w_ih, w_hh, b_ih, torch.zeros(H, dtype=torch.float64), "relu")
    assert y_relu[0, 0, :2].tolist() == [math.inf, 0.0] and math.isnan(y_relu[0, 0, 2])


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_tanh_matches_torch_to_a_few_ulp(dtype):
    dt = DTYPES[dtype]
    grid = torch.cat([torch.linspace(-25, 25, 2001, dtype=torch.float64), torch.logspace(-300, 2, 50, dtype=torch.float64)])
    if NO_JIT:
        grid = grid[::20]
    ours = rnn_scan_numba(grid.to(dt).reshape(1, -1, 1), torch.ones(1, 1, dtype=dt), torch.zeros(1, 1, dtype=dt))[0]
    torch.testing.assert_close(ours.flatten(), torch.tanh(grid.to(dt)), rtol=0, atol=4 * torch.finfo(dt).eps)


# ---------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_model_backend_numba_equals_torch(nonlinearity, bias):
    """seqmem.RNN(backend="numba"): forward, step and the parameters' gradients equal backend="torch"."""
    torch.manual_seed(0)
    ref = seqmem.RNN(3, 5, nonlinearity=nonlinearity, bias=bias).double()
    model = seqmem.RNN(3, 5, nonlinearity=nonlinearity, bias=bias, backend="numba").double()
    model.load_state_dict(ref.state_dict())
    assert "numba" in seqmem.RNN.backends and model.backend == "numba"
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 3, generator=gen, dtype=torch.float64)
    tol = tolerance(torch.float64, 7)
    (y, s), (y_ref, s_ref) = model(x), ref(x)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(s.h, s_ref.h, **tol)
    (y.sum() + s.h.square().sum()).backward()
    (y_ref.sum() + s_ref.h.square().sum()).backward()
    for (name, p), p_ref in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, **tol, msg=lambda m, n=name: f"{n}: {m}")
    state, state_ref = model.initial_state(2), ref.initial_state(2)
    for t in range(x.shape[1]):
        out, state = model.step(x[:, t], state)
        out_ref, state_ref = ref.step(x[:, t], state_ref)
        torch.testing.assert_close(out, out_ref, **tol)
    torch.testing.assert_close(out, y_ref[:, -1], **tol)


# ---------------------------------------------------------------------------------------------- errors
def test_bad_arguments_raise_clear_errors():
    x, h0, w_ih, w_hh, b_ih, b_hh = make_inputs(0, 2, 3, 4, 5, True, torch.float64)
    with pytest.raises(TypeError, match="float32 or float64"):
        rnn_scan_numba(x.half(), w_ih.half(), w_hh.half())
    with pytest.raises(TypeError, match="weight_hh has dtype torch.float32 but x has torch.float64"):
        rnn_scan_numba(x, w_ih, w_hh.float())
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        rnn_scan_numba(x.numpy(), w_ih, w_hh)
    with pytest.raises(ValueError, match="CPU only"):
        rnn_scan_numba(x.to("meta"), w_ih.to("meta"), w_hh.to("meta"))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq_len, input_size\)"):
        rnn_scan_numba(x[:, :0], w_ih, w_hh)
    with pytest.raises(ValueError, match=r"weight_ih must have shape \(5, 4\), got \(5, 3\)"):
        rnn_scan_numba(x, w_ih[:, :3], w_hh)
    with pytest.raises(ValueError, match=r"initial_state must have shape \(2, 5\)"):
        rnn_scan_numba(x, w_ih, w_hh, initial_state=h0[:1])
    with pytest.raises(ValueError, match="bias_hh must have shape"):
        rnn_scan_numba(x, w_ih, w_hh, b_ih, b_hh[:2])
    with pytest.raises(ValueError, match="unknown nonlinearity 'gelu'"):
        rnn_scan_numba(x, w_ih, w_hh, nonlinearity="gelu")
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"h must have shape \(2, 5\)"):
            rnn_step_numba(x[:, 0], h0[:, :3], w_ih, w_hh)
        with pytest.raises(ValueError, match=r"x_t must have shape \(batch, input_size\)"):
            rnn_step_numba(x, h0, w_ih, w_hh)
        with pytest.raises(TypeError, match="x_t has dtype torch.float32|h has dtype"):
            rnn_step_numba(x[:, 0], h0.float(), w_ih, w_hh)
        with pytest.raises(ValueError, match="unknown nonlinearity"):
            rnn_step_numba(x[:, 0], h0, w_ih, w_hh, nonlinearity="sigmoid")
    assert numba_scan.__all__ == ["rnn_scan_numba", "rnn_step_numba"]
