"""The mLSTM: eqs. 19-21 by hand, the stabiliser, parallel == recurrent (also across chunks), the block."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import seqmem
from seqmem.mlstm import MLSTM
from seqmem.mlstm.module import _HeadwiseLinear
from seqmem.mlstm.parallel import mlstm_chunkwise, mlstm_parallel, segment_sum
from seqmem.mlstm.reference import log_forget_gate, mlstm_recurrent, mlstm_step, normaliser_floor
from seqmem.testing import assert_close, check_sequence_model, random_sequence
from tests.family_helpers import assert_forward_equals_steps, perturbed

F64, F32 = torch.float64, torch.float32

# (batch, n_heads, seq_len, d_k, d_v)
shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 20), st.integers(1, 4), st.integers(1, 4))
gate_scales = st.sampled_from([0.5, 3.0, 30.0, 300.0])


def cell_inputs(seed: int, B: int, H: int, T: int, dk: int, dv: int, gate_scale: float = 1.0, dtype=F64):
    """q, k (scaled by 1/sqrt(dk)), v, gate pre-activations of the given scale, and a non-zero state."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64)

    q, k, v = randn(B, H, T, dk), randn(B, H, T, dk) / math.sqrt(dk), randn(B, H, T, dv)
    i_pre, f_pre = gate_scale * randn(B, H, T), gate_scale * randn(B, H, T) + 2.0
    state = (randn(B, H, dv, dk), randn(B, H, dk), gate_scale * randn(B, H))
    cast = [t.to(dtype) for t in (q, k, v, i_pre, f_pre)]
    return (*cast, tuple(t.to(dtype) for t in state))


def assert_same(name: str, expected, actual, dtype=F64) -> None:
    (h1, (C1, n1, m1)), (h2, (C2, n2, m2)) = expected, actual
    for field, e, a in (("h", h1, h2), ("C", C1, C2), ("n", n1, n2), ("m", m1, m2)):
        assert_close(f"{name}: {field}", e, a, dtype=dtype)


# ---------------------------------------------------------------------- the equations by hand
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_reference_follows_the_unstabilised_equations(forget_gate: str) -> None:
    """Small gates: C_t = f C + i v k^T, n_t = f n + i k, h = C q / max(|n.q|, 1) (eqs. 19-21) without any
    stabiliser, against the reference, whose stored C, n are the true ones times exp(-m_t)."""
    q, k, v, i_pre, f_pre, _ = cell_inputs(0, 1, 2, 6, 3, 2)
    f_pre = f_pre - 2.5  # some f_t > 1 for the exponential gate, some < 1
    h, (C_s, n_s, m) = mlstm_recurrent(q, k, v, i_pre, f_pre, forget_gate=forget_gate)
    C, n = torch.zeros(1, 2, 2, 3, dtype=F64), torch.zeros(1, 2, 3, dtype=F64)
    for t in range(6):
        i = torch.exp(i_pre[:, :, t])  # eq. 25
        f = torch.sigmoid(f_pre[:, :, t]) if forget_gate == "sigmoid" else torch.exp(f_pre[:, :, t])  # eq. 26
        C = f[..., None, None] * C + i[..., None, None] * torch.einsum("bhv,bhk->bhvk", v[:, :, t], k[:, :, t])
        n = f[..., None] * n + i[..., None] * k[:, :, t]
        qt = q[:, :, t]
        den = torch.clamp((n * qt).sum(-1).abs(), min=1.0)
        assert_close(f"h at t={t}", torch.einsum("bhvk,bhk->bhv", C, qt) / den[..., None], h[:, :, t])
    assert_close("C = C_stored e^m", C, C_s * torch.exp(m)[..., None, None])
    assert_close("n = n_stored e^m", n, n_s * torch.exp(m)[..., None])


def test_stabiliser_by_hand() -> None:
    """m_t = max(log f_t + m_{t-1}, i~_t) (eq. 15), with i' = exp(i~ - m) and f' = exp(log f + m_prev - m)."""
    one = torch.ones(1, 1, 1, dtype=F64)
    state = (torch.zeros(1, 1, 1, 1, dtype=F64), torch.zeros(1, 1, 1, dtype=F64), torch.tensor([[0.5]], dtype=F64))
    i_pre, f_pre = torch.tensor([[3.0]], dtype=F64), torch.tensor([[0.0]], dtype=F64)  # log f = log(1/2)
    _, (C, n, m) = mlstm_step(one, one, one, i_pre, f_pre, state)
    assert m.item() == max(math.log(0.5) + 0.5, 3.0) == 3.0
    assert C.item() == n.item() == 1.0  # i' = exp(3 - 3)
    i_pre = torch.tensor([[-10.0]], dtype=F64)
    _, (C2, _, m2) = mlstm_step(one, one, 2 * one, i_pre, f_pre, (C, n, m))
    assert math.isclose(m2.item(), 3.0 + math.log(0.5), rel_tol=1e-15)  # the forget path wins
    assert math.isclose(C2.item(), 1.0 + math.exp(-10.0 - m2.item()) * 2.0, rel_tol=1e-15)  # f' = 1


def test_segment_sum() -> None:
    x = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=F64)
    S = segment_sum(x)
    for t in range(4):
        for s in range(4):
            assert S[t, s].item() == (sum(x[s + 1 : t + 1].tolist()) if s <= t else -math.inf)


def test_log_forget_gate_and_floor() -> None:
    f = torch.tensor([-1000.0, 0.0, 1000.0], dtype=F32)
    assert torch.equal(log_forget_gate(f, "exp"), f)
    logs = log_forget_gate(f, "sigmoid")
    assert logs.tolist() == [-1000.0, pytest.approx(math.log(0.5)), 0.0] and bool(logs.isfinite().all())
    floor = normaliser_floor(torch.tensor([-1e6, 0.0, 1e6], dtype=F32))
    assert bool(floor.isfinite().all()) and bool((floor > 0).all()) and floor[1].item() == 1.0
    with pytest.raises(ValueError, match="forget_gate"):
        log_forget_gate(f, "tanh")


# ---------------------------------------------------------------------- parallel == recurrent
@given(shape=shapes, scale=gate_scales, forget_gate=st.sampled_from(["sigmoid", "exp"]), init=st.booleans(),
       seed=st.integers(0, 2**16))
@example(shape=(1, 1, 1, 1, 1), scale=0.5, forget_gate="sigmoid", init=False, seed=0)
@example(shape=(2, 2, 16, 3, 2), scale=300.0, forget_gate="exp", init=True, seed=1)
def test_parallel_equals_recurrent(shape, scale, forget_gate, init, seed) -> None:
    """Outputs and the whole final state (C, n and the stabiliser m), float64 to 1e-10."""
    B, H, T, dk, dv = shape
    q, k, v, i_pre, f_pre, state = cell_inputs(seed, B, H, T, dk, dv, scale)
    state = state if init else None
    expected = mlstm_recurrent(q, k, v, i_pre, f_pre, forget_gate=forget_gate, initial_state=state)
    actual = mlstm_parallel(q, k, v, i_pre, f_pre, forget_gate=forget_gate, initial_state=state)
    assert_same("parallel", expected, actual)


@given(shape=shapes, scale=gate_scales, forget_gate=st.sampled_from(["sigmoid", "exp"]), chunk=st.integers(1, 25),
       seed=st.integers(0, 2**16))
@example(shape=(2, 2, 13, 3, 2), scale=30.0, forget_gate="sigmoid", chunk=4, seed=0)
def test_chunkwise_equals_recurrent(shape, scale, forget_gate, chunk, seed) -> None:
    B, H, T, dk, dv = shape
    q, k, v, i_pre, f_pre, state = cell_inputs(seed, B, H, T, dk, dv, scale)
    expected = mlstm_recurrent(q, k, v, i_pre, f_pre, forget_gate=forget_gate, initial_state=state)
    actual = mlstm_chunkwise(q, k, v, i_pre, f_pre, chunk_size=chunk, forget_gate=forget_gate, initial_state=state)
    assert_same(f"chunk_size={chunk}", expected, actual)


def test_the_stabiliser_must_travel_with_the_state() -> None:
    """Continuing from (C, n) with m reset to 0 gives other outputs: m is part of the state, not a detail."""
    q, k, v, i_pre, f_pre, _ = cell_inputs(3, 1, 2, 10, 3, 3, gate_scale=5.0)
    h, _ = mlstm_recurrent(q, k, v, i_pre, f_pre)
    _, (C, n, m) = mlstm_parallel(q[:, :, :5], k[:, :, :5], v[:, :, :5], i_pre[:, :, :5], f_pre[:, :, :5])
    rest = (q[:, :, 5:], k[:, :, 5:], v[:, :, 5:], i_pre[:, :, 5:], f_pre[:, :, 5:])
    assert_close("continued", h[:, :, 5:], mlstm_parallel(*rest, initial_state=(C, n, m))[0])
    assert bool((m.abs() > 1.0).all())
    wrong = mlstm_parallel(*rest, initial_state=(C, n, torch.zeros_like(m)))[0]
    assert not torch.allclose(wrong, h[:, :, 5:], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("scale", [100.0, 1000.0])
def test_large_gates_in_float32(forget_gate: str, scale: float) -> None:
    """Gate pre-activations of +-100 and +-1000: exp(i~) overflows float32 (inf from 89 on), the stabilised
    forms stay finite and agree with the float64 loop, outputs and gradients, over several chunks."""
    q, k, v, i_pre, f_pre, state = cell_inputs(4, 2, 2, 40, 4, 4, gate_scale=scale, dtype=F32)
    assert not bool(torch.exp(i_pre).isfinite().all())  # the naive gate overflows
    args64 = [t.double() for t in (q, k, v, i_pre, f_pre)]
    state64 = tuple(t.double() for t in state)
    expected = mlstm_recurrent(*args64, forget_gate=forget_gate, initial_state=state64)
    for name, fn in (("recurrent", mlstm_recurrent), ("parallel", mlstm_parallel)):
        got = fn(q, k, v, i_pre, f_pre, forget_gate=forget_gate, initial_state=state)
        assert bool(got[0].isfinite().all()) and all(bool(t.isfinite().all()) for t in got[1])
        h32, (C32, n32, m32) = got
        assert_close(f"{name}: h", expected[0], h32, dtype=F32)
        assert_close(f"{name}: m", expected[1][2], m32, dtype=F32)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    h, (C, n, m) = mlstm_chunkwise(*leaves, i_pre, f_pre, chunk_size=7, forget_gate=forget_gate,
                                   initial_state=state)
    grads = torch.autograd.grad(h.sum() + C.sum() + n.sum(), leaves)
    assert all(bool(g.isfinite().all()) for g in grads)


@pytest.mark.parametrize("fn", [mlstm_recurrent, mlstm_parallel])
def test_vanishing_memory_in_float32(fn) -> None:
    """Gates that forget everything (log f = -100, i~ = -1000): m_t falls by 100 a step, e^{-m_t} leaves float32
    after one step; outputs and every gradient stay finite (the floor is clamped, not inf)."""
    q, k, v, _, _, _ = cell_inputs(6, 1, 2, 6, 3, 3, dtype=F32)
    i_pre = torch.full((1, 2, 6), -1000.0, requires_grad=True)
    f_pre = torch.full((1, 2, 6), -100.0, requires_grad=True)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    h, (C, n, m) = fn(*leaves, i_pre, f_pre, forget_gate="exp")
    assert m[0, 0].item() == -600.0
    assert bool(h.isfinite().all())
    grads = torch.autograd.grad(h.sum() + n.sum(), [*leaves, i_pre, f_pre])
    assert all(bool(g.isfinite().all()) for g in grads)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_gradients_equal_the_recurrent_form(forget_gate: str) -> None:
    """d loss / d (q, k, v, gates, C0, n0, m0) through the chunkwise parallel form equal those of the loop."""
    q, k, v, i_pre, f_pre, state = cell_inputs(5, 2, 2, 11, 3, 2, gate_scale=3.0)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, i_pre, f_pre, *state)]

    def grads(fn, **kwargs):
        h, (C, n, m) = fn(*leaves[:5], forget_gate=forget_gate, initial_state=tuple(leaves[5:]), **kwargs)
        gen = torch.Generator().manual_seed(0)
        loss = sum((t * torch.randn(t.shape, generator=gen, dtype=F64)).sum() for t in (h, C, n, m))
        return torch.autograd.grad(loss, leaves)

    expected = grads(mlstm_recurrent)
    for name, e, a in zip(("q", "k", "v", "i", "f", "C0", "n0", "m0"), expected, grads(mlstm_chunkwise, chunk_size=4)):
        assert_close(f"d/d{name}", e, a)


# ---------------------------------------------------------------------- the block
def make(seed: int, **kwargs) -> MLSTM:
    return perturbed(MLSTM, seed, **kwargs)


VARIANTS = {
    "default": {},
    "exp-forget-bias": {"forget_gate": "exp", "bias": True},
    "one-head-no-conv": {"n_heads": 1, "d_conv": 1, "qkv_block_size": 1, "expand": 1},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_block_passes_conformance(variant: str) -> None:
    model = make(0, d_model=4, chunk_size=3, **{"n_heads": 2, "qkv_block_size": 2, **VARIANTS[variant]})
    assert check_sequence_model(model, x=random_sequence(2, 11, 4, dtype=F64, seed=1), state_growth="constant").passed


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_block_forward_equals_step_loop_across_chunks(variant: str) -> None:
    model = make(1, d_model=4, chunk_size=4, **{"n_heads": 2, "qkv_block_size": 2, **VARIANTS[variant]})
    _, state0 = model(random_sequence(3, 6, 4, dtype=F64, seed=2))
    x = random_sequence(3, 19, 4, dtype=F64, seed=3, scale=5.0)
    assert_forward_equals_steps(model, x, state0)


def test_chunk_size_does_not_change_the_function() -> None:
    x = random_sequence(2, 17, 4, dtype=F64, seed=4)
    outs = [make(2, d_model=4, n_heads=2, qkv_block_size=2, chunk_size=c)(x) for c in (1, 5, 17, 64)]
    for y, state in outs[1:]:
        assert_close("y", outs[0][0], y)
        assert_close("m", outs[0][1].m, state.m)


def test_headwise_linear_is_block_diagonal() -> None:
    lin = _HeadwiseLinear(6, 2, bias=True).double()
    torch.nn.init.normal_(lin.weight)
    torch.nn.init.normal_(lin.bias)
    dense = torch.block_diag(*lin.weight)  # (6, 6)
    x = torch.randn(4, 6, dtype=F64)
    assert_close("y", x @ dense.T + lin.bias, lin(x))


def test_state_shapes_and_size() -> None:
    model = MLSTM(8, n_heads=2, d_conv=3)  # d_inner 16, heads of 8
    state = model.initial_state(3)
    assert (state.C.shape, state.n.shape, state.m.shape, state.conv.shape) == (
        (3, 2, 8, 8), (3, 2, 8), (3, 2), (3, 16, 2)
    )
    sizes = {seqmem.state_nbytes(model(torch.randn(1, T, 8))[1]) for T in (1, 5, 200)}
    assert sizes == {(2 * 8 * 8 + 2 * 8 + 2 + 16 * 2) * 4}


def test_initial_forget_gates() -> None:
    """xLSTM's initial forget gates sigmoid(3 .. 6), whichever the activation."""
    for gate in ("sigmoid", "exp"):
        model = MLSTM(8, n_heads=4, forget_gate=gate)
        f = torch.exp(log_forget_gate(model.fgate.bias.detach(), gate))
        assert_close("f", torch.sigmoid(torch.linspace(3.0, 6.0, 4)), f)
        assert not model.fgate.weight.any() and not model.igate.weight.any()


def test_registry_and_widths() -> None:
    spec = seqmem.model_spec("mlstm")
    assert spec.stacking == "residual" and spec.color == "#DDCC77" and spec.marker == "d"
    assert isinstance(seqmem.build("mlstm", 8), MLSTM)
    for width in (2, 4, 6, 10):  # the paper's 4 heads and blocks of 4 at every even width
        model = spec.build(width, width)
        assert (model.n_heads, model.qkv_block_size) == (4, 4)
    with pytest.raises(ValueError, match="divisible by 2"):
        spec.build(5, 5)
    assert spec.step() == 2 and spec.step({"expand": 1}) == 4 and spec.step({"n_heads": 3}) == 6
    assert spec.step({"n_heads": 3, "qkv_block_size": 1}) == 3
    assert spec.step({"n_heads": 1, "qkv_block_size": 1, "expand": 1}) == 1
    net = seqmem.SequenceNetwork("mlstm", 6, vocab_size=5, output_size=2)
    assert len(net.layers) == 2 and net(torch.randint(0, 5, (2, 7)))[0].shape == (2, 7, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_model": 3, "n_heads": 4}, "n_heads must divide d_inner"),
        ({"d_model": 3, "n_heads": 2, "qkv_block_size": 4}, "qkv_block_size must divide d_inner"),
        ({"d_model": 4, "forget_gate": "relu"}, "unknown forget_gate"),
        ({"d_model": 4, "chunk_size": 0}, "chunk_size"),
        ({"d_model": 4, "d_conv": 0}, "d_conv"),
        ({"d_model": 4, "backend": "numba"}, "supported backends"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        MLSTM(**kwargs)
