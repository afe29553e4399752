"""Tests of the Numba RG-LRU (`seqmem.griffin.numba_scan`) against the reference loop, and of the models on it.

Outputs, final states and every gradient (of x, both gates' pre-activations, Lambda and the initial
state) are compared with `seqmem.griffin.reference.rglru` differentiated by autograd; gradcheck checks
the hand-derived backward in float64. Under `NUMBA_DISABLE_JIT=1` the kernels run as Python: sizes shrink.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from seqmem import Griffin, Hawk
from seqmem.griffin.numba_scan import rglru_numba, rglru_step_numba
from seqmem.griffin.reference import rglru, rglru_step
from seqmem.testing import assert_close, check_backend_parity, seeds

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
MAX_LEN = 8 if NO_JIT else 48
EXAMPLES = 4 if NO_JIT else max(15, settings.default.max_examples)
LONG_LEN = 64 if NO_JIT else 1024
NAMES = ("x", "gate_a", "gate_x", "Lambda", "initial_state")


def tol(dtype: torch.dtype, seq_len: int = 1) -> dict[str, float]:
    """float64: tight; float32: tighter for short scans, mamba's bound (6e-4, 2e-3) for long ones."""
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-12}
    return {"rtol": 1e-4, "atol": 2e-5} if seq_len <= 64 else {"rtol": 6e-4, "atol": 2e-3}


def make_inputs(seed: int, batch: int, seq_len: int, d: int, *, with_h0: bool = True,
                dtype: torch.dtype = torch.float64, gate_scale: float = 2.0) -> dict[str, torch.Tensor | None]:
    """Inputs as a recurrent block makes them: pre-activations of order one, Lambda where a^c in (0.1, 1)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    inputs = {
        "x": randn(batch, seq_len, d),
        "gate_a": randn(batch, seq_len, d) * gate_scale,
        "gate_x": randn(batch, seq_len, d) * gate_scale,
        "Lambda": randn(d) * 2 + 3,
        "initial_state": randn(batch, d) if with_h0 else None,
    }
    return {k: None if v is None else v.to(dtype) for k, v in inputs.items()}


def run(fn, inputs: dict, seed: int, c: float = 8.0):
    """`(y, h_T)` of `fn` and the gradients of a random projection of both with respect to every input."""
    leaves = {k: None if v is None else v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y, h = fn(leaves["x"], leaves["gate_a"], leaves["gate_x"], leaves["Lambda"], c,
              initial_state=leaves["initial_state"])
    gen = torch.Generator().manual_seed(seed + 1)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    gh = torch.randn(h.shape, generator=gen, dtype=torch.float64).to(h.dtype)
    present = [k for k in NAMES if leaves[k] is not None]
    grads = torch.autograd.grad((y * gy).sum() + (h * gh).sum(), [leaves[k] for k in present])
    return y.detach(), h.detach(), dict(zip(present, grads, strict=True))


def assert_matches_reference(inputs: dict, seed: int, c: float = 8.0) -> None:
    dtype, T = inputs["x"].dtype, inputs["x"].shape[1]
    y, h, grads = run(rglru_numba, inputs, seed, c)
    y_ref, h_ref, grads_ref = run(rglru, inputs, seed, c)
    t = tol(dtype, T)
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
    d=st.integers(1, 40),
    with_h0=st.booleans(),
    c=st.sampled_from([8.0, 1.0]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
@example(seed=0, batch=1, seq_len=1, d=1, with_h0=False, c=8.0, dtype=torch.float64)  # every size 1
@example(seed=1, batch=3, seq_len=7, d=33, with_h0=True, c=8.0, dtype=torch.float64)  # channels split in blocks
@example(seed=2, batch=2, seq_len=MAX_LEN, d=5, with_h0=True, c=8.0, dtype=torch.float32)
def test_scan_matches_reference(seed, batch, seq_len, d, with_h0, c, dtype) -> None:
    assert_matches_reference(make_inputs(seed, batch, seq_len, d, with_h0=with_h0, dtype=dtype), seed, c)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_long_scan_matches_reference(dtype: torch.dtype) -> None:
    """Rounding accumulates over 1024 steps: float32 stays within mamba's bound for long scans."""
    assert_matches_reference(make_inputs(3, 2, LONG_LEN, 6, dtype=dtype), 3)


def test_saturated_gates_match_reference() -> None:
    """Pre-activations of +-30: gates at 0 or 1 to within 1e-13, a_t close to 1 and sqrt(1 - a_t^2) tiny."""
    assert_matches_reference(make_inputs(4, 2, 20, 7, gate_scale=30.0), 4)


# ---------------------------------------------------------------------- the hand-derived backward
@pytest.mark.parametrize("with_h0", [True, False])
def test_gradcheck(with_h0: bool) -> None:
    inputs = make_inputs(5, 2, 6 if NO_JIT else 9, 4, with_h0=with_h0)
    names = [k for k in NAMES if inputs[k] is not None]
    leaves = [inputs[k].requires_grad_() for k in names]

    def fn(*args):
        named = dict(zip(names, args, strict=True))
        return rglru_numba(named["x"], named["gate_a"], named["gate_x"], named["Lambda"], 8.0,
                           initial_state=named.get("initial_state"))

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_of_the_step() -> None:
    inputs = make_inputs(6, 3, 1, 5)
    args = [inputs[k][:, 0].requires_grad_() for k in ("x", "gate_a", "gate_x")]
    lam, h = inputs["Lambda"].requires_grad_(), inputs["initial_state"].requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c_, l_, h_: rglru_step_numba(a, b, c_, l_, 8.0, h_)[0],
                                    (*args, lam, h))


def test_only_needed_gradients() -> None:
    """A gradient for the gates only: no initial state given, x and Lambda constants."""
    inputs = make_inputs(7, 2, 5, 3, with_h0=False)
    ga = inputs["gate_a"].requires_grad_()
    y, _ = rglru_numba(inputs["x"], ga, inputs["gate_x"], inputs["Lambda"])
    (g,) = torch.autograd.grad(y.sum(), ga)
    y_ref, _ = rglru(inputs["x"], ga, inputs["gate_x"], inputs["Lambda"])
    (g_ref,) = torch.autograd.grad(y_ref.sum(), ga)
    assert_close("grad of gate_a", g_ref, g)


def test_gradient_at_the_singular_point_is_its_limit() -> None:
    """r_t underflows to 0: sqrt(1 - a_t^2) = 0 has an infinite derivative, but the gradients reaching
    gate_a and Lambda have the limit 0; the kernel gives 0 where autograd through the torch form gives NaN."""
    inputs = make_inputs(8, 1, 4, 3)
    inputs["gate_a"][:, 1] = -800.0  # sigmoid(-800) = 0 exactly in float64
    _, _, grads = run(rglru_numba, inputs, 8)
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
    assert (grads["gate_a"][:, 1] == 0).all()
    _, _, g_torch = run(rglru, inputs, 8)
    assert torch.isnan(g_torch["gate_a"][:, 1]).all()  # inf * 0 in autograd's chain
    # the limit: the gradient just before the underflow is already tiny, and the other steps agree
    near = {k: v.clone() for k, v in inputs.items()}
    near["gate_a"][:, 1] = -700.0
    _, _, g_near = run(rglru, near, 8)
    assert g_near["gate_a"][:, 1].abs().max() < 1e-100
    assert_close("grad of gate_a elsewhere", g_near["gate_a"][:, [0, 2, 3]], grads["gate_a"][:, [0, 2, 3]])
    assert_close("grad of Lambda", g_near["Lambda"], grads["Lambda"])


def test_parallel_kernels_equal_serial(monkeypatch) -> None:
    """The parallel twins (one sequence per thread, for large batches) compute what the serial ones do,
    to the bit: each sequence runs the same operations in the same order."""
    from seqmem.griffin import numba_scan

    inputs = make_inputs(10, 4, 12, 9)
    serial = run(rglru_numba, inputs, 10)
    calls = []

    def launch(serial_kernel, parallel_kernel, *args):
        calls.append(parallel_kernel)
        parallel_kernel(*args)

    monkeypatch.setattr(numba_scan, "_launch", launch)
    parallel = run(rglru_numba, inputs, 10)
    assert calls == [numba_scan._forward_parallel, numba_scan._backward_parallel]
    assert torch.equal(serial[0], parallel[0]) and torch.equal(serial[1], parallel[1])
    for name in serial[2]:
        assert torch.equal(serial[2][name], parallel[2][name]), name


# ---------------------------------------------------------------------- the step
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_step_matches_reference(dtype: torch.dtype) -> None:
    inputs = make_inputs(9, 3, 1, 20, dtype=dtype)
    args = (inputs["x"][:, 0], inputs["gate_a"][:, 0], inputs["gate_x"][:, 0], inputs["Lambda"], 8.0,
            inputs["initial_state"])
    with torch.no_grad():
        y, h = rglru_step_numba(*args)
    y_ref, _ = rglru_step(*args)
    assert y is h and y.dtype == dtype
    assert_close("h_t", y_ref, y)


# ---------------------------------------------------------------------- argument checks
def test_bad_arguments() -> None:
    x = torch.randn(2, 3, 4)
    good = {"x": x, "gate_a": x, "gate_x": x, "Lambda": torch.randn(4)}
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        rglru_numba(None, x, x, good["Lambda"])
    with pytest.raises(TypeError, match="dtype"):
        rglru_numba(x, x.double(), x, good["Lambda"])
    with pytest.raises(ValueError, match=r"gate_x must have shape \(batch, seq_len, d_rnn\)"):
        rglru_numba(x, x, x[:, :2], good["Lambda"])
    with pytest.raises(ValueError, match=r"Lambda must have shape \(d_rnn,\)"):
        rglru_numba(x, x, x, torch.randn(5))
    with pytest.raises(ValueError, match="initial_state"):
        rglru_numba(x, x, x, good["Lambda"], initial_state=torch.randn(3, 4))
    with pytest.raises(ValueError, match="sizes >= 1"):
        rglru_numba(x[:, :0], x[:, :0], x[:, :0], good["Lambda"])
    with pytest.raises(ValueError, match="c must be"):
        rglru_numba(x, x, x, good["Lambda"], c=-1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        rglru_numba(x.half(), x.half(), x.half(), good["Lambda"].half())
    with pytest.raises(TypeError, match="h must be"):
        rglru_step_numba(x[:, 0], x[:, 0], x[:, 0], good["Lambda"], 8.0, None)
    with pytest.raises(ValueError, match=r"h must have shape \(batch, d_rnn\)"):
        rglru_step_numba(x[:, 0], x[:, 0], x[:, 0], good["Lambda"], 8.0, torch.randn(2, 5))


# ---------------------------------------------------------------------- the models on the numba backend
@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: Hawk(5, n_layers=2, d_rnn=7), id="hawk"),
        pytest.param(lambda: Griffin(8, n_heads=2, n_layers=3, window=4), id="griffin"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_models_backend_parity(model, dtype: torch.dtype) -> None:
    """Outputs, states, a step and every gradient of the whole model on "numba" equal "torch"'s."""
    torch.manual_seed(0)
    m = model().to(dtype)
    x = torch.randn(3, 11, m.input_size, dtype=dtype)
    check_backend_parity(m, x, backends=("numba",))
    m.backend = "numba"
    y, state = m(x)
    assert y.shape == x.shape and m.backend == "numba"
