"""The GRU's numba backend equals its torch reference in both reset conventions: outputs, final
states and every gradient (x, h_0, weight_ih, weight_hh, bias_ih, bias_hh), for the scan, the step
and the model.

Under `NUMBA_DISABLE_JIT=1` the kernels run as plain Python: the sizes shrink (see `NO_JIT`).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import seqmem
from seqmem.gru import numba_scan
from seqmem.gru.numba_scan import gru_scan_numba, gru_step_numba
from seqmem.gru.reference import gru_cell, gru_scan

from ..kernel_helpers import DTYPES, LONG_T, MAX_H, MAX_T, NAMES, NO_JIT, tolerance
from ..kernel_helpers import make_inputs as _make_inputs


def make_inputs(*args, **kwargs):
    return _make_inputs(*args, **kwargs, gates=3)


def run_with_grads(scan, tensors, reset_after: bool, seed: int):
    """(y, h_T, grads by name) for a loss that weighs every output and the final state."""
    leaves = [t.clone().requires_grad_() if t is not None else None for t in tensors]
    x, h0, w_ih, w_hh, b_ih, b_hh = leaves
    y, hT = scan(x, w_ih, w_hh, b_ih, b_hh, reset_after, h0)
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
    reset_after=st.booleans(), bias=st.booleans(), dtype=st.sampled_from(list(DTYPES)),
    scale=st.sampled_from([0.5, 1.0, 3.0]), seed=st.integers(0, 2**31 - 1),
)
@example(B=1, T=1, I=1, H=1, reset_after=True, bias=True, dtype="float64", scale=1.0, seed=0)
@example(B=3, T=7, I=5, H=3, reset_after=False, bias=False, dtype="float32", scale=3.0, seed=1)
def test_scan_matches_torch(B, T, I, H, reset_after, bias, dtype, scale, seed):
    """Outputs, h_T and all six gradients equal the reference loop under autograd."""
    dt = DTYPES[dtype]
    tensors = make_inputs(seed, B, T, I, H, bias, dt, scale)
    ours = run_with_grads(gru_scan_numba, tensors, reset_after, seed)
    theirs = run_with_grads(gru_scan, tensors, reset_after, seed)
    assert_same(ours, theirs, tolerance(dt, T))
    assert ours[0].dtype == dt and ours[1].dtype == dt


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("reset_after", [True, False])
def test_long_scan_matches_torch(dtype, reset_after):
    """seq_len 1024: outputs, h_T and every gradient stay within tolerance over the long scan."""
    dt = DTYPES[dtype]
    B, I, H = (2, 3, 4) if NO_JIT else (3, 8, 16)
    tensors = make_inputs(7, B, LONG_T, I, H, True, dt)
    ours = run_with_grads(gru_scan_numba, tensors, reset_after, 7)
    theirs = run_with_grads(gru_scan, tensors, reset_after, 7)
    assert_same(ours, theirs, tolerance(dt, LONG_T))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(reset_after, bias):
    """torch.autograd.gradcheck of the hand-written BPTT against finite differences (float64)."""
    tensors = make_inputs(3, 2, 4, 3, 3, bias, torch.float64, scale=2.0)
    leaves = [t.requires_grad_() for t in tensors if t is not None]

    def fn(x, h0, w_ih, w_hh, *biases):
        b_ih, b_hh = biases if biases else (None, None)
        return gru_scan_numba(x, w_ih, w_hh, b_ih, b_hh, reset_after, h0)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


def test_gradient_reaches_every_input_from_either_output():
    """Only y, or only h_T, in the loss: the unused output's gradient is zero, not missing."""
    tensors = make_inputs(5, 2, 6, 3, 4, True, torch.float64)
    for reset_after in (True, False):
        for pick in (0, 1):
            grads = []
            for scan in (gru_scan_numba, gru_scan):
                leaves = [t.clone().requires_grad_() for t in tensors]
                x, h0, w_ih, w_hh, b_ih, b_hh = leaves
                out = scan(x, w_ih, w_hh, b_ih, b_hh, reset_after, h0)[pick]
                grads.append(torch.autograd.grad(out.square().sum(), leaves))
            for ours, theirs in zip(*grads, strict=True):
                torch.testing.assert_close(ours, theirs, **tolerance(torch.float64, 6))


def test_only_some_inputs_require_grad():
    """Gradients for a subset of the inputs (here weight_hh and h0 only) are right; others stay None."""
    x, h0, w_ih, w_hh, b_ih, b_hh = make_inputs(8, 2, 5, 3, 4, True, torch.float64)
    results = []
    for scan in (gru_scan_numba, gru_scan):
        w = w_hh.clone().requires_grad_()
        h = h0.clone().requires_grad_()
        y, _ = scan(x, w_ih, w, b_ih, b_hh, True, h)
        y.sum().backward()
        results.append((w.grad, h.grad))
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, **tolerance(torch.float64, 5))


def test_scan_without_initial_state_and_chunked():
    """initial_state=None means zeros; scanning in two chunks equals one scan."""
    x, _, w_ih, w_hh, b_ih, b_hh = make_inputs(11, 2, 9, 3, 4, True, torch.float64)
    tol = tolerance(torch.float64, 9)
    for reset_after in (True, False):
        y, hT = gru_scan_numba(x, w_ih, w_hh, b_ih, b_hh, reset_after)
        torch.testing.assert_close(y, gru_scan(x, w_ih, w_hh, b_ih, b_hh, reset_after)[0], **tol)
        y1, h1 = gru_scan_numba(x[:, :4], w_ih, w_hh, b_ih, b_hh, reset_after)
        y2, h2 = gru_scan_numba(x[:, 4:], w_ih, w_hh, b_ih, b_hh, reset_after, initial_state=h1)
        torch.testing.assert_close(torch.cat([y1, y2], 1), y, **tol)
        torch.testing.assert_close(h2, hT, **tol)


def test_mixed_bias_and_non_contiguous_inputs():
    """bias_ih without bias_hh (as F.linear allows), and transposed views, give the reference result."""
    x, h0, w_ih, w_hh, b_ih, _ = make_inputs(2, 5, 4, 3, 6, True, torch.float64)
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    assert not xt.is_contiguous()
    for reset_after in (True, False):
        y, _ = gru_scan_numba(xt, w_ih, w_hh.T.contiguous().T, b_ih, None, reset_after, h0)
        torch.testing.assert_close(y, gru_scan(x, w_ih, w_hh, b_ih, None, reset_after, h0)[0],
                                   **tolerance(torch.float64, 4))
        with torch.no_grad():
            h = gru_step_numba(xt[:, 0], h0, w_ih, w_hh, None, b_ih, reset_after)
        torch.testing.assert_close(h, gru_cell(x[:, 0], h0, w_ih, w_hh, None, b_ih, reset_after),
                                   **tolerance(torch.float64, 1))


# ---------------------------------------------------------------------------------------------- step
@given(
    B=st.integers(1, 4), T=st.integers(1, 8), I=st.integers(1, 6), H=st.integers(1, MAX_H),
    reset_after=st.booleans(), bias=st.booleans(), dtype=st.sampled_from(list(DTYPES)),
    seed=st.integers(0, 2**31 - 1),
)
@example(B=1, T=3, I=64, H=64, reset_after=True, bias=True, dtype="float32", seed=0)
@example(B=1, T=2, I=5, H=7, reset_after=False, bias=True, dtype="float64", seed=0)
def test_step_matches_torch_and_streams_like_the_scan(B, T, I, H, reset_after, bias, dtype, seed):
    """The no-grad fast path equals gru_cell; feeding its output back T times equals the scan."""
    dt = DTYPES[dtype]
    x, h0, *params = make_inputs(seed, B, T, I, H, bias, dt)
    tol = tolerance(dt, T)
    with torch.no_grad():
        torch.testing.assert_close(
            gru_step_numba(x[:, 0], h0, *params, reset_after), gru_cell(x[:, 0], h0, *params, reset_after), **tol
        )
        h = h0
        for t in range(T):
            h = gru_step_numba(x[:, t], h, *params, reset_after=reset_after)
        torch.testing.assert_close(h, gru_scan(x, *params, reset_after, h0)[1], **tol)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_step_is_differentiable_when_autograd_records(reset_after, bias):
    """With grad enabled and inputs that require grad, step's value and gradients equal gru_cell's."""
    x, h0, *params = make_inputs(4, 3, 1, 4, 5, bias, torch.float64)
    grads = []
    for cell in (gru_step_numba, gru_cell):
        leaves = [t.clone().requires_grad_() if t is not None else None for t in (x[:, 0], h0, *params)]
        h = cell(*leaves, reset_after=reset_after)
        assert h.requires_grad
        used = [t for t in leaves if t is not None]
        grads.append((h.detach(), torch.autograd.grad((h * h.detach().cos()).sum(), used)))
    (h, g), (h_ref, g_ref) = grads
    torch.testing.assert_close(h, h_ref, **tolerance(torch.float64, 1))
    for ours, theirs in zip(g, g_ref, strict=True):
        torch.testing.assert_close(ours, theirs, **tolerance(torch.float64, 1))
    gradcheck_inputs = [t.clone().requires_grad_() for t in (x[:, 0], h0, *params) if t is not None]

    def fn(x_t, h, w_ih, w_hh, *biases):
        return gru_step_numba(x_t, h, w_ih, w_hh, *(biases or (None, None)), reset_after=reset_after)

    assert torch.autograd.gradcheck(fn, gradcheck_inputs, eps=1e-6, atol=1e-7)


def test_step_sees_parameter_updates():
    """The cached parameter views follow in-place updates, `.data` swaps and dtype changes."""
    model = seqmem.GRU(3, 4, backend="numba")
    ref = seqmem.GRU(3, 4)
    gen = torch.Generator().manual_seed(0)
    x, h = torch.randn(2, 3, generator=gen), torch.randn(2, 4, generator=gen)

    def check(dtype=torch.float32):
        ref.load_state_dict(model.state_dict())
        with torch.no_grad():
            ours = model.step(x.to(dtype), seqmem.GRUState(h.to(dtype)))[0]
            theirs = ref.step(x.to(dtype), seqmem.GRUState(h.to(dtype)))[0]
        torch.testing.assert_close(ours, theirs, **tolerance(dtype, 1))

    check()
    with torch.no_grad():
        model.weight_hh.mul_(-2.0)  # in place, as an optimizer step
    check()
    model.bias_hh.data = torch.randn(12, generator=gen)  # a new storage
    check()
    model.double()
    ref.double()
    check(torch.float64)


# ---------------------------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("reset_after", [True, False])
def test_saturation_and_nan(reset_after):
    """Saturated gates (inputs of +-1e4, +-inf) give exact, finite states; NaN propagates."""
    H = 2
    w_ih = torch.cat([torch.eye(H)] * 3).double()  # every gate sees x
    w_hh = torch.zeros(3 * H, H, dtype=torch.float64)
    h0 = torch.tensor([[0.5, -0.5]], dtype=torch.float64)
    x = torch.tensor([[[1e4, -1e4]]], dtype=torch.float64)
    y, _ = gru_scan_numba(x, w_ih, w_hh, None, None, reset_after, h0)
    # unit 0: z = 1, the state is kept; unit 1: z = 0, n = tanh(-1e4) = -1
    assert y.flatten().tolist() == [0.5, -1.0]
    b_ih = torch.tensor([math.inf, -math.inf] * 3, dtype=torch.float64)
    y, _ = gru_scan_numba(torch.zeros_like(x), w_ih, w_hh, b_ih, torch.zeros(6, dtype=torch.float64), reset_after, h0)
    assert y.flatten().tolist() == [0.5, -1.0]
    b_nan = torch.tensor([math.nan, 0.0] * 3, dtype=torch.float64)
    y, _ = gru_scan_numba(x, w_ih, w_hh, b_nan, None, reset_after, h0)
    assert math.isnan(y[0, 0, 0])  # (before the reset, W_hn (r * h) spreads it to every unit, as in torch)
    torch.testing.assert_close(y, gru_scan(x, w_ih, w_hh, b_nan, None, reset_after, h0)[0], equal_nan=True)


# ---------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_model_backend_numba_equals_torch(reset_after, bias):
    """seqmem.GRU(backend="numba"): forward, step and the parameters' gradients equal backend="torch"."""
    torch.manual_seed(0)
    ref = seqmem.GRU(3, 5, bias=bias, reset_after=reset_after).double()
    model = seqmem.GRU(3, 5, bias=bias, reset_after=reset_after, backend="numba").double()
    model.load_state_dict(ref.state_dict())
    assert "numba" in seqmem.GRU.backends and model.backend == "numba"
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
    with torch.no_grad():  # the fast path, streaming
        state = model.initial_state(2)
        for t in range(x.shape[1]):
            out, state = model.step(x[:, t], state)
    torch.testing.assert_close(out, y_ref[:, -1], **tol)


# ---------------------------------------------------------------------------------------------- errors
def test_bad_arguments_raise_clear_errors():
    x, h0, w_ih, w_hh, b_ih, b_hh = make_inputs(0, 2, 3, 4, 5, True, torch.float64)
    with pytest.raises(TypeError, match="float32 or float64"):
        gru_scan_numba(x.half(), w_ih.half(), w_hh.half())
    with pytest.raises(TypeError, match="weight_ih has dtype torch.float32 but x has torch.float64"):
        gru_scan_numba(x, w_ih.float(), w_hh)
    with pytest.raises(TypeError, match="weight_hh must be a torch.Tensor"):
        gru_scan_numba(x, w_ih, None)
    with pytest.raises(ValueError, match="CPU only"):
        gru_scan_numba(x.to("meta"), w_ih.to("meta"), w_hh.to("meta"))
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(3 \* hidden_size, hidden_size\)"):
        gru_scan_numba(x, w_ih, w_hh[:, :4])
    with pytest.raises(ValueError, match=r"weight_ih must have shape \(15, 4\), got \(14, 4\)"):
        gru_scan_numba(x, w_ih[:14], w_hh)
    with pytest.raises(ValueError, match=r"initial_state must have shape \(2, 5\)"):
        gru_scan_numba(x, w_ih, w_hh, initial_state=h0.T)
    with pytest.raises(ValueError, match="seq_len >= 1"):
        gru_scan_numba(x[:, :0], w_ih, w_hh)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"x_t must have shape \(batch, input_size\)"):
            gru_step_numba(x, h0, w_ih, w_hh)
        with pytest.raises(ValueError, match=r"h must have shape \(2, 5\)"):
            gru_step_numba(x[:, 0], h0[:1], w_ih, w_hh, b_ih, b_hh)
        with pytest.raises(TypeError, match="h must be a torch.Tensor"):
            gru_step_numba(x[:, 0], h0.numpy(), w_ih, w_hh)
    assert numba_scan.__all__ == ["gru_scan_numba", "gru_step_numba"]
