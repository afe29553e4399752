"""Tests of minGRU and minLSTM (torch backend): the paper's equations, the log-space parallel scan against the
sequential form, the initial state, and the models built through the registry."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import seqmem
from seqmem import MinGRU, MinLSTM, MinRNNState
from seqmem.minrnn.parallel import heinsen_scan, log_g, mingru_parallel, minlstm_parallel
from seqmem.minrnn.reference import g, mingru_recurrent, mingru_step, minlstm_recurrent, minlstm_step
from seqmem.testing import assert_close, seeds

FORMS = {
    "mingru": (2, mingru_recurrent, mingru_parallel),
    "minlstm": (3, minlstm_recurrent, minlstm_parallel),
}
CLASSES = {"mingru": MinGRU, "minlstm": MinLSTM}


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """seqmem's comparison: `|actual - expected| <= atol * max(1, max |expected|) + rtol * |expected|`."""
    assert_close("value", expected, actual, rtol=rtol, atol=atol)


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def positive_state(seed: int, batch: int, hidden: int, zeros: bool) -> torch.Tensor:
    """A state as the models make them (positive), with some exact zeros (the initial state) if asked."""
    h0 = torch.rand(batch, hidden, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    if zeros:
        h0[:, ::2] = 0.0
    return h0


# ---------------------------------------------------------------------- the paper's equations
def test_mingru_hand_computed() -> None:
    """Eq. (1) on numbers worked by hand: z = 1/2, g(1) = 3/2, then z = 3/4, g(-log 3) = sigma(-log 3) = 1/4."""
    gates = torch.tensor([[[0.0, 1.0], [math.log(3.0), -math.log(3.0)]]], dtype=torch.float64)  # [k_z | k_h]
    h0 = torch.tensor([[2.0]], dtype=torch.float64)
    # h1 = 0.5 * 2 + 0.5 * 1.5 = 1.75;  h2 = 0.25 * 1.75 + 0.75 * 0.25 = 0.625
    expected = torch.tensor([[[1.75], [0.625]]], dtype=torch.float64)
    for form in (mingru_recurrent, mingru_parallel):
        h, h_T = form(gates, h0)
        close(h, expected)
        close(h_T, expected[:, -1])


def test_minlstm_hand_computed() -> None:
    """Eq. (2): f = 3/4, i = 1/2 give f' = 0.6, i' = 0.4; then f = 1/2, i = 3/4 give f' = 0.4, i' = 0.6."""
    l3 = math.log(3.0)
    gates = torch.tensor([[[0.0, l3, 0.0], [l3, 0.0, 2.0]]], dtype=torch.float64)  # [k_i | k_f | k_h]
    h0 = torch.tensor([[1.0]], dtype=torch.float64)
    # h1 = 0.6 * 1 + 0.4 * g(0) = 0.6 + 0.2 = 0.8;  h2 = 0.4 * 0.8 + 0.6 * g(2) = 0.32 + 1.5 = 1.82
    expected = torch.tensor([[[0.8], [1.82]]], dtype=torch.float64)
    for form in (minlstm_recurrent, minlstm_parallel):
        h, _ = form(gates, h0)
        close(h, expected)


def test_g_is_the_papers_function() -> None:
    """g(x) = x + 1/2 above 0, sigma(x) below: continuous at 0 (both 1/2), positive everywhere."""
    x = torch.tensor([-50.0, -2.0, -1e-12, 0.0, 1e-12, 3.0, 1e4], dtype=torch.float64)
    expected = torch.tensor(
        [1 / (1 + math.exp(50.0)), 1 / (1 + math.exp(2.0)), 0.5 - 0.25e-12, 0.5, 0.5 + 1e-12, 3.5, 1e4 + 0.5],
        dtype=torch.float64,
    )
    close(g(x), expected, rtol=1e-12, atol=0.0)
    assert bool((g(torch.linspace(-700, 700, 1001, dtype=torch.float64)) > 0).all())


@given(seed=seeds(), scale=st.floats(0.1, 100.0))
def test_log_g_is_log_of_g(seed: int, scale: float) -> None:
    x = randn(seed, 200) * scale
    close(log_g(x), torch.log(g(x)), rtol=1e-13, atol=1e-13)
    x.requires_grad_(True)
    (dx,) = torch.autograd.grad(log_g(x).sum(), x)
    assert bool(dx.isfinite().all())


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_steps_are_convex_combinations(name: str) -> None:
    """h_t lies between h_{t-1} and the candidate g(k_h) (gates sum to 1): the scale does not grow with t."""
    G, _, _ = FORMS[name]
    step = mingru_step if name == "mingru" else minlstm_step
    gates = randn(0, 64, G * 4) * 5
    h = torch.rand(64, 4, dtype=torch.float64) * 10
    c = g(gates[:, -4:])
    out = step(gates, h)
    assert bool((out >= torch.minimum(h, c) - 1e-12).all() and (out <= torch.maximum(h, c) + 1e-12).all())


# ---------------------------------------------------------------------- parallel == recurrent
@pytest.mark.parametrize("name", ["mingru", "minlstm"])
@given(
    sizes=st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 5)),
    scale=st.floats(0.1, 8.0),
    h0_kind=st.sampled_from(["none", "zeros", "positive", "some zeros"]),
    seed=seeds(),
)
@example(sizes=(1, 1, 1), scale=1.0, h0_kind="positive", seed=0)
@example(sizes=(2, 300, 3), scale=3.0, h0_kind="positive", seed=1)
def test_parallel_equals_recurrent(name: str, sizes, scale: float, h0_kind: str, seed: int) -> None:
    """The log-space scan (4) gives the sequential form's outputs, final state and gradients (of the
    pre-activations and of h_0) in float64, to 1e-10."""
    G, recurrent, parallel = FORMS[name]
    B, T, H = sizes
    gates = randn(seed, B, T, G * H) * scale
    h0 = {
        "none": None,
        "zeros": torch.zeros(B, H, dtype=torch.float64),
        "positive": positive_state(seed, B, H, zeros=False),
        "some zeros": positive_state(seed, B, H, zeros=True),
    }[h0_kind]
    results = []
    for form in (recurrent, parallel):
        k = gates.clone().requires_grad_(True)
        s = None if h0 is None else h0.clone().requires_grad_(True)
        h, h_T = form(k, s)
        gen = torch.Generator().manual_seed(seed + 1)
        loss = (h * torch.randn(h.shape, generator=gen, dtype=h.dtype)).sum() + (h_T**2).sum()
        grads = torch.autograd.grad(loss, [k] if s is None else [k, s])
        results.append((h.detach(), h_T.detach(), grads))
    (h_r, hT_r, g_r), (h_p, hT_p, g_p) = results
    close(h_p, h_r)
    close(hT_p, hT_r)
    for a, b in zip(g_p, g_r, strict=True):
        assert bool(a.isfinite().all())
        close(a, b)


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_parallel_float32_is_float64_rounded(name: str, scale: float) -> None:
    """Float32 pre-activations give the float64 states rounded to float32, over 512 steps, saturated too: the
    scan computes in float64 (in float32 its error, eps |a*_t|, would reach 1e-4 relative)."""
    G, recurrent, parallel = FORMS[name]
    gates = (randn(3, 2, 512, G * 8) * scale).float()
    h0 = positive_state(3, 2, 8, zeros=True)
    expected, expected_T = recurrent(gates.double(), h0)
    got, got_T = parallel(gates, h0.float())
    assert got.dtype == got_T.dtype == torch.float32
    close(got.double(), expected, rtol=1e-6, atol=1e-7)
    close(got_T.double(), expected_T, rtol=1e-6, atol=1e-7)


def test_heinsen_scan_general_recurrence() -> None:
    """Eq. (4) for any positive coefficients, against the loop h_t = a_t h_{t-1} + b_t."""
    a = torch.rand(2, 30, 3, dtype=torch.float64) * 0.9 + 0.05
    b = torch.rand(2, 30, 3, dtype=torch.float64) * 4 + 1e-3
    h0 = torch.rand(2, 3, dtype=torch.float64)
    h, hs = h0, []
    for t in range(30):
        h = a[:, t] * h + b[:, t]
        hs.append(h)
    close(heinsen_scan(a.log(), b.log(), h0), torch.stack(hs, 1))
    close(heinsen_scan(a.log(), b.log()), heinsen_scan(a.log(), b.log(), torch.zeros(2, 3, dtype=a.dtype)))


# ---------------------------------------------------------------------- the initial state
@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_initial_state_enters_unshifted(name: str) -> None:
    """log h_0 itself is the scan's first term: chunks continue each other, and starting from g(h_0) instead
    (the paper's listing passes log g(h_0)) would be another sequence."""
    G, recurrent, parallel = FORMS[name]
    gates = randn(5, 2, 20, G * 4)
    h0 = positive_state(5, 2, 4, zeros=False)
    full, _ = parallel(gates, h0)
    first, h_mid = parallel(gates[:, :7], h0)
    second, _ = parallel(gates[:, 7:], h_mid)
    close(torch.cat([first, second], 1), full)
    close(full, recurrent(gates, h0)[0])
    shifted, _ = recurrent(gates, g(h0))
    assert not torch.allclose(shifted[:, 0], full[:, 0], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_gradient_at_zero_initial_state(name: str) -> None:
    """Where h_0 = 0, log h_0 = -inf carries no gradient; the scan adds d h_t / d h_0 = prod_k a_k apart,
    which equals the sequential form's gradient (finite, non-zero)."""
    G, recurrent, parallel = FORMS[name]
    gates = randn(7, 3, 9, G * 4)
    grads = []
    for form in (recurrent, parallel):
        h0 = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
        h, _ = form(gates, h0)
        (dh0,) = torch.autograd.grad(h[:, -1].sum(), h0)
        grads.append(dh0)
    assert bool((grads[1] > 0).all())
    close(grads[1], grads[0])


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_negative_initial_state(name: str) -> None:
    """The parallel functions refuse a negative h_0 (no logarithm); the module runs the sequential form for it,
    so forward, chunks and steps still agree."""
    G, recurrent, parallel = FORMS[name]
    gates = randn(2, 2, 6, G * 3)
    h0 = -positive_state(2, 2, 3, zeros=False)
    with pytest.raises(ValueError, match="initial_state must be >= 0"):
        parallel(gates, h0)
    with pytest.raises(ValueError, match="must be >= 0"):
        heinsen_scan(gates[..., :3], gates[..., :3], h0)
    model = CLASSES[name](4, 3).double()
    x = randn(3, 2, 6, 4)
    y, state = model(x, MinRNNState(h0))
    ys, s = [], MinRNNState(h0)
    for t in range(6):
        y_t, s = model.step(x[:, t], s)
        ys.append(y_t)
    close(y, torch.stack(ys, 1))
    close(state.h, s.h)


# ---------------------------------------------------------------------- the modules
@pytest.mark.parametrize("name", ["mingru", "minlstm"])
@given(sizes=st.tuples(st.integers(1, 3), st.integers(1, 30), st.integers(1, 6), st.integers(1, 6)), seed=seeds())
def test_states_stay_positive(name: str, sizes, seed: int) -> None:
    """From the zero state the models' states are positive at every step (what the log-space scan needs)."""
    B, T, I, H = sizes
    torch.manual_seed(seed)
    model = CLASSES[name](I, H).double()
    y, state = model(randn(seed, B, T, I) * 10)
    assert bool((y > 0).all()) and bool((state.h > 0).all())
    assert torch.equal(state.h, y[:, -1])


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_forward_is_the_log_space_scan(name: str) -> None:
    """The torch backend trains through the parallel scan (logcumsumexp), not a loop over time."""
    model = CLASSES[name](3, 4)
    y, _ = model(torch.randn(2, 50, 3))
    seen, stack = set(), [y.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
    kinds = {type(fn).__name__ for fn in seen}
    assert "_HeinsenScanBackward" in kinds
    assert len(seen) < 50  # a loop over 50 steps would record several nodes per step


@pytest.mark.parametrize(("name", "gates"), [("mingru", 2), ("minlstm", 3)])
def test_module_sizes_and_parameters(name: str, gates: int) -> None:
    model = seqmem.build(name, 8)  # hidden_size defaults to input_size
    assert model.input_size == model.hidden_size == model.output_size == 8
    model = seqmem.build(name, 3, 5, bias=False)
    assert (model.input_size, model.output_size) == (3, 5)
    assert model.bias_ih is None and tuple(model.weight_ih.shape) == (gates * 5, 3)
    n = sum(p.numel() for p in CLASSES[name](3, 5).parameters())
    assert n == gates * 5 * (3 + 1)
    bound = 1 / math.sqrt(3)
    assert float(CLASSES[name](3, 64).weight_ih.detach().abs().max()) <= bound
    state = model.initial_state(2)
    assert isinstance(state, MinRNNState) and state.h.shape == (2, 5) and not bool(state.h.any())
    assert seqmem.state_nbytes(state) == 2 * 5 * 4


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_bad_arguments(name: str) -> None:
    cls = CLASSES[name]
    for bad in ({"input_size": 0}, {"input_size": 3, "hidden_size": -1}, {"input_size": 2.5}):
        with pytest.raises(ValueError, match="must be a positive int"):
            cls(**bad)
    with pytest.raises(ValueError, match="does not support backend"):
        cls(3, 4, backend="cuda")
    model = cls(3, 4)
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len, 3\)"):
        model(torch.randn(2, 5, 4))
    with pytest.raises(TypeError, match="MinRNNState"):
        model(torch.randn(2, 5, 3), seqmem.GRUState(torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="batch mismatch"):
        model(torch.randn(2, 5, 3), MinRNNState(torch.zeros(3, 4)))


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_registry_and_network(name: str) -> None:
    """Registered as pre-norm residual blocks of width -> width, with the colours and markers of issue 12."""
    spec = seqmem.model_spec(name)
    assert spec.stacking == "residual" and spec.backends == ("torch", "numba")
    assert (spec.color, spec.marker) == {"mingru": ("#117733", "X"), "minlstm": ("#44AA99", "x")}[name]
    net = seqmem.SequenceNetwork(name, 8, output_size=2, input_size=3, n_layers=2)
    x = torch.randn(2, 6, 3)
    y, state = net(x)
    assert y.shape == (2, 6, 2) and len(state) == 2
    y_steps, s = [], net.initial_state(2)
    with torch.no_grad():
        for t in range(6):
            y_t, s = net.step(x[:, t], s)
            y_steps.append(y_t)
    close(torch.stack(y_steps, 1), y.detach(), rtol=1e-4, atol=1e-5)
