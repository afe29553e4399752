"""Tests of `seqmem.Hawk` and `seqmem.Griffin` (torch backend): the RG-LRU's equations, the parallel forms
against the recurrent ones, the sliding window, the bounded state, the blocks and the registry entries."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import seqmem
from seqmem import Griffin, GriffinState, Hawk, HawkState
from seqmem.griffin.parallel import linear_scan, local_attention, rglru_scan
from seqmem.griffin.reference import local_attention_reference, log_a, rglru, rglru_step
from seqmem.network import SequenceNetwork
from seqmem.testing import seeds

F64 = {"rtol": 1e-10, "atol": 1e-12}


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """`model` in float64 with every parameter moved off its tidy initial value (biases, norms, Lambda)."""
    model = model.double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return model


def griffin(seed: int, **kw) -> Griffin:
    torch.manual_seed(seed)
    return perturbed(Griffin(**{"d_model": 8, "n_heads": 2, "window": 4, **kw}), seed + 1)


def hawk(seed: int, **kw) -> Hawk:
    torch.manual_seed(seed)
    return perturbed(Hawk(**{"d_model": 5, "n_layers": 2, **kw}), seed + 1)


def random_state(model, batch: int, seed: int, fill: float | None = None):
    """A non-zero state of `model` (`n_cached` = `fill`, else a random count per row, for Griffin)."""
    zeros = model.initial_state(batch, dtype=torch.float64)
    fields = [randn(seed + i, *t.shape) for i, t in enumerate(zeros)]
    if isinstance(zeros, GriffinState):
        C = model.window
        counts = torch.randint(0, C + 1, (batch,), generator=torch.Generator().manual_seed(seed))
        fields[-1] = (counts if fill is None else torch.full((batch,), fill)).to(torch.float64)
    return type(zeros)(*fields)


# ---------------------------------------------------------------------- the RG-LRU: equations (1)-(4)
def test_rglru_step_matches_the_equations_by_hand() -> None:
    """One channel, two steps, written with the `math` module from eq. (1)-(4) of the paper."""
    Lambda, c, h0 = 1.3, 8.0, 0.7
    xs, gas, gxs = (0.5, -1.2), (0.4, -2.0), (-0.3, 1.1)
    h, expected = h0, []
    for x, ga, gx in zip(xs, gas, gxs, strict=True):
        r = 1 / (1 + math.exp(-ga))  # (1)
        i = 1 / (1 + math.exp(-gx))  # (2)
        a = 1 / (1 + math.exp(-Lambda))
        a_t = a ** (c * r)  # (3)
        h = a_t * h + math.sqrt(1 - a_t**2) * (i * x)  # (4)
        expected.append(h)
    t = lambda v: torch.tensor(v, dtype=torch.float64).reshape(1, -1, 1)  # noqa: E731
    y, h_T = rglru(t(xs), t(gas), t(gxs), torch.tensor([Lambda], dtype=torch.float64), c, torch.tensor([[h0]], dtype=torch.float64))
    torch.testing.assert_close(y.flatten(), torch.tensor(expected, dtype=torch.float64), **F64)
    assert h_T.item() == y[0, -1, 0].item()


def test_log_a_is_log_sigmoid_and_finite() -> None:
    Lambda = torch.tensor([-800.0, -3.0, 0.0, 2.5, 800.0], dtype=torch.float64)
    la = log_a(Lambda)
    torch.testing.assert_close(la[1:4], torch.log(torch.sigmoid(Lambda[1:4])), **F64)
    assert torch.isfinite(la).all() and la[0] == -800.0 and la[-1] == 0.0  # log sigmoid(-800) = -800 exactly


@given(seed=seeds(), T=st.integers(1, 40), D=st.integers(1, 5), batch=st.integers(1, 3), h0=st.booleans())
@example(seed=0, T=1, D=1, batch=1, h0=False)
@example(seed=1, T=33, D=2, batch=2, h0=True)  # not a power of two
def test_parallel_scan_equals_recurrent_form(seed: int, T: int, D: int, batch: int, h0: bool) -> None:
    """The doubling scan equals the step loop in float64 to 1e-10, with and without an initial state."""
    x, ga, gx = (randn(seed + k, batch, T, D) * 2 for k in range(3))
    Lambda = randn(seed + 3, D) * 3
    state = randn(seed + 4, batch, D) if h0 else None
    y, h = rglru(x, ga, gx, Lambda, 8.0, state)
    y_par, h_par = rglru_scan(x, ga, gx, Lambda, 8.0, state)
    torch.testing.assert_close(y_par, y, **F64)
    torch.testing.assert_close(h_par, h, **F64)


def test_linear_scan_long_sequence_with_strong_decay() -> None:
    """Decays far below one: products underflow to 0 and nothing overflows (no division by a cumulative product)."""
    a = torch.rand(2, 1000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1e-3
    b = randn(1, 2, 1000, 3)
    h, hs = randn(2, 2, 3), []
    for t in range(1000):
        h = a[:, t] * h + b[:, t]
        hs.append(h)
    torch.testing.assert_close(linear_scan(a, b, randn(2, 2, 3)), torch.stack(hs, 1), **F64)


def test_initialisation() -> None:
    """a^c uniform in [0.9, 0.999] (sec. 2.4): every channel inside, and the spread covers the interval;
    LeCun normal projections, the last of each residual branch scaled by sqrt(2 / n_layers)."""
    torch.manual_seed(0)
    model = Hawk(64, n_layers=2)
    g = Griffin(64, n_layers=8)
    for block in g.blocks:
        last = block.mlp.fc_out
        assert 0.8 < last.weight.std().item() / (2 / 8 / last.in_features) ** 0.5 < 1.2
        assert 0.8 < block.mlp.fc_in.weight.std().item() * 64**0.5 < 1.2
        assert block.mlp.fc_in.bias.abs().max() == 0
    for block in model.blocks:
        lru = block.mix.rg_lru
        a_c = torch.exp(lru.c * log_a(lru.Lambda.double()))
        assert ((a_c >= 0.9) & (a_c <= 0.999)).all()
        assert a_c.min() < 0.92 and a_c.max() > 0.98
        assert lru.gate_a.bias.abs().max() == 0 and lru.gate_x.bias.abs().max() == 0
        assert 0.5 < lru.gate_a.weight.std().item() * math.sqrt(model.d_rnn) < 1.5  # LeCun: std 1 / sqrt(fan_in)


def test_recurrence_gate_zero_keeps_the_state() -> None:
    """r_t -> 0 gives a_t = 1 and sqrt(1 - a_t^2) = 0: the state passes through, the input is discarded."""
    x, gx = randn(0, 1, 3, 2), randn(1, 1, 3, 2)
    ga = torch.full((1, 3, 2), -800.0, dtype=torch.float64)  # sigmoid underflows to 0 exactly
    h0 = randn(2, 1, 2)
    y, h = rglru(x, ga, gx, randn(3, 2), 8.0, h0)
    assert torch.equal(y, h0[:, None].expand(1, 3, 2)) and torch.equal(h, h0)


def test_normalisation_preserves_the_variance() -> None:
    """sqrt(1 - a_t^2) keeps a unit variance: with h_0 and x_t i.i.d. N(0, 1) and the input gate open,
    var(h_t) = a_t^2 var(h_{t-1}) + (1 - a_t^2) = 1 at every step, for slow and fast decays alike."""
    B, T = 20000, 30
    Lambda = torch.tensor([-2.0, 1.0, 6.0], dtype=torch.float64)  # a^c from 0.2 to 0.98
    x = randn(0, B, T, 3)
    ga = torch.zeros(B, T, 3, dtype=torch.float64)  # r_t = 1/2
    gx = torch.full((B, T, 3), 50.0, dtype=torch.float64)  # i_t = 1
    y, _ = rglru_scan(x, ga, gx, Lambda, 8.0, randn(1, B, 3))
    var = y.var(dim=0)  # (T, 3)
    assert ((var - 1).abs() < 0.05).all(), var.min().item()
    # without the normalisation the slow channel's variance would grow towards 1 / (1 - a_t^2)
    a_t = torch.exp(4.0 * log_a(Lambda))
    assert (1 / (1 - a_t**2))[-1] > 10


# ---------------------------------------------------------------------- local attention
@given(
    seed=seeds(),
    T=st.integers(1, 40),
    window=st.integers(1, 12),
    n_heads=st.integers(1, 3),
    batch=st.integers(1, 3),
)
@example(seed=0, T=1, window=1, n_heads=1, batch=1)
@example(seed=1, T=37, window=5, n_heads=2, batch=3)  # several blocks, a padded last one
@example(seed=2, T=3, window=12, n_heads=1, batch=2)  # a window longer than the chunk
def test_banded_attention_equals_explicit_softmax(seed: int, T: int, window: int, n_heads: int, batch: int) -> None:
    C = window
    q = randn(seed, batch, n_heads, T, 4)
    k, v = randn(seed + 1, batch, C + T, 4), randn(seed + 2, batch, C + T, 4)
    n_cached = torch.randint(0, C + 1, (batch,), generator=torch.Generator().manual_seed(seed)).double()
    expected = local_attention_reference(q, k, v, window, n_cached)
    torch.testing.assert_close(local_attention(q, k, v, window, n_cached), expected, **F64)


def test_attention_ignores_empty_cache_slots() -> None:
    """Slots not holding a position do not count, whatever they contain."""
    q, k, v = randn(0, 1, 2, 3, 4), randn(1, 1, 5 + 3, 4), randn(2, 1, 5 + 3, 4)
    n = torch.tensor([2.0], dtype=torch.float64)
    y = local_attention(q, k, v, 5, n)
    k2, v2 = k.clone(), v.clone()
    k2[:, :3], v2[:, :3] = 1e3, -1e3  # the 3 empty slots
    assert torch.equal(local_attention(q, k2, v2, 5, n), y)


@pytest.mark.parametrize("window", [1, 2, 5])
def test_output_sees_exactly_the_window(window: int) -> None:
    """One attention block: y_t depends on x_{t-window} .. x_t and not on x_{t-window-1}."""
    model = griffin(0, n_layers=1, window=window, block_types=("attention",))
    x = randn(0, 1, 12, 8)
    t = 9
    base = model(x)[0][:, t]
    for s in range(t + 1):
        x2 = x.clone()
        x2[:, s] += 1.0
        changed = not torch.allclose(model(x2)[0][:, t], base, rtol=0, atol=1e-13)
        assert changed == (s >= t - window), (s, t, window)


# ---------------------------------------------------------------------- the models: recurrent == parallel
model_cases = st.sampled_from(["hawk", "griffin", "griffin-attention", "griffin-window-1"])


def build_case(name: str, seed: int):
    if name == "hawk":
        return hawk(seed, d_rnn=3, d_conv=3)
    if name == "griffin-attention":
        return griffin(seed, n_layers=2, window=3, block_types=("attention", "recurrent"))
    if name == "griffin-window-1":
        return griffin(seed, n_layers=3, window=1, d_conv=1)
    return griffin(seed, n_layers=3, window=4)


@given(case=model_cases, seed=seeds(), T=st.integers(1, 14), batch=st.integers(1, 3), given_state=st.booleans())
@example(case="griffin", seed=0, T=13, batch=2, given_state=True)
def test_step_equals_forward(case: str, seed: int, T: int, batch: int, given_state: bool) -> None:
    """A `step` loop (the recurrent form) equals `forward` (the parallel forms) in float64 to 1e-10,
    from zeros or from a state with random contents and a partly filled window."""
    model = build_case(case, seed)
    x = randn(seed, batch, T, model.d_model)
    state0 = random_state(model, batch, seed + 5) if given_state else None
    y, final = model(x, state0)
    state, ys = state0, []
    for t in range(T):
        y_t, state = model.step(x[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **F64)
    for a, b in zip(state, final, strict=True):
        torch.testing.assert_close(a, b, **F64)


@given(case=model_cases, seed=seeds(), T=st.integers(2, 20), data=st.data())
@example(case="griffin", seed=0, T=15, data=None)  # chunks of 1 to 6 steps around a window of 4
def test_chunked_forward_is_exact_across_the_window(case: str, seed: int, T: int, data) -> None:
    model = build_case(case, seed)
    x = randn(seed, 2, T, model.d_model)
    y, final = model(x)
    if data is None:
        cuts = [1, 3, 9]
    else:
        cuts = sorted(data.draw(st.sets(st.integers(1, T - 1), min_size=1, max_size=4)))
    state, ys = None, []
    for lo, hi in zip([0, *cuts], [*cuts, T], strict=True):
        y_c, state = model(x[:, lo:hi], state)
        ys.append(y_c)
    torch.testing.assert_close(torch.cat(ys, 1), y, **F64)
    for a, b in zip(state, final, strict=True):
        torch.testing.assert_close(a, b, **F64)


def test_window_holds_the_last_positions() -> None:
    """The kept keys are the unrotated keys of the last `window` positions, the most recent last."""
    model = griffin(0, n_layers=1, window=4, block_types=("attention",))
    x = randn(0, 2, 7, 8)
    _, state = model(x)
    block = model.blocks[0]
    keys = block.mix.k_proj(block.norm_mix(x))  # (B, T, hd)
    torch.testing.assert_close(state.k[0], keys[:, -4:], **F64)
    assert state.n_cached.tolist() == [4.0, 4.0]
    _, short = model(x[:, :2])
    assert short.n_cached.tolist() == [2.0, 2.0]
    torch.testing.assert_close(short.k[0, :, 2:], keys[:, :2], **F64)


@pytest.mark.parametrize("T", [1, 3, 50])
def test_state_is_bounded_by_the_window(T: int) -> None:
    model = Griffin(8, n_heads=2, n_layers=4, window=6, d_rnn=5, d_conv=4)  # R R A R
    _, state = model(torch.randn(3, T, 8))
    n_rec, n_att = 3, 1
    expected = 4 * 3 * (n_rec * 5 * (4 - 1) + n_rec * 5 + 2 * n_att * 6 * 4 + 1)  # float32, batch 3
    assert seqmem.state_nbytes(state) == expected
    assert model.layer_types == ("recurrent", "recurrent", "attention", "recurrent")


def test_hawk_state_size() -> None:
    model = Hawk(6, n_layers=2, d_rnn=7, d_conv=4)
    _, state = model(torch.randn(2, 40, 6))
    assert isinstance(state, HawkState) and state.batch_size == 2
    assert seqmem.state_nbytes(state) == 4 * 2 * 2 * 7 * (3 + 1)


def test_hawk_is_griffin_without_attention() -> None:
    """Same parameters, same outputs: Hawk's blocks are Griffin's recurrent blocks."""
    torch.manual_seed(0)
    h = perturbed(Hawk(8, n_layers=2, d_rnn=6), 1)
    g = Griffin(8, n_heads=2, n_layers=2, d_rnn=6, block_types=("recurrent",)).double()
    g.load_state_dict(h.state_dict())
    x = randn(2, 2, 9, 8)
    torch.testing.assert_close(g(x)[0], h(x)[0], rtol=0, atol=0)


def test_batch_rows_are_independent_with_different_windows() -> None:
    """Rows of one batch may have seen different numbers of positions (states concatenated)."""
    model = griffin(3, n_layers=3, window=5)
    _, s1 = model(randn(0, 1, 2, 8))  # 2 positions cached
    _, s2 = model(randn(1, 1, 9, 8))  # a full window
    both = GriffinState(*(torch.cat([a, b], dim=1 if a.dim() > 1 else 0) for a, b in zip(s1, s2, strict=True)))
    x = randn(2, 2, 4, 8)
    y = model(x, both)[0]
    torch.testing.assert_close(y[:1], model(x[:1], s1)[0], **F64)
    torch.testing.assert_close(y[1:], model(x[1:], s2)[0], **F64)


# ---------------------------------------------------------------------- blocks, construction, registry
def test_recurrent_block_by_hand() -> None:
    """The recurrent block of fig. 2c from its pieces: GeLU branch times RG-LRU(Conv1D(linear_x)), then out."""
    def gelu(v: torch.Tensor) -> torch.Tensor:  # the tanh form, written out
        return 0.5 * v * (1 + torch.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    model = hawk(0, n_layers=1, d_conv=3)
    block = model.blocks[0]
    x = randn(1, 2, 6, 5)
    xn = block.norm_mix(x)
    mix = block.mix
    u = mix.conv1d(mix.linear_x(xn).transpose(1, 2))[..., :6].transpose(1, 2)  # causal: padding then truncation
    lru = mix.rg_lru
    h, _ = rglru(u, lru.gate_a(u), lru.gate_x(u), lru.Lambda, 8.0)
    x1 = x + mix.linear_out(gelu(mix.linear_y(xn)) * h)
    mlp = block.mlp
    x2 = x1 + mlp.fc_out(gelu(mlp.fc_gate(block.norm_mlp(x1))) * mlp.fc_in(block.norm_mlp(x1)))
    torch.testing.assert_close(model(x)[0], model.norm_out(x2), **F64)


def test_rglru_step_returns_the_state_as_output() -> None:
    y, h = rglru_step(randn(0, 2, 3), randn(1, 2, 3), randn(2, 2, 3), randn(3, 3), 8.0, randn(4, 2, 3))
    assert y is h


def test_shapes_defaults_and_names() -> None:
    g = Griffin(16)
    assert (g.n_heads, g.head_dim, g.window, g.n_layers, g.d_rnn, g.mlp_ratio, g.d_conv, g.c) == (
        4, 4, 128, 3, 21, 3, 4, 8.0
    )
    assert g.backends == ("torch", "numba") and g.backend == "torch"
    assert isinstance(g, seqmem.SequenceModel) and isinstance(Hawk(3), seqmem.SequenceModel)
    state = g.initial_state(2)
    assert state.k.shape == (1, 2, 128, 4) and state.conv.shape == (2, 2, 21, 3) and state.n_cached.shape == (2,)
    names = set(dict(g.named_parameters()))
    for name in ("blocks.0.mix.rg_lru.gate_a.weight", "blocks.0.mix.rg_lru.Lambda", "blocks.0.mix.conv1d.weight",
                 "blocks.2.mix.q_proj.weight", "blocks.2.mix.k_proj.weight", "blocks.2.mlp.fc_gate.weight",
                 "norm_out.weight"):
        assert name in names, name
    assert g.blocks[2].mix.k_proj.weight.shape == (4, 16)  # one key head (multi-query)
    assert Griffin(6, window=3).n_heads == 1 and Griffin(4).n_heads == 2 and Griffin(6, n_heads=3).head_dim == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 7}, "even"),
        ({"d_model": 8, "n_heads": 3}, "split into n_heads"),
        ({"d_model": 12, "n_heads": 4}, "split into n_heads"),  # head size 3: odd
        ({"d_model": 8, "window": 0}, "window"),
        ({"d_model": 8, "block_types": ()}, "block_types"),
        ({"d_model": 8, "block_types": "recurrent"}, "block_types"),
        ({"d_model": 8, "block_types": ("recurrent", "mamba")}, "block type"),
        ({"d_model": 8, "c": 0.0}, "c must be"),
        ({"d_model": 8, "rope_base": -1.0}, "rope_base"),
        ({"d_model": 8, "d_rnn": 0}, "d_rnn"),
        ({"d_model": 8, "backend": "cuda"}, "backend"),
    ],
)
def test_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        Griffin(**kwargs)


def test_bad_state() -> None:
    model = Griffin(8, n_heads=2, window=4)
    x = torch.randn(2, 3, 8)
    with pytest.raises(TypeError, match="GriffinState"):
        model(x, Hawk(8).initial_state(2))
    with pytest.raises(ValueError, match="batch"):
        model(x, model.initial_state(3))
    with pytest.raises(ValueError, match=r"state\.k"):
        model(x, Griffin(8, n_heads=2, window=5).initial_state(2))


def test_registry_and_network() -> None:
    assert {"hawk", "griffin"} <= set(seqmem.model_names())
    assert isinstance(seqmem.build("griffin", 8), Griffin) and isinstance(seqmem.build("hawk", 8), Hawk)
    spec = seqmem.model_spec("griffin")
    assert spec.stacking == "block" and spec.default_layers == 3 and spec.step() == 2 and spec.step({"n_heads": 3}) == 6
    net = SequenceNetwork("griffin", 12, vocab_size=5, output_size=3, n_layers=4, window=8)
    assert len(net.layers) == 1 and isinstance(net.norm, torch.nn.Identity)
    assert net.layers[0].n_layers == 4 and net.layers[0].window == 8 and net.layers[0].n_heads == 2
    logits, state = net(torch.randint(0, 5, (2, 11)))
    assert logits.shape == (2, 11, 3) and isinstance(state[0], GriffinState)
    net = SequenceNetwork("hawk", 5, input_size=2, output_size=1)
    assert net.layers[0].n_layers == 2 and isinstance(net.norm, torch.nn.Identity)


def test_trains_on_cpu() -> None:
    """A few Adam steps lower the loss of a next-value regression (the gradients point the right way)."""
    torch.manual_seed(0)
    model = Griffin(8, n_heads=2, n_layers=3, window=4)
    head = torch.nn.Linear(8, 1)
    x = torch.randn(8, 12, 8)
    target = x[:, :, :1].roll(1, dims=1)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(30):
        loss = (head(model(x)[0]) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
