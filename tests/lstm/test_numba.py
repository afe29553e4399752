"""The `"numba"` LSTM backend against the torch reference: outputs, states and every gradient.

Tensors come from `torch.Generator().manual_seed(seed)` with hypothesis drawing the seed, the sizes and
the variant (bias, peepholes). With `NUMBA_DISABLE_JIT=1` the kernels run as plain Python, so the sizes
shrink (and the long scan is shorter).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import seqmem
from seqmem.lstm.numba_scan import clear_step_cache, lstm_scan_numba, lstm_step_numba
from seqmem.lstm.reference import lstm_cell, lstm_scan
from seqmem.protocol import LSTMState

from ..kernel_helpers import KERNEL_TOLERANCE

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
MAX_B, MAX_T, MAX_H, MAX_I = (2, 5, 4, 3) if NO_JIT else (4, 40, 12, 7)
LONG_T = 24 if NO_JIT else 1024
EXAMPLES = settings(deadline=None, max_examples=4 if NO_JIT else 15)

DTYPES = (torch.float64, torch.float32)


def tolerances(dtype: torch.dtype, long: bool = False) -> dict[str, float]:
    """float64: tight; float32: a few ulp per step, growing with the length of the scan."""
    return KERNEL_TOLERANCE.replace(long_float32=(2e-4, 2e-4)).kwargs(dtype, long=long)


def make(seed, B, T, I, H, *, bias=True, peephole=False, dtype=torch.float64, scale=1.0, state=True):
    """`x (B, T, I)`, the parameters `(w_ih, w_hh, b_ih, b_hh, w_peep)` and `(h0, c0)`, all leaves that
    require grad; weights uniform in `[-1/sqrt(H), 1/sqrt(H)]` as torch initialises them."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, s=1.0):
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * s).to(dtype).requires_grad_()

    k = scale / H**0.5
    x = rand(B, T, I, s=scale)
    params = (
        rand(4 * H, I, s=k),
        rand(4 * H, H, s=k),
        rand(4 * H, s=k) if bias else None,
        rand(4 * H, s=k) if bias else None,
        rand(3, H, s=k) if peephole else None,
    )
    h0c0 = LSTMState(rand(B, H), rand(B, H)) if state else None
    return x, params, h0c0


def leaves(x, params, state):
    out = [x, *(p for p in params if p is not None)]
    return out + ([] if state is None else list(state))


def assert_close(actual, expected, what, **tol):
    torch.testing.assert_close(actual, expected, msg=lambda m: f"{what}: {m}", **tol)


def check_scan(seed, B, T, I, H, bias, peephole, dtype, long=False, scale=1.0, state=True):
    """Forward and backward of `lstm_scan_numba` equal the reference's (random output gradients)."""
    x, params, h0c0 = make(seed, B, T, I, H, bias=bias, peephole=peephole, dtype=dtype, scale=scale, state=state)
    tol = tolerances(dtype, long)
    y, (h, c) = lstm_scan_numba(x, *params, initial_state=h0c0)
    y_ref, (h_ref, c_ref) = lstm_scan(x, *params, initial_state=h0c0)
    for what, a, e in (("y", y, y_ref), ("h", h, h_ref), ("c", c, c_ref)):
        assert torch.isfinite(a).all(), f"{what} has NaN/inf"
        assert_close(a, e, what, **tol)
    g = torch.Generator().manual_seed(seed + 1)
    gy, gh, gc = (torch.randn(t.shape, generator=g, dtype=torch.float64).to(dtype) for t in (y, h, c))
    ins = leaves(x, params, h0c0)
    grads = torch.autograd.grad((y * gy).sum() + (h * gh).sum() + (c * gc).sum(), ins)
    grads_ref = torch.autograd.grad((y_ref * gy).sum() + (h_ref * gh).sum() + (c_ref * gc).sum(), ins)
    names = ["x", *(n for n, p in zip(("w_ih", "w_hh", "b_ih", "b_hh", "w_peep"), params, strict=True) if p is not None)]
    names += [] if h0c0 is None else ["h0", "c0"]
    for name, a, e in zip(names, grads, grads_ref, strict=True):
        assert torch.isfinite(a).all(), f"grad {name} has NaN/inf"
        assert_close(a, e, f"grad {name}", **tol)


sizes = {
    "seed": st.integers(0, 2**31 - 1),
    "B": st.integers(1, MAX_B),
    "T": st.integers(1, MAX_T),
    "I": st.integers(1, MAX_I),
    "H": st.integers(1, MAX_H),
    "bias": st.booleans(),
    "peephole": st.booleans(),
}


@EXAMPLES
@given(**sizes, dtype=st.sampled_from(DTYPES))
@example(seed=0, B=1, T=1, I=1, H=1, bias=True, peephole=False, dtype=torch.float64)
@example(seed=1, B=3, T=2, I=3, H=5, bias=False, peephole=True, dtype=torch.float64)
@example(seed=2, B=2, T=3, I=2, H=4, bias=True, peephole=True, dtype=torch.float32)
def test_scan_and_gradients_match_reference(seed, B, T, I, H, bias, peephole, dtype):
    check_scan(seed, B, T, I, H, bias, peephole, dtype)


@EXAMPLES
@given(**sizes)
def test_scan_from_zero_state_matches_reference(seed, B, T, I, H, bias, peephole):
    check_scan(seed, B, T, I, H, bias, peephole, torch.float64, state=False)


@EXAMPLES
@given(**sizes, dtype=st.sampled_from(DTYPES))
def test_scan_without_grad_matches_reference(seed, B, T, I, H, bias, peephole, dtype):
    x, params, h0c0 = make(seed, B, T, I, H, bias=bias, peephole=peephole, dtype=dtype)
    with torch.no_grad():
        y, (h, c) = lstm_scan_numba(x, *params, initial_state=h0c0)
        y_ref, (h_ref, c_ref) = lstm_scan(x, *params, initial_state=h0c0)
    assert y.grad_fn is None and not y.requires_grad
    tol = tolerances(dtype)
    assert_close(y, y_ref, "y", **tol)
    assert_close(h, h_ref, "h", **tol)
    assert_close(c, c_ref, "c", **tol)


@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_gradcheck(bias, peephole):
    """Finite differences in float64 agree with the hand-written BPTT, for every input."""
    x, params, h0c0 = make(3, 2, 3, 2, 3, bias=bias, peephole=peephole)
    present = [p for p in params if p is not None]

    def f(x, h0, c0, *ps):
        it = iter(ps)
        full = [next(it) if p is not None else None for p in params]
        y, (h, c) = lstm_scan_numba(x, *full, initial_state=LSTMState(h0, c0))
        return y, h, c

    assert torch.autograd.gradcheck(f, (x, *h0c0, *present))


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_scan(dtype):
    check_scan(7, 2, LONG_T, 5, 8, True, True, dtype, long=True)


@EXAMPLES
@given(seed=sizes["seed"], peephole=st.booleans(), dtype=st.sampled_from(DTYPES))
@example(seed=0, peephole=True, dtype=torch.float32)
def test_saturated_gates_stay_finite_and_match(seed, peephole, dtype):
    """Inputs and weights ~50: the gates saturate at exactly 0 or 1, nothing overflows to NaN."""
    check_scan(seed, 2, min(MAX_T, 12), 3, 4, True, peephole, dtype, scale=50.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_inputs(dtype):
    """±1e4 and ±inf pre-activations saturate the gates exactly (so `c` is exact: 1 then 2 when they
    are open, 0 when closed); NaN stays NaN."""
    H = 3
    w_ih = torch.ones(4 * H, 1, dtype=dtype)  # every gate sees x
    w_hh = torch.zeros(4 * H, H, dtype=dtype)
    for value in (1e4, -1e4, float("inf"), float("-inf"), float("nan")):
        x = torch.full((1, 2, 1), value, dtype=dtype)
        with torch.no_grad():
            y, (h, c) = lstm_scan_numba(x, w_ih, w_hh)
            y_ref, (h_ref, c_ref) = lstm_scan(x, w_ih, w_hh)
        torch.testing.assert_close(c, c_ref, equal_nan=True, rtol=0, atol=0)
        torch.testing.assert_close(y, y_ref, equal_nan=True, **tolerances(dtype))
        if value == value:
            assert c.tolist() == [[2.0] * H] if value > 0 else [[0.0] * H]


# ------------------------------------------------------------------------------------------ step
@EXAMPLES
@given(**sizes, dtype=st.sampled_from(DTYPES))
@example(seed=0, B=1, T=3, I=1, H=1, bias=True, peephole=False, dtype=torch.float32)
def test_steps_without_grad_match_reference_cell(seed, B, T, I, H, bias, peephole, dtype):
    """The streaming path, state fed back (the fast path from the second step on) equals the
    reference cell step by step, and the scan."""
    x, params, h0c0 = make(seed, B, T, I, H, bias=bias, peephole=peephole, dtype=dtype)
    tol = tolerances(dtype)
    with torch.no_grad():
        state, state_ref = h0c0, h0c0
        for t in range(T):
            x_t = x[:, t].contiguous()
            state = lstm_step_numba(x_t, state, *params)
            state_ref, _ = lstm_cell(x_t, state_ref, *params)
            assert_close(state.h, state_ref.h, f"h at step {t}", **tol)
            assert_close(state.c, state_ref.c, f"c at step {t}", **tol)
            assert state.h.shape == (B, H) and state.h.dtype == dtype
        _, (h, c) = lstm_scan_numba(x, *params, initial_state=h0c0)
    assert_close(state.h, h, "h after the steps vs the scan", **tol)
    assert_close(state.c, c, "c after the steps vs the scan", **tol)


def test_step_accepts_any_layout_and_keeps_old_states():
    """Non-contiguous inputs take the checked path; returned states are fresh tensors."""
    x, params, h0c0 = make(4, 3, 2, 4, 5)
    with torch.no_grad():
        x_t = x[:, 1]  # non-contiguous
        h_nc = h0c0.h.t().contiguous().t()  # non-contiguous view
        s1 = lstm_step_numba(x_t, LSTMState(h_nc, h0c0.c), *params)
        ref, _ = lstm_cell(x_t, h0c0, *params)
        assert_close(s1.h, ref.h, "h", **tolerances(torch.float64))
        s1_h = s1.h.clone()
        s2 = lstm_step_numba(x_t.contiguous(), s1, *params)
        s3 = lstm_step_numba(x_t.contiguous(), s2, *params)
        assert torch.equal(s1.h, s1_h), "a later step overwrote an earlier state"
        assert s3.h.data_ptr() not in (s1.h.data_ptr(), s2.h.data_ptr(), s2.c.data_ptr())
        ref2, _ = lstm_cell(x_t, s1, *params)
        assert_close(s2.h, ref2.h, "h after a fed-back step", **tolerances(torch.float64))


def test_step_sees_parameter_updates():
    """The step reads the parameters in place: it follows in-place updates (optimiser steps), `.data`
    assignments (module dtype conversions) and writes through `.data`, with nothing to clear."""
    x, params, h0c0 = make(5, 2, 1, 3, 4)
    params = tuple(p.detach() for p in params if p is not None)
    x_t = x[:, 0].detach().contiguous()
    state = LSTMState(*(t.detach() for t in h0c0))

    def check():
        with torch.no_grad():
            got = lstm_step_numba(x_t, state, *params)
            ref, _ = lstm_cell(x_t, state, *params)
        assert_close(got.h, ref.h, "h", **tolerances(torch.float64))

    check()  # builds the prepared weights
    check()  # uses them
    params[1].mul_(1.5)  # in place: version bump
    check()
    check()
    params[2].add_(0.25)
    check()
    params[0].data = params[0].data * 2  # new storage, same version
    check()
    check()
    params[3].data.add_(1.0)  # invisible to torch's version counters
    check()
    clear_step_cache()  # kept for compatibility: a no-op
    check()


def test_step_with_grad_is_differentiable():
    x, params, h0c0 = make(6, 2, 1, 3, 4, peephole=True)
    x_t = x[:, 0]
    got = lstm_step_numba(x_t, h0c0, *params)
    ref, _ = lstm_cell(x_t, h0c0, *params)
    assert got.h.grad_fn is not None
    ins = [x, *(p for p in params if p is not None), *h0c0]
    grads = torch.autograd.grad(got.h.sum() + 2 * got.c.sum(), ins)
    grads_ref = torch.autograd.grad(ref.h.sum() + 2 * ref.c.sum(), ins)
    for a, e in zip(grads, grads_ref, strict=True):
        assert_close(a, e, "step gradient", **tolerances(torch.float64))


def test_errors():
    x, params, h0c0 = make(8, 2, 3, 3, 4)
    with pytest.raises(TypeError, match="float32 or float64"):
        lstm_scan_numba(x.half(), *(p.half() if p is not None else None for p in params))
    with pytest.raises(TypeError, match="dtype"):
        lstm_scan_numba(x.float(), *params)
    with pytest.raises(ValueError, match="shape"):
        lstm_scan_numba(x[..., :2], *params)
    with pytest.raises(ValueError, match="seq_len >= 1"):
        lstm_scan_numba(x[:, :0], *params)
    with pytest.raises(ValueError, match="state.h"):
        lstm_scan_numba(x, *params, initial_state=LSTMState(h0c0.h[:1], h0c0.c))
    with pytest.raises(ValueError, match="weight_hh"):
        lstm_scan_numba(x, params[0], params[1][:, :3])
    with pytest.raises(ValueError, match="shape"), torch.no_grad():
        lstm_step_numba(x[:, 0, :2], h0c0, *params)
    with pytest.raises(TypeError, match="dtype"), torch.no_grad():
        lstm_step_numba(x[:, 0].float(), h0c0, *params)


# ------------------------------------------------------------------------------------------ module
@EXAMPLES
@given(
    seed=sizes["seed"], B=sizes["B"], T=sizes["T"], bias=st.booleans(), peephole=st.booleans(),
    dtype=st.sampled_from(DTYPES),
)  # fmt: skip
def test_module_backends_agree(seed, B, T, bias, peephole, dtype):
    """`seqmem.LSTM(backend="numba")`: forward, step and backward equal `backend="torch"`."""
    torch.manual_seed(seed)
    I, H = 3, min(MAX_H, 5)
    model = seqmem.LSTM(I, H, bias=bias, peephole=peephole).to(dtype)
    if peephole:
        with torch.no_grad():
            model.weight_peephole.uniform_(-0.5, 0.5)
    assert "numba" in model.backends
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, I, generator=g, dtype=torch.float64).to(dtype)
    tol = tolerances(dtype)
    out = {}
    for backend in ("torch", "numba"):
        model.backend = backend
        model.zero_grad()
        y, state = model(x)
        (y.square().sum() + state.c.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        with torch.no_grad():
            s, steps = None, []
            for t in range(T):
                y_t, s = model.step(x[:, t], s)
                steps.append(y_t)
        out[backend] = (y, state, grads, torch.stack(steps, 1), s)
    (y_t, s_t, g_t, st_t, ss_t), (y_n, s_n, g_n, st_n, ss_n) = out["torch"], out["numba"]
    assert_close(y_n, y_t, "forward y", **tol)
    assert_close(s_n.h, s_t.h, "forward h", **tol)
    assert_close(s_n.c, s_t.c, "forward c", **tol)
    for name in g_t:
        assert_close(g_n[name], g_t[name], f"grad {name}", **tol)
    assert_close(st_n, st_t, "step outputs", **tol)
    assert_close(ss_n.c, ss_t.c, "step final c", **tol)
    assert_close(st_n, y_n.detach(), "numba step == numba forward", **tol)


def test_module_matches_torch_nn_lstm():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(4, 6, batch_first=True).double()
    model = seqmem.LSTM.from_torch(ref, backend="numba")
    x = torch.randn(3, 9, 4, dtype=torch.float64, requires_grad=True)
    y, (h, c) = model(x)
    y_ref, (h_ref, c_ref) = ref(x)
    tol = tolerances(torch.float64)
    assert_close(y, y_ref, "y", **tol)
    assert_close(h, h_ref[0], "h", **tol)
    assert_close(c, c_ref[0], "c", **tol)
    gx = torch.autograd.grad(y.sum(), x)[0]
    gx_ref = torch.autograd.grad(y_ref.sum(), x)[0]
    assert_close(gx, gx_ref, "grad x", **tol)
