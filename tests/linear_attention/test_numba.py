"""The Numba kernels of linear attention and retention (`seqmem.linear_attention.numba_scan`).

Outputs, final states and every gradient (q, k, v, S_0, z_0) against the reference loop differentiated by
autograd, in float64 (1e-10) and float32 (the suite's tolerance); gradcheck of the hand-derived backward;
the step; argument checks. Under `NUMBA_DISABLE_JIT=1` the kernels run as Python: sizes shrink.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from seqmem.linear_attention.numba_scan import linear_attention_numba, linear_attention_step_numba
from seqmem.linear_attention.reference import elu_feature_map, linear_attention_recurrent, linear_attention_step
from seqmem.testing import assert_close, seeds

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
MAX_LEN = 6 if NO_JIT else 30
LONG_LEN = 32 if NO_JIT else 512
F64, F32 = torch.float64, torch.float32
NAMES = ("q", "k", "v", "S0", "z0")

# (batch, n_heads, seq_len, d_k, d_v)
shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, MAX_LEN), st.integers(1, 4),
                   st.integers(1, 4))


def make_inputs(seed: int, B: int, H: int, T: int, dk: int, dv: int, *, normalize: bool, decay: bool,
                dtype: torch.dtype = F64) -> dict[str, torch.Tensor | None]:
    """Positive features (as elu+1 makes them) with a normaliser, raw ones without; a non-zero state."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64)

    q, k = randn(B, H, T, dk), randn(B, H, T, dk)
    if normalize:
        q, k = elu_feature_map(q), elu_feature_map(k)
    inputs = {
        "q": q, "k": k, "v": randn(B, H, T, dv), "S0": randn(B, H, dk, dv),
        "z0": elu_feature_map(randn(B, H, dk)) if normalize else None,
        "gamma": 0.3 + 0.7 * torch.rand(H, generator=gen, dtype=F64) if decay else None,
    }
    return {name: None if t is None else t.to(dtype) for name, t in inputs.items()}


def run(fn, inputs: dict, normalize: bool, seed: int):
    """`(o, S_T, z_T)` of `fn` and the gradients of a random projection of all three w.r.t. q, k, v, S0, z0."""
    leaves = {n: None if inputs[n] is None else inputs[n].clone().requires_grad_() for n in NAMES}
    o, (S, z) = fn(leaves["q"], leaves["k"], leaves["v"], inputs["gamma"], normalize=normalize,
                   initial_state=(leaves["S0"], leaves["z0"]))
    outs = [o, S] + ([z] if normalize else [])
    gen = torch.Generator().manual_seed(seed + 1)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=F64).to(t.dtype)).sum() for t in outs)
    present = [n for n in NAMES if leaves[n] is not None]
    grads = torch.autograd.grad(loss, [leaves[n] for n in present])
    return [t.detach() for t in outs], dict(zip(present, grads, strict=True))


def assert_parity(inputs: dict, normalize: bool, seed: int, dtype: torch.dtype, long: bool = False) -> None:
    outs_ref, grads_ref = run(linear_attention_recurrent, inputs, normalize, seed)
    outs, grads = run(linear_attention_numba, inputs, normalize, seed)
    for name, e, a in zip(("o", "S", "z"), outs_ref, outs):
        assert_close(name, e, a, dtype=dtype, long=long)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert_close(f"d/d{name}", grads_ref[name], grads[name], dtype=dtype, long=long)


@given(shape=shapes, normalize=st.booleans(), decay=st.booleans(), seed=seeds(), dtype=st.sampled_from([F64, F32]))
@example(shape=(1, 1, 1, 1, 1), normalize=True, decay=False, seed=0, dtype=F64)
@example(shape=(1, 1, 1, 1, 1), normalize=False, decay=True, seed=0, dtype=F32)
@example(shape=(3, 2, 7, 4, 3), normalize=True, decay=True, seed=1, dtype=F32)
def test_matches_the_reference(shape, normalize, decay, seed, dtype) -> None:
    inputs = make_inputs(seed, *shape, normalize=normalize, decay=decay, dtype=dtype)
    assert_parity(inputs, normalize, seed, dtype)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("normalize", [True, False])
def test_long_sequence(dtype, normalize) -> None:
    inputs = make_inputs(3, 2, 2, LONG_LEN, 4, 4, normalize=normalize, decay=True, dtype=dtype)
    assert_parity(inputs, normalize, 3, dtype, long=True)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("decay", [True, False])
def test_gradcheck(normalize, decay) -> None:
    """The hand-derived backward against finite differences, float64, every differentiable input."""
    inputs = make_inputs(5, 2, 2, 5, 3, 2, normalize=normalize, decay=decay)
    leaves = [inputs[n].clone().requires_grad_() for n in NAMES if inputs[n] is not None]

    def fn(*args):
        q, k, v, S0 = args[:4]
        z0 = args[4] if normalize else None
        o, (S, z) = linear_attention_numba(q, k, v, inputs["gamma"], normalize=normalize, initial_state=(S0, z0))
        return (o, S, z) if normalize else (o, S)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("normalize", [True, False])
def test_step(normalize) -> None:
    inputs = make_inputs(6, 2, 3, 1, 3, 2, normalize=normalize, decay=True)
    args = [inputs[n][:, :, 0] for n in ("q", "k", "v")]
    state = (inputs["S0"], inputs["z0"])
    o_ref, (S_ref, z_ref) = linear_attention_step(*args, state, inputs["gamma"])
    o, (S, z) = linear_attention_step_numba(*args, state, inputs["gamma"])
    assert_close("o", o_ref, o)
    assert_close("S", S_ref, S)
    if normalize:
        assert_close("z", z_ref, z)
    else:
        assert z is None


def test_no_grad_path_and_zero_state() -> None:
    """Without grad the kernel runs outside autograd; without a state it starts from zeros."""
    inputs = make_inputs(7, 2, 2, 6, 3, 3, normalize=True, decay=False)
    with torch.no_grad():
        o, (S, z) = linear_attention_numba(inputs["q"], inputs["k"], inputs["v"])
    o_ref, (S_ref, z_ref) = linear_attention_recurrent(inputs["q"], inputs["k"], inputs["v"])
    assert not o.requires_grad
    assert_close("o", o_ref, o)
    assert_close("S", S_ref, S)
    assert_close("z", z_ref, z)


def test_bad_arguments() -> None:
    q = torch.rand(2, 2, 5, 3, dtype=F64)
    v = torch.rand(2, 2, 5, 4, dtype=F64)
    with pytest.raises(TypeError, match="dtype"):
        linear_attention_numba(q, q.float(), v)
    with pytest.raises(ValueError, match="k must have shape"):
        linear_attention_numba(q, q[:, :, :4], v)
    with pytest.raises(ValueError, match="gamma must have shape"):
        linear_attention_numba(q, q, v, torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="S must have shape"):
        linear_attention_numba(q, q, v, initial_state=(torch.zeros(2, 2, 3, 3, dtype=F64), torch.zeros(2, 2, 3, dtype=F64)))
    with pytest.raises(TypeError, match="float32 or float64"):
        linear_attention_numba(q.half(), q.half(), v.half())
