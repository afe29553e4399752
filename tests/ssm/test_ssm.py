"""Tests of `seqmem.SelectiveSSM`: the Mamba block and its LTI ablation (torch backend)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch.nn import functional as F

import seqmem
from seqmem import LSTMState, SelectiveSSM, SSMState
from seqmem.ssm.module import ScanInputs
from seqmem.ssm.reference import causal_conv, lti_kernel, selective_scan
from seqmem.testing import Tolerance

F64 = Tolerance().kwargs(torch.float64)

# (d_model, d_state, d_conv, expand, batch, seq_len); sizes stay small so each example runs in ms
configs = st.tuples(
    st.integers(1, 6),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 12),
)
seeds = st.integers(0, 2**31 - 1)


def make(seed: int, d_model: int, selective: bool, dtype: torch.dtype = torch.float64, **kw) -> SelectiveSSM:
    """A model whose parameters are all random (so D, biases and B/C are not their tidy initial values)."""
    torch.manual_seed(seed)
    model = SelectiveSSM(d_model, selective=selective, bias=True, **kw).to(dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in ("A_log", "dt_proj.bias", "dt_bias"):  # keep A < 0 and Delta in a sane range
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return model


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------- protocol and shapes
@pytest.mark.parametrize("selective", [True, False])
def test_protocol_and_shapes(selective: bool) -> None:
    model = SelectiveSSM(8, d_state=4, d_conv=3, expand=2, selective=selective)
    assert isinstance(model, seqmem.SequenceModel)
    assert model.input_size == model.output_size == 8
    assert model.d_inner == 16 and model.dt_rank == 1
    y, state = model(torch.randn(2, 7, 8))
    assert y.shape == (2, 7, 8)
    assert isinstance(state, SSMState)
    assert state.conv.shape == (2, 16, 2) and state.ssm.shape == (2, 16, 4)
    y_t, state = model.step(torch.randn(2, 8), state)
    assert y_t.shape == (2, 8) and state.conv.shape == (2, 16, 2)
    assert model.backends == ("torch", "numba") and model.backend == "torch"


def test_dt_rank_auto() -> None:
    assert SelectiveSSM(16).dt_rank == 1
    assert SelectiveSSM(17).dt_rank == 2
    assert SelectiveSSM(64, dt_rank=7).dt_rank == 7


def test_build_names() -> None:
    assert seqmem.build("mamba", 4).selective
    assert not seqmem.build("s4d", 4).selective


# ---------------------------------------------------------------------- recurrent form == parallel form
@given(cfg=configs, selective=st.booleans(), seed=seeds)
@example(cfg=(1, 1, 1, 1, 1, 1), selective=True, seed=0)
@example(cfg=(3, 2, 4, 1, 1, 1), selective=False, seed=1)
@example(cfg=(5, 3, 5, 2, 2, 3), selective=True, seed=2)
def test_step_equals_forward(cfg: tuple[int, ...], selective: bool, seed: int) -> None:
    d_model, d_state, d_conv, expand, batch, T = cfg
    model = make(seed, d_model, selective, d_state=d_state, d_conv=d_conv, expand=expand)
    x = randn(seed, batch, T, d_model)
    state0 = SSMState(
        randn(seed + 2, batch, model.d_inner, d_conv - 1), randn(seed + 3, batch, model.d_inner, d_state)
    )
    y, final = model(x, state0)
    state, ys = state0, []
    for t in range(T):
        y_t, state = model.step(x[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **F64)
    torch.testing.assert_close(state.conv, final.conv, **F64)
    torch.testing.assert_close(state.ssm, final.ssm, **F64)


@given(cfg=configs, selective=st.booleans(), seed=seeds, data=st.data())
@example(cfg=(2, 3, 5, 1, 1, 6), selective=True, seed=0, data=None)  # splits below d_conv - 1
def test_chunked_forward_is_exact(cfg: tuple[int, ...], selective: bool, seed: int, data) -> None:
    d_model, d_state, d_conv, expand, batch, T = cfg
    T = max(T, 2)
    model = make(seed, d_model, selective, d_state=d_state, d_conv=d_conv, expand=expand)
    x = randn(seed, batch, T, d_model)
    y, final = model(x)
    # cut points drawn anywhere; the explicit example cuts into chunks of 1 and 2 steps (< d_conv - 1 = 4)
    if data is None:
        cuts = [1, 3, 4]
    else:
        cuts = sorted(data.draw(st.sets(st.integers(1, T - 1), min_size=1, max_size=3)))
    state, ys = None, []
    for lo, hi in zip([0, *cuts], [*cuts, T], strict=True):
        y_c, state = model(x[:, lo:hi], state)
        ys.append(y_c)
    torch.testing.assert_close(torch.cat(ys, 1), y, **F64)
    torch.testing.assert_close(state.conv, final.conv, **F64)
    torch.testing.assert_close(state.ssm, final.ssm, **F64)


def test_conv_state_holds_last_inputs() -> None:
    """The conv state is the last d_conv - 1 in-projected inputs, zeros where the sequence is shorter."""
    model = make(0, 3, True, d_conv=4)
    x = randn(0, 2, 2, 3)  # T = 2 < d_conv - 1 = 3
    _, state = model(x)
    x_in = model.in_proj(x)[..., : model.d_inner].transpose(1, 2)  # (B, Din, T)
    torch.testing.assert_close(state.conv[..., 0], torch.zeros_like(state.conv[..., 0]), **F64)
    torch.testing.assert_close(state.conv[..., 1:], x_in, **F64)


def test_matches_padded_conv1d() -> None:
    """From zeros, the block's convolution is `conv1d` (padding d_conv - 1) truncated to T, as in Mamba."""
    model = make(3, 4, True, d_conv=3)
    x = randn(3, 2, 9, 4)
    u = model.scan_inputs(x).u
    x_in = model.in_proj(x)[..., : model.d_inner].transpose(1, 2)  # (B, Din, T)
    expected = F.silu(model.conv1d(x_in)[..., :9]).transpose(1, 2)
    torch.testing.assert_close(u, expected, **F64)


# ---------------------------------------------------------------------- causality and memory
@given(cfg=configs, selective=st.booleans(), seed=seeds, data=st.data())
def test_causal(cfg: tuple[int, ...], selective: bool, seed: int, data) -> None:
    d_model, d_state, d_conv, expand, batch, T = cfg
    model = make(seed, d_model, selective, d_state=d_state, d_conv=d_conv, expand=expand)
    x = randn(seed, batch, T, d_model)
    t0 = data.draw(st.integers(0, T - 1))
    x2 = x.clone()
    x2[:, t0:] += randn(seed + 7, batch, T - t0, d_model)
    y, y2 = model(x)[0], model(x2)[0]
    assert torch.equal(y[:, :t0], y2[:, :t0])
    assert not torch.allclose(y[:, t0], y2[:, t0])


@pytest.mark.parametrize("selective", [True, False])
def test_state_size_independent_of_seq_len(selective: bool) -> None:
    model = SelectiveSSM(4, d_state=5, d_conv=3, expand=2, selective=selective)
    sizes = {seqmem.state_nbytes(model(torch.randn(2, T, 4))[1]) for T in (1, 2, 17, 64)}
    assert sizes == {2 * model.d_inner * (3 - 1 + 5) * 4}  # batch * d_inner * (d_conv - 1 + d_state) float32


def test_batch_independence() -> None:
    model = make(5, 3, True)
    x = randn(5, 3, 6, 3)
    y = model(x)[0]
    torch.testing.assert_close(model(x[1:2])[0], y[1:2], **F64)


# ---------------------------------------------------------------------- selective vs LTI
@given(cfg=configs, seed=seeds)
@example(cfg=(2, 3, 2, 2, 2, 9), seed=0)
def test_lti_scan_is_the_causal_convolution(cfg: tuple[int, ...], seed: int) -> None:
    """selective=False: u -> scan output is linear and time-invariant, the convolution with lti_kernel."""
    d_model, d_state, d_conv, expand, batch, T = cfg
    model = make(seed, d_model, False, d_state=d_state, d_conv=d_conv, expand=expand)
    inputs = model.scan_inputs(randn(seed, batch, T, d_model))
    assert isinstance(inputs, ScanInputs)
    u, delta, A, B, C, D = inputs
    assert B.shape == C.shape == A.shape == (model.d_inner, d_state)
    assert delta.shape == u.shape == (batch, T, model.d_inner)
    torch.testing.assert_close(delta, delta[:1, :1].expand_as(delta), rtol=0, atol=0)  # one Delta for all t
    kernel = lti_kernel(delta[0, 0], A, B, C, T)  # (Din, T)
    y_scan, _ = selective_scan(u, delta, A, B, C, D)
    torch.testing.assert_close(y_scan, causal_conv(u, kernel) + D * u, **F64)
    # and the same map applied to any other signal: linear and time-invariant, whatever the input
    v = randn(seed + 9, batch, T, model.d_inner)
    torch.testing.assert_close(selective_scan(v, delta, A, B, C)[0], causal_conv(v, kernel), **F64)


@pytest.mark.parametrize("selective", [True, False])
def test_scan_inputs_reproduce_forward(selective: bool) -> None:
    """The scan of `scan_inputs`, gated and projected, is `forward` (also from a non-zero state)."""
    model = make(11, 3, selective, d_state=4, d_conv=3)
    x = randn(11, 2, 5, 3)
    _, state = model(randn(12, 2, 4, 3))
    inputs = model.scan_inputs(x, state)
    y_scan, h = selective_scan(*inputs, initial_state=state.ssm)
    z = model.in_proj(x)[..., model.d_inner :]
    y, final = model(x, state)
    torch.testing.assert_close(model.out_proj(y_scan * F.silu(z)), y, **F64)
    torch.testing.assert_close(h, final.ssm, **F64)


@given(seed=seeds)
def test_selective_parameters_depend_on_input(seed: int) -> None:
    model = make(seed, 4, True, d_state=3)
    x1, x2 = randn(seed, 2, 6, 4), randn(seed + 1, 2, 6, 4)
    a, b = model.scan_inputs(x1), model.scan_inputs(x2)
    assert a.B.shape == (2, 6, 3) and a.C.shape == (2, 6, 3) and a.delta.shape == (2, 6, model.d_inner)
    for name in ("delta", "B", "C"):
        assert not torch.allclose(getattr(a, name), getattr(b, name)), name
    # and they vary along time within one sequence (a time-varying system)
    assert not torch.allclose(a.delta[:, 1:], a.delta[:, :1].expand_as(a.delta[:, 1:]))


@given(seed=seeds)
def test_lti_parameters_do_not_depend_on_input(seed: int) -> None:
    model = make(seed, 4, False, d_state=3)
    a, b = model.scan_inputs(randn(seed, 2, 6, 4)), model.scan_inputs(randn(seed + 1, 2, 6, 4))
    for name in ("delta", "A", "B", "C", "D"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.allclose(a.u, b.u)


# ---------------------------------------------------------------------- parameters and initialisation
def mamba_state_dict_shapes(d_model: int, d_state: int, d_conv: int, expand: int, dt_rank: int,
                            bias: bool, conv_bias: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of mamba_ssm's `Mamba(d_model, d_state, d_conv, expand, dt_rank, bias, conv_bias)`."""
    d_inner = expand * d_model
    shapes = {
        "in_proj.weight": (2 * d_inner, d_model),
        "conv1d.weight": (d_inner, 1, d_conv),
        "x_proj.weight": (dt_rank + 2 * d_state, d_inner),
        "dt_proj.weight": (d_inner, dt_rank),
        "dt_proj.bias": (d_inner,),
        "A_log": (d_inner, d_state),
        "D": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }
    if bias:
        shapes["in_proj.bias"] = (2 * d_inner,)
        shapes["out_proj.bias"] = (d_model,)
    if conv_bias:
        shapes["conv1d.bias"] = (d_inner,)
    return shapes


@pytest.mark.parametrize("bias,conv_bias", [(False, True), (True, False), (True, True)])
@pytest.mark.parametrize("d_model,dt_rank", [(8, "auto"), (40, "auto"), (12, 5)])
def test_loads_mamba_state_dict(bias: bool, conv_bias: bool, d_model: int, dt_rank) -> None:
    model = SelectiveSSM(d_model, d_state=6, d_conv=3, expand=2, dt_rank=dt_rank, bias=bias, conv_bias=conv_bias)
    rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
    shapes = mamba_state_dict_shapes(d_model, 6, 3, 2, rank, bias, conv_bias)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    model.load_state_dict(sd, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_lti_parameters() -> None:
    model = SelectiveSSM(4, d_state=3, expand=2, selective=False)
    assert model.x_proj is None and model.dt_proj is None
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "in_proj.weight": (16, 4), "conv1d.weight": (8, 1, 4), "conv1d.bias": (8,),
        "dt_bias": (8,), "B": (8, 3), "C": (8, 3), "A_log": (8, 3), "D": (8,), "out_proj.weight": (4, 8),
    }
    assert torch.equal(model.B, torch.ones(8, 3))


@pytest.mark.parametrize("selective", [True, False])
def test_initialisation(selective: bool) -> None:
    torch.manual_seed(0)
    dt_min, dt_max = 0.002, 0.05
    model = SelectiveSSM(32, d_state=5, expand=2, dt_min=dt_min, dt_max=dt_max, selective=selective)
    n = torch.arange(1, 6, dtype=torch.float32)
    torch.testing.assert_close(model.A_log, torch.log(n).expand(64, 5))
    torch.testing.assert_close(-torch.exp(model.A_log), -n.expand(64, 5))
    assert torch.equal(model.D, torch.ones(64))
    dt_bias = model.dt_proj.bias if selective else model.dt_bias
    dt = F.softplus(dt_bias.double())
    assert dt.min() >= dt_min * (1 - 1e-5) and dt.max() <= dt_max * (1 + 1e-5)
    if selective:
        bound = model.dt_rank**-0.5
        assert model.dt_proj.weight.abs().max() <= bound
    assert model.A_log._no_weight_decay and model.D._no_weight_decay


def test_dt_init_floor() -> None:
    torch.manual_seed(0)
    model = SelectiveSSM(4, dt_min=1e-6, dt_max=2e-6, dt_init_floor=1e-3)
    torch.testing.assert_close(F.softplus(model.dt_proj.bias.double()), torch.full((8,), 1e-3, dtype=torch.float64))


@pytest.mark.parametrize("selective", [True, False])
def test_gradients(selective: bool) -> None:
    """Autograd through the whole block, w.r.t. input, both state tensors and every parameter."""
    model = make(0, 2, selective, d_state=2, d_conv=2, expand=1)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    x = randn(0, 1, 4, 2).requires_grad_()
    conv, ssm = randn(1, 1, 2, 1).requires_grad_(), randn(2, 1, 2, 2).requires_grad_()

    def f(x, conv, ssm, *ps):
        y, s = torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (x, SSMState(conv, ssm)))
        return y, s.conv, s.ssm

    assert torch.autograd.gradcheck(f, (x, conv, ssm, *params))


def test_float32_step_equals_forward() -> None:
    model = make(4, 4, True, dtype=torch.float32)
    x = randn(4, 2, 32, 4, dtype=torch.float32)
    y, _ = model(x)
    state, ys = None, []
    for t in range(32):
        y_t, state = model.step(x[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- errors
def test_wrong_state_type() -> None:
    model = SelectiveSSM(4, d_state=3)
    x = torch.randn(2, 5, 4)
    with pytest.raises(TypeError, match="SSMState"):
        model(x, LSTMState(torch.zeros(2, 8), torch.zeros(2, 8)))
    with pytest.raises(TypeError, match="SSMState"):
        model(x, (torch.zeros(2, 8, 3), torch.zeros(2, 8, 3)))


def test_wrong_state_shapes() -> None:
    model = SelectiveSSM(4, d_state=3, d_conv=4)  # d_inner = 8
    x = torch.randn(2, 5, 4)
    good = model.initial_state(2)
    with pytest.raises(ValueError, match=r"state\.conv must have shape \(2, 8, 3\).*got \(2, 8, 4\)"):
        model(x, SSMState(torch.zeros(2, 8, 4), good.ssm))
    with pytest.raises(ValueError, match=r"state\.ssm must have shape \(2, 8, 3\).*got \(2, 8, 2\)"):
        model(x, SSMState(good.conv, torch.zeros(2, 8, 2)))
    with pytest.raises(ValueError, match="batch"):
        model(x, SSMState(torch.zeros(3, 8, 3), torch.zeros(3, 8, 3)))
    with pytest.raises(TypeError, match="dtype"):
        model.step(x[:, 0], good.to(torch.float64))


def test_wrong_input() -> None:
    model = SelectiveSSM(4)
    with pytest.raises(ValueError, match=r"\(batch, seq_len, 4\)"):
        model(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="seq_len 0"):
        model(torch.randn(2, 0, 4))
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        model.step(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="seq_len"):
        model.scan_inputs(torch.randn(2, 0, 4))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"d_model": 0}, "d_model must be a positive int, got 0"),
        ({"d_model": 4, "d_state": -1}, "d_state must be a positive int, got -1"),
        ({"d_model": 4, "d_conv": 0}, "d_conv must be a positive int"),
        ({"d_model": 4, "expand": 1.5}, "expand must be a positive int, got 1.5"),
        ({"d_model": 4, "dt_rank": "big"}, "dt_rank must be 'auto' or a positive int, got 'big'"),
        ({"d_model": 4, "dt_rank": 0}, "dt_rank must be a positive int, got 0"),
        ({"d_model": 4, "dt_min": 0.1, "dt_max": 0.01}, r"expected 0 < dt_min < dt_max, got dt_min=0.1, dt_max=0.01"),
        ({"d_model": 4, "dt_min": 0.0}, "dt_min < dt_max"),
        ({"d_model": 4, "dt_init_floor": -1.0}, "dt_init_floor must be >= 0"),
        ({"d_model": 4, "backend": "cuda-kernel"}, "does not support backend 'cuda-kernel'; supported backends"),
    ],
)
def test_bad_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SelectiveSSM(**kwargs)
