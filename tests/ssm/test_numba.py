"""Tests of the Numba selective scan (`seqmem.ssm.numba_scan`) against the reference loop.

Outputs, final states and every gradient (of u, delta, A, B, C, D and the initial state) are
compared with `seqmem.ssm.reference` differentiated by autograd; gradcheck checks the hand-derived
backward in float64. Under `NUMBA_DISABLE_JIT=1` the kernels run as Python: sizes shrink.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from seqmem.ssm import numba_scan
from seqmem.ssm.numba_scan import selective_scan_numba, selective_scan_step_numba
from seqmem.ssm.reference import selective_scan, selective_scan_step
from seqmem.testing import Tolerance, assert_close, seeds

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
MAX_LEN = 8 if NO_JIT else 40
EXAMPLES = 4 if NO_JIT else max(15, settings.default.max_examples)  # the loaded profile may ask more
LONG_LEN = 64 if NO_JIT else 1024
NAMES = ("u", "delta", "A", "B", "C", "D", "initial_state")


def tol(dtype: torch.dtype) -> dict[str, float]:
    """Tolerances of the comparisons with the reference loop (of the same dtype). In float32 they hold
    for 1024 steps too, well inside mamba_ssm's bound for long scans (rtol 6e-4, atol 2e-3)."""
    return Tolerance().kwargs(dtype, long=False)


def make_inputs(
    seed: int,
    batch: int,
    seq_len: int,
    d_inner: int,
    d_state: int,
    *,
    selective: bool = True,
    with_D: bool = True,
    with_h0: bool = True,
    dtype: torch.dtype = torch.float64,
    delta_scale: float = 1.0,
) -> dict[str, torch.Tensor | None]:
    """Scan inputs as a Mamba block makes them: softplus step sizes, A = -exp(A_log) < 0."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    coef_shape = (batch, seq_len, d_state) if selective else (d_inner, d_state)
    inputs = {
        "u": randn(batch, seq_len, d_inner),
        "delta": F.softplus(randn(batch, seq_len, d_inner) - 1.0) * delta_scale,
        "A": -torch.exp(0.5 * randn(d_inner, d_state)),
        "B": randn(*coef_shape),
        "C": randn(*coef_shape),
        "D": randn(d_inner) if with_D else None,
        "initial_state": randn(batch, d_inner, d_state) if with_h0 else None,
    }
    return {k: None if v is None else v.to(dtype) for k, v in inputs.items()}


def run(fn, inputs: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """`(y, h_T)` of `fn` and the gradients of a random projection of both w.r.t. every input."""
    leaves = {k: None if v is None else v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y, h = fn(*(leaves[k] for k in NAMES))
    gen = torch.Generator().manual_seed(seed + 1)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    gh = torch.randn(h.shape, generator=gen, dtype=torch.float64).to(h.dtype)
    present = [k for k in NAMES if leaves[k] is not None]
    grads = torch.autograd.grad((y * gy).sum() + (h * gh).sum(), [leaves[k] for k in present])
    return y.detach(), h.detach(), dict(zip(present, grads, strict=True))


def assert_matches_reference(inputs: dict, seed: int) -> None:
    dtype = inputs["u"].dtype
    y, h, grads = run(selective_scan_numba, inputs, seed)
    y_ref, h_ref, grads_ref = run(selective_scan, inputs, seed)
    t = tol(dtype)
    assert_close("y", y_ref, y, time_dim=1, **t)
    assert_close("h_T", h_ref, h, **t)
    assert grads.keys() == grads_ref.keys()
    for name, g_ref in grads_ref.items():
        assert grads[name].dtype == dtype and grads[name].shape == g_ref.shape
        assert_close(f"grad of {name}", g_ref, grads[name], **t)


# ---------------------------------------------------------------------- scan == reference
@settings(max_examples=EXAMPLES, deadline=None)
@given(
    seed=seeds(),
    batch=st.integers(1, 3),
    seq_len=st.integers(1, MAX_LEN),
    d_inner=st.integers(1, 8),
    d_state=st.integers(1, 8),
    selective=st.booleans(),
    with_D=st.booleans(),
    with_h0=st.booleans(),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
@example(
    seed=0,
    batch=1,
    seq_len=1,
    d_inner=1,
    d_state=1,
    selective=True,
    with_D=False,
    with_h0=False,
    dtype=torch.float64,
)
@example(
    seed=1,
    batch=3,
    seq_len=7,
    d_inner=5,
    d_state=3,
    selective=False,
    with_D=True,
    with_h0=True,
    dtype=torch.float64,
)
@example(
    seed=2,
    batch=2,
    seq_len=MAX_LEN,
    d_inner=8,
    d_state=8,
    selective=True,
    with_D=True,
    with_h0=True,
    dtype=torch.float32,
)
def test_scan_matches_reference(
    seed: int,
    batch: int,
    seq_len: int,
    d_inner: int,
    d_state: int,
    selective: bool,
    with_D: bool,
    with_h0: bool,
    dtype: torch.dtype,
) -> None:
    inputs = make_inputs(
        seed,
        batch,
        seq_len,
        d_inner,
        d_state,
        selective=selective,
        with_D=with_D,
        with_h0=with_h0,
        dtype=dtype,
    )
    assert_matches_reference(inputs, seed)


@pytest.mark.parametrize("selective", [True, False])
def test_long_float32_scan_matches_reference(selective: bool) -> None:
    """seq_len 1024 in float32."""
    inputs = make_inputs(3, 2, LONG_LEN, 8, 4, selective=selective, dtype=torch.float32)
    assert_matches_reference(inputs, 3)


@pytest.mark.parametrize("selective", [True, False])
def test_several_channel_blocks(selective: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 16 channels (3 work items per batch row, the last one padded)."""
    monkeypatch.setattr(numba_scan, "_MAX_BLOCK", 16)
    inputs = make_inputs(4, 2, 9, 40, 3, selective=selective)
    assert_matches_reference(inputs, 4)


def test_non_contiguous_inputs() -> None:
    inputs = make_inputs(5, 2, 6, 4, 3)
    inputs["u"] = inputs["u"].transpose(0, 1).contiguous().transpose(0, 1)  # (B, L, D) view, strided
    inputs["A"] = inputs["A"].t().contiguous().t()
    assert not inputs["u"].is_contiguous() and not inputs["A"].is_contiguous()
    assert_matches_reference(inputs, 5)


# ---------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("selective", [True, False])
def test_gradcheck(selective: bool) -> None:
    inputs = make_inputs(6, 2, 5, 3, 2, selective=selective)
    args = tuple(inputs[k].detach().clone().requires_grad_() for k in NAMES)
    assert torch.autograd.gradcheck(selective_scan_numba, args, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_without_D_and_initial_state() -> None:
    inputs = make_inputs(7, 2, 4, 3, 2, with_D=False, with_h0=False)
    args = tuple(inputs[k].detach().clone().requires_grad_() for k in ("u", "delta", "A", "B", "C"))
    assert torch.autograd.gradcheck(selective_scan_numba, args, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_no_grad_path_equals_grad_path() -> None:
    inputs = make_inputs(8, 2, 6, 4, 3)
    args = [inputs[k] for k in NAMES]
    with torch.no_grad():
        y0, h0 = selective_scan_numba(*args)
    assert y0.grad_fn is None and not y0.requires_grad
    y1, h1 = selective_scan_numba(*(a.clone().requires_grad_() for a in args))
    assert y1.grad_fn is not None
    assert torch.equal(y0, y1.detach()) and torch.equal(h0, h1.detach())


# ---------------------------------------------------------------------- step
@settings(max_examples=EXAMPLES, deadline=None)
@given(
    seed=seeds(),
    batch=st.integers(1, 3),
    d_inner=st.integers(1, 8),
    d_state=st.integers(1, 8),
    selective=st.booleans(),
    with_D=st.booleans(),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_step_matches_reference(
    seed: int, batch: int, d_inner: int, d_state: int, selective: bool, with_D: bool, dtype: torch.dtype
) -> None:
    x = make_inputs(seed, batch, 1, d_inner, d_state, selective=selective, with_D=with_D, dtype=dtype)
    # B, C: (batch, 1, d_state) selective, (d_inner, d_state) LTI: the step's shapes
    args = (x["u"][:, 0], x["delta"][:, 0], x["A"], x["B"], x["C"], x["D"], x["initial_state"])
    y, h = selective_scan_step_numba(*args)
    y_ref, h_ref = selective_scan_step(*args)
    assert y.shape == (batch, d_inner) and h.shape == (batch, d_inner, d_state)
    assert_close("y_t", y_ref, y, **tol(dtype))
    assert_close("h_t", h_ref, h, **tol(dtype))


def test_steps_equal_scan() -> None:
    x = make_inputs(9, 2, 7, 5, 4)
    y_scan, h_scan = selective_scan_numba(*(x[k] for k in NAMES))
    h = x["initial_state"]
    for t in range(7):
        y_t, h = selective_scan_step_numba(
            x["u"][:, t], x["delta"][:, t], x["A"], x["B"][:, t : t + 1], x["C"][:, t : t + 1], x["D"], h
        )
        assert_close(f"y at t={t}", y_scan[:, t], y_t, **tol(torch.float64))
    assert_close("h_T", h_scan, h, **tol(torch.float64))


# ---------------------------------------------------------------------- precision and extremes
@pytest.mark.parametrize("selective", [True, False])
def test_float32_close_to_float64(selective: bool) -> None:
    """The float32 kernel stays within 1e-5 (relative, in norm) of the float64 kernel."""
    size = (2, 32, 8, 4) if NO_JIT else (4, 256, 64, 16)
    x64 = make_inputs(10, *size, selective=selective)
    x32 = {k: v.float() for k, v in x64.items()}
    y64, h64 = selective_scan_numba(*(x64[k] for k in NAMES))
    y32, h32 = selective_scan_numba(*(x32[k] for k in NAMES))
    for name, a, b in (("y", y32, y64), ("h_T", h32, h64)):
        rel = float((a.double() - b).norm() / b.norm())
        assert rel < 1e-5, f"{name}: float32 relative error {rel:.2e} against float64"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scale", [1e3, 1e8])
def test_large_delta_gives_no_nan(dtype: torch.dtype, scale: float) -> None:
    """Huge step sizes: exp(delta A) underflows to 0 (no NaN from 0 * inf), gradients stay finite."""
    inputs = make_inputs(11, 2, 6, 4, 3, dtype=dtype, delta_scale=scale)
    y, h, grads = run(selective_scan_numba, inputs, 11)
    for name, value in {"y": y, "h_T": h, **grads}.items():
        assert torch.isfinite(value).all(), f"{name} is not finite"
    y_ref, h_ref, _ = run(selective_scan, inputs, 11)
    assert_close("y", y_ref, y, **tol(dtype))
    assert_close("h_T", h_ref, h, **tol(dtype))


def test_nan_propagates() -> None:
    inputs = make_inputs(12, 1, 4, 3, 2)
    inputs["A"][1, 0] = float("nan")
    y, h = selective_scan_numba(*(inputs[k] for k in NAMES))
    assert torch.isnan(y[0, :, 1]).all() and torch.isnan(h[0, 1, 0])
    assert torch.isfinite(y[0, :, 0]).all() and torch.isfinite(y[0, :, 2]).all()


# ---------------------------------------------------------------------- argument checks
def test_errors() -> None:
    x = make_inputs(13, 2, 3, 4, 2)
    args = [x[k] for k in NAMES]

    def call(**changes):
        kwargs = dict(zip(NAMES, args, strict=True)) | changes
        return selective_scan_numba(*(kwargs[k] for k in NAMES))

    with pytest.raises(TypeError, match="float32 or float64"):
        call(u=x["u"].half())
    with pytest.raises(TypeError, match="use one dtype"):
        call(A=x["A"].float())
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        call(u=x["u"].numpy())
    with pytest.raises(ValueError, match="CPU only"):
        call(D=torch.empty(4, dtype=torch.float64, device="meta"))
    with pytest.raises(ValueError, match=r"delta must have shape"):
        call(delta=x["delta"][:, :2])
    with pytest.raises(ValueError, match=r"A must have shape \(d_inner, d_state\)"):
        call(A=x["A"][:3])
    with pytest.raises(ValueError, match="both selective|both have shape"):
        call(C=x["C"][0, 0].expand(4, 2).contiguous())
    with pytest.raises(ValueError, match=r"initial_state must have shape"):
        call(initial_state=x["initial_state"][:1])
    with pytest.raises(ValueError, match=r"u must have shape"):
        call(u=x["u"][:, :0], delta=x["delta"][:, :0], B=x["B"][:, :0], C=x["C"][:, :0])
    with pytest.raises(ValueError, match=r"B_t and C_t must both have shape"):
        selective_scan_step_numba(
            x["u"][:, 0], x["delta"][:, 0], x["A"], x["B"], x["C"], x["D"], x["initial_state"]
        )
