"""Tests of the Numba kernels of minGRU and minLSTM (`seqmem.minrnn.numba_scan`) against the sequential form.

Outputs, final states and the gradients of the pre-activations and of the initial state are compared with
`seqmem.minrnn.reference` differentiated by autograd; gradcheck checks the hand-derived backward (eq. (6))
in float64. Under `NUMBA_DISABLE_JIT=1` the kernels run as Python: sizes shrink.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import seqmem
from seqmem.minrnn.numba_scan import mingru_scan_numba, mingru_step_numba, minlstm_scan_numba, minlstm_step_numba
from seqmem.minrnn.reference import mingru_recurrent, mingru_step, minlstm_recurrent, minlstm_step
from seqmem.testing import assert_close, seeds

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
MAX_T = 6 if NO_JIT else 40
MAX_H = 5 if NO_JIT else 300  # above the kernels' block of 256 units
LONG_T = 64 if NO_JIT else 1024

# name: (gates per unit, sequential scan, its step, numba scan, numba step)
FORMS = {
    "mingru": (2, mingru_recurrent, mingru_step, mingru_scan_numba, mingru_step_numba),
    "minlstm": (3, minlstm_recurrent, minlstm_step, minlstm_scan_numba, minlstm_step_numba),
}


def tol(dtype: torch.dtype) -> dict[str, float]:
    """float64: 1e-10; float32: the suite's short-scan tolerance (both forms are sequential, in float32)."""
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}


def inputs(seed: int, B: int, T: int, H: int, G: int, scale: float, h0: str, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(seed)
    gates = (torch.randn(B, T, G * H, generator=gen, dtype=torch.float64) * scale).to(dtype)
    state = {
        "none": None,
        "positive": torch.rand(B, H, generator=gen, dtype=torch.float64) * 3,
        "any": torch.randn(B, H, generator=gen, dtype=torch.float64) * 3,  # the kernels take any real h_0
    }[h0]
    return gates, None if state is None else state.to(dtype)


def run(scan, gates: torch.Tensor, h0: torch.Tensor | None, seed: int):
    """`(h, h_T)` of `scan` and the gradients of a random projection of both w.r.t. `gates` (and `h0`)."""
    k = gates.detach().clone().requires_grad_(True)
    s = None if h0 is None else h0.detach().clone().requires_grad_(True)
    h, h_T = scan(k, s)
    gen = torch.Generator().manual_seed(seed + 1)
    gy = torch.randn(h.shape, generator=gen, dtype=torch.float64).to(h.dtype)
    gT = torch.randn(h_T.shape, generator=gen, dtype=torch.float64).to(h.dtype)
    grads = torch.autograd.grad((h * gy).sum() + (h_T * gT).sum(), [k] if s is None else [k, s])
    return h.detach(), h_T.detach(), grads


@pytest.mark.parametrize("name", list(FORMS))
@given(
    sizes=st.tuples(st.integers(1, 4), st.integers(1, MAX_T), st.integers(1, MAX_H)),
    scale=st.sampled_from([0.5, 2.0, 8.0]),
    h0=st.sampled_from(["none", "positive", "any"]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    seed=seeds(),
)
@example(sizes=(1, 1, 1), scale=1.0, h0="positive", dtype=torch.float64, seed=0)  # T = 1, batch 1, size 1
@example(sizes=(1, 1, 1), scale=1.0, h0="none", dtype=torch.float32, seed=0)
@example(sizes=(2, 9, 3), scale=200.0, h0="any", dtype=torch.float32, seed=1)  # saturated: every gate rounds
@example(sizes=(3, 5, 257), scale=1.0, h0="positive", dtype=torch.float64, seed=2)  # two blocks of units
def test_scan_matches_reference(name: str, sizes, scale: float, h0: str, dtype: torch.dtype, seed: int) -> None:
    """Outputs, final state and every gradient equal the sequential form's (autograd)."""
    G, recurrent, _, scan, _ = FORMS[name]
    B, T, H = sizes
    gates, state = inputs(seed, B, T, H, G, scale, h0, dtype)
    h_r, hT_r, g_r = run(recurrent, gates, state, seed)
    h_n, hT_n, g_n = run(scan, gates, state, seed)
    assert h_n.dtype == dtype
    assert_close("h", h_r, h_n, **tol(dtype))
    assert_close("h_T", hT_r, hT_n, **tol(dtype))
    for what, a, b in zip(("d gates", "d h_0"), g_r, g_n, strict=False):
        assert bool(b.isfinite().all()), what
        assert_close(what, a, b, **tol(dtype))


@pytest.mark.parametrize("name", list(FORMS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_long_scan(name: str, dtype: torch.dtype) -> None:
    G, recurrent, _, scan, _ = FORMS[name]
    gates, state = inputs(4, 2, LONG_T, 16, G, 2.0, "positive", dtype)
    h_r, hT_r, g_r = run(recurrent, gates, state, 4)
    h_n, hT_n, g_n = run(scan, gates, state, 4)
    long = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 6e-4, "atol": 2e-3}
    assert_close("h", h_r, h_n, **long)
    for what, a, b in zip(("d gates", "d h_0"), g_r, g_n, strict=True):
        assert_close(what, a, b, **long)


@pytest.mark.parametrize("name", list(FORMS))
@given(sizes=st.tuples(st.integers(1, 4), st.integers(1, 9)), seed=seeds())
@example(sizes=(1, 1), seed=0)
def test_step_matches_reference(name: str, sizes, seed: int) -> None:
    """The serial step kernel (no grad) and the differentiable step equal the reference step."""
    G, _, step, _, step_numba = FORMS[name]
    B, H = sizes
    for dtype in (torch.float64, torch.float32):
        gates, h = inputs(seed, B, 1, H, G, 3.0, "any", dtype)
        gates = gates[:, 0]
        with torch.no_grad():
            assert_close("step", step(gates, h), step_numba(gates, h), **tol(dtype))
        k = gates.clone().requires_grad_(True)
        out = step_numba(k, h)
        assert out.requires_grad
        (dk,) = torch.autograd.grad(out.sum(), k)
        k_ref = gates.clone().requires_grad_(True)
        (dk_ref,) = torch.autograd.grad(step(k_ref, h).sum(), k_ref)
        assert_close("d gates", dk_ref, dk, **tol(dtype))


@pytest.mark.parametrize("name", list(FORMS))
@pytest.mark.parametrize("with_h0", [True, False])
def test_gradcheck(name: str, with_h0: bool) -> None:
    """The hand-derived backward (6) against finite differences, float64 (pre-activations away from g's kink at 0)."""
    G, _, _, scan, step_numba = FORMS[name]
    gen = torch.Generator().manual_seed(11)
    gates = torch.randn(2, 5, G * 3, generator=gen, dtype=torch.float64) * 2
    gates = (gates + 0.1 * gates.sign()).requires_grad_(True)
    h0 = (torch.rand(2, 3, generator=gen, dtype=torch.float64) * 2).requires_grad_(with_h0)
    assert torch.autograd.gradcheck(lambda k, s: scan(k, s), (gates, h0))
    assert torch.autograd.gradcheck(lambda k: scan(k)[0], (gates,))
    assert torch.autograd.gradcheck(lambda k, s: step_numba(k, s), (gates[:, 0].detach().requires_grad_(True), h0))


def test_normalised_gates_do_not_underflow() -> None:
    """Both of minLSTM's sigmoids underflow in float32 below -104: f' = f / (f + i) would be 0/0; eq. (5) is not."""
    gates = torch.tensor([[[-300.0, -310.0, 1.0]]])  # [k_i | k_f | k_h]: f' = sigma(log f - log i) ~ e^-10
    h0 = torch.tensor([[2.0]])
    h, _ = minlstm_scan_numba(gates, h0)
    expected, _ = minlstm_recurrent(gates.double(), h0.double())
    assert bool(h.isfinite().all())
    assert_close("h", expected, h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(FORMS))
def test_bad_arguments(name: str) -> None:
    G, _, _, scan, step_numba = FORMS[name]
    where = f"{name}_scan_numba"
    with pytest.raises(TypeError, match=f"{where}: gates must be a torch.Tensor"):
        scan([[1.0]])
    with pytest.raises(TypeError, match="float32 or float64"):
        scan(torch.zeros(1, 2, G, dtype=torch.int64))
    with pytest.raises(TypeError, match="has dtype torch.float32 but gates has torch.float64"):
        scan(torch.zeros(1, 2, G, dtype=torch.float64), torch.zeros(1, 1))
    with pytest.raises(ValueError, match=rf"\(batch, seq_len, {G} \* hidden_size\)"):
        scan(torch.zeros(1, 2, G + 1))
    with pytest.raises(ValueError, match="with batch, seq_len"):
        scan(torch.zeros(1, 0, G))
    with pytest.raises(ValueError, match=r"initial_state must have shape \(batch, hidden_size\) = \(1, 1\)"):
        scan(torch.zeros(1, 2, G), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=rf"gates_t must have shape \(batch, {G} \* hidden_size\)"):
        step_numba(torch.zeros(1, 2 * G), torch.zeros(1, 1))
    with pytest.raises(TypeError, match="h must be a torch.Tensor"):
        step_numba(torch.zeros(1, G), None)


@pytest.mark.parametrize("name", list(FORMS))
def test_module_backends_agree_on_any_state(name: str) -> None:
    """A negative state (which only a user builds): numba's kernels and torch's sequential fallback agree."""
    model = seqmem.build(name, 3, 4).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    state = seqmem.MinRNNState(-torch.rand(2, 4, dtype=torch.float64))
    y_torch, s_torch = model(x, state)
    model.backend = "numba"
    y_numba, s_numba = model(x, state)
    assert_close("y", y_torch, y_numba, rtol=1e-10, atol=1e-12)
    assert_close("h_T", s_torch.h, s_numba.h, rtol=1e-10, atol=1e-12)
