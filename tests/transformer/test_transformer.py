"""CausalTransformer: protocol, step == forward, exact chunking, causality, cache size, errors, rotary."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import seqmem
from seqmem.testing import Tolerance
from seqmem.transformer.reference import (
    apply_rotary,
    attention_reference,
    causal_attention,
    rotary_cos_sin,
)

TIGHT = Tolerance().kwargs(torch.float64)

# (d_model, n_heads) pairs with an even head size
heads_configs = st.sampled_from([(4, 1), (4, 2), (8, 2), (8, 4), (12, 3), (16, 4), (16, 2), (6, 1)])


def make_model(d_model: int, n_heads: int, n_layers: int, seed: int, **kwargs) -> seqmem.CausalTransformer:
    torch.manual_seed(seed)  # parameters: the model initialises from torch's global generator
    model = seqmem.CausalTransformer(d_model, n_heads=n_heads, n_layers=n_layers, **kwargs).double()
    # perturb the biases and LayerNorms away from their (0, 1) init so every term of the block is exercised
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def test_is_a_sequence_model() -> None:
    model = seqmem.CausalTransformer(8, n_heads=2)
    assert isinstance(model, seqmem.SequenceModel)
    assert model.input_size == model.output_size == 8
    assert model.state_type is seqmem.KVCache
    assert model.backends == ("torch",)
    assert isinstance(seqmem.build("transformer", 8, n_heads=2), seqmem.CausalTransformer)


def test_initial_state_is_empty() -> None:
    model = seqmem.CausalTransformer(12, n_heads=3, n_layers=4)
    cache = model.initial_state(5)
    assert isinstance(cache, seqmem.KVCache)
    assert cache.k.shape == cache.v.shape == (4, 5, 3, 0, 4)
    assert cache.k.dtype == torch.float32 and cache.seq_len == 0 and cache.batch_size == 5
    assert seqmem.state_nbytes(cache) == 0
    assert model.initial_state(2, dtype=torch.float64).v.dtype == torch.float64


@settings(max_examples=15, deadline=None)
@given(
    heads=heads_configs,
    n_layers=st.integers(1, 3),
    batch=st.integers(1, 3),
    seq_len=st.integers(1, 9),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(heads=(4, 2), n_layers=1, batch=1, seq_len=1, bias=True, seed=0)
def test_step_loop_equals_forward(heads, n_layers, batch, seq_len, bias, seed) -> None:
    d_model, n_heads = heads
    model = make_model(d_model, n_heads, n_layers, seed, bias=bias)
    x = randn(torch.Generator().manual_seed(seed), batch, seq_len, d_model)
    y, cache = model(x)
    assert y.shape == (batch, seq_len, d_model)
    assert cache.k.shape == (n_layers, batch, n_heads, seq_len, d_model // n_heads)

    state = model.initial_state(batch, dtype=torch.float64)
    ys = []
    for t in range(seq_len):
        y_t, state = model.step(x[:, t], state)
        assert y_t.shape == (batch, d_model)
        assert state.seq_len == t + 1
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, dim=1), y, **TIGHT)
    torch.testing.assert_close(state.k, cache.k, **TIGHT)
    torch.testing.assert_close(state.v, cache.v, **TIGHT)


@settings(max_examples=15, deadline=None)
@given(
    heads=heads_configs,
    n_layers=st.integers(1, 3),
    batch=st.integers(1, 3),
    splits=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    seed=st.integers(0, 2**16),
)
@example(heads=(8, 2), n_layers=2, batch=2, splits=[1, 1, 3], seed=1)
@example(heads=(8, 4), n_layers=1, batch=1, splits=[4, 1], seed=2)
def test_chunked_forward_is_exact(heads, n_layers, batch, splits, seed) -> None:
    d_model, n_heads = heads
    model = make_model(d_model, n_heads, n_layers, seed)
    x = randn(torch.Generator().manual_seed(seed), batch, sum(splits), d_model)
    y, cache = model(x)

    state, ys = None, []
    for chunk in x.split(splits, dim=1):
        y_c, state = model(chunk, state)
        ys.append(y_c)
    torch.testing.assert_close(torch.cat(ys, dim=1), y, **TIGHT)
    torch.testing.assert_close(state.k, cache.k, **TIGHT)
    torch.testing.assert_close(state.v, cache.v, **TIGHT)


@settings(max_examples=15, deadline=None)
@given(
    heads=heads_configs,
    n_layers=st.integers(1, 3),
    batch=st.integers(1, 3),
    seq_len=st.integers(1, 9),
    cached=st.integers(0, 4),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
@example(heads=(8, 2), n_layers=2, batch=2, seq_len=7, cached=0, data=None, seed=0)
def test_forward_of_the_last_positions_equals_the_full_forward(
    heads, n_layers, batch, seq_len, cached, data, seed
) -> None:
    # `last=n` returns what the full forward gives at the last n positions, with the same cache and the
    # same gradients; its last block's MLP sees only those n positions (the work it spares)
    d_model, n_heads = heads
    n = seq_len if data is None else data.draw(st.integers(1, seq_len), label="last")
    model = make_model(d_model, n_heads, n_layers, seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        state = model(randn(gen, batch, cached, d_model))[1] if cached else None
    x = randn(gen, batch, seq_len, d_model)
    seen: list[int] = []
    model.blocks[-1].mlp.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[1]))

    def run(last: int | None) -> tuple[torch.Tensor, seqmem.KVCache, list[torch.Tensor]]:
        y, cache = model(x, state, last=last)
        y = y[:, -n:]
        model.zero_grad(set_to_none=True)
        (y * randn(torch.Generator().manual_seed(seed + 2), *y.shape)).sum().backward()
        return y.detach(), cache, [p.grad.clone() for p in model.parameters()]

    y, cache, grads = run(None)
    y_last, cache_last, grads_last = run(n)
    assert seen == [seq_len, n]
    assert y_last.shape == (batch, n, d_model)
    torch.testing.assert_close(y_last, y, **TIGHT)
    torch.testing.assert_close(cache_last.k, cache.k, **TIGHT)
    torch.testing.assert_close(cache_last.v, cache.v, **TIGHT)
    for g_last, g in zip(grads_last, grads, strict=True):
        torch.testing.assert_close(g_last, g, **TIGHT)


@pytest.mark.parametrize("last", [0, -1, 6, 1.0, True, "1"])
def test_last_outside_the_sequence_is_refused(last) -> None:
    model = seqmem.CausalTransformer(8, n_heads=2)
    with pytest.raises(ValueError, match=r"last must be an int in \[1, seq_len\] = \[1, 5\], got"):
        model(torch.randn(2, 5, 8), last=last)


@settings(max_examples=15, deadline=None)
@given(
    heads=heads_configs,
    n_layers=st.integers(1, 2),
    seq_len=st.integers(2, 10),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_causality(heads, n_layers, seq_len, data, seed) -> None:
    d_model, n_heads = heads
    t = data.draw(st.integers(1, seq_len - 1), label="t")
    model = make_model(d_model, n_heads, n_layers, seed)
    gen = torch.Generator().manual_seed(seed)
    x = randn(gen, 2, seq_len, d_model)
    x_changed = x.clone()
    x_changed[:, t:] = randn(gen, 2, seq_len - t, d_model)
    y, _ = model(x)
    y_changed, _ = model(x_changed)
    torch.testing.assert_close(y_changed[:, :t], y[:, :t], **TIGHT)
    assert not torch.allclose(y_changed[:, t:], y[:, t:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cache_grows_linearly(dtype: torch.dtype) -> None:
    d_model, n_heads, n_layers, batch = 8, 2, 3, 2
    model = seqmem.CausalTransformer(d_model, n_heads=n_heads, n_layers=n_layers).to(dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    state = model.initial_state(batch)
    x = torch.randn(batch, 6, d_model, generator=torch.Generator().manual_seed(0), dtype=dtype)
    for t in range(6):
        assert seqmem.state_nbytes(state) == 2 * n_layers * batch * d_model * t * itemsize
        _, state = model.step(x[:, t], state)
    _, state = model(x, state)  # a chunk of 6 more positions
    assert state.seq_len == 12
    assert seqmem.state_nbytes(state) == 2 * n_layers * batch * d_model * 12 * itemsize


def test_sdpa_attention_matches_eq_1() -> None:
    gen = torch.Generator().manual_seed(0)
    for n_queries, n_keys in [(5, 5), (1, 7), (3, 8), (1, 1)]:
        q = randn(gen, 2, 3, n_queries, 4)
        k, v = randn(gen, 2, 3, n_keys, 4), randn(gen, 2, 3, n_keys, 4)
        torch.testing.assert_close(causal_attention(q, k, v), attention_reference(q, k, v), **TIGHT)


NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf])


@settings(max_examples=25, deadline=None)
@given(
    heads=heads_configs,
    n_layers=st.integers(1, 3),
    batch=st.integers(1, 3),
    seq_len=st.integers(2, 10),
    cached=st.integers(0, 3),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
@example(heads=(8, 2), n_layers=2, batch=2, seq_len=6, cached=0, data=None, seed=0)  # the NaN at step 3
def test_forward_equals_step_loop_for_nonfinite_inputs(heads, n_layers, batch, seq_len, cached, data, seed) -> None:
    d_model, n_heads = heads
    model = make_model(d_model, n_heads, n_layers, seed)
    gen = torch.Generator().manual_seed(seed)
    x = randn(gen, batch, cached + seq_len, d_model)
    if data is None:
        spots = [(0, cached + 3, 0, math.nan)]
    else:
        spots = data.draw(
            st.lists(
                st.tuples(
                    st.integers(0, batch - 1), st.integers(0, cached + seq_len - 1), st.integers(0, d_model - 1),
                    NONFINITE,
                ),
                min_size=1, max_size=4,
            ),
            label="(sequence, step, feature, value)",
        )
    for b, t, f, value in spots:
        x[b, t, f] = value
    prefix = model(x[:, :cached])[1] if cached else None  # a cache that may hold non-finite keys too

    y, cache = model(x[:, cached:], prefix)
    state, ys = prefix, []
    for t in range(cached, cached + seq_len):
        y_t, state = model.step(x[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(y, torch.stack(ys, dim=1), equal_nan=True, **TIGHT)
    torch.testing.assert_close(cache.k, state.k, equal_nan=True, **TIGHT)
    for b in range(batch):  # every output before a sequence's first non-finite input is finite
        first = min((t for bb, t, _, _ in spots if bb == b), default=cached + seq_len)
        assert torch.isfinite(y[b, : max(first - cached, 0)]).all()
        assert torch.isnan(y[b, max(first - cached, 0) :]).all()  # and from there on, as the step loop says


@settings(max_examples=25, deadline=None)
@given(
    n_queries=st.integers(2, 6),
    cached=st.integers(0, 4),
    spots=st.lists(
        st.tuples(st.sampled_from(["k", "v"]), st.integers(0, 9), st.integers(0, 3), NONFINITE), min_size=1, max_size=4
    ),
    seed=st.integers(0, 2**16),
)
@example(n_queries=5, cached=0, spots=[("v", 3, 0, math.nan)], seed=0)  # a hidden NaN value: 0 x NaN
@example(n_queries=5, cached=0, spots=[("k", 4, 1, math.inf)], seed=0)  # a hidden infinite key
@example(n_queries=3, cached=2, spots=[("v", 0, 2, math.nan)], seed=0)  # in the cache: every query sees it
@example(n_queries=2, cached=0, spots=[("k", 0, 0, math.nan), ("k", 1, 0, math.nan)], seed=0)  # all scores NaN
def test_attention_keeps_hidden_nonfinite_entries_away(n_queries, cached, spots, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    S = cached + n_queries
    q = randn(gen, 2, 3, n_queries, 4)
    kv = {"k": randn(gen, 2, 3, S, 4), "v": randn(gen, 2, 3, S, 4)}
    for which, t, f, value in spots:  # single entries, not whole rows: each output feature is checked
        kv[which][1, 2, t % S, f] = value
    got = causal_attention(q, kv["k"], kv["v"])
    # eq. 1 query by query, over the keys each one sees and nothing else
    torch.testing.assert_close(got, attention_reference(q, kv["k"], kv["v"]), equal_nan=True, **TIGHT)
    first = min(t % S for _, t, _, _ in spots)
    assert torch.isfinite(got[..., : max(first - cached, 0), :]).all()  # queries before the first one
    assert torch.isfinite(got[0]).all() and torch.isfinite(got[1, :2]).all()  # other sequences and heads


def test_float32_default_runs_and_trains() -> None:
    model = seqmem.CausalTransformer(16, n_heads=4, n_layers=2)
    x = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(0))
    y, cache = model(x)
    assert y.dtype == cache.k.dtype == torch.float32
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_init() -> None:
    torch.manual_seed(0)
    model = seqmem.CausalTransformer(64, n_heads=4, n_layers=8)
    block = model.blocks[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert block.attn.out_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert block.mlp.fc_out.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert torch.count_nonzero(block.attn.qkv.bias) == 0
    assert torch.equal(model.norm_out.weight, torch.ones(64))
    no_bias = seqmem.CausalTransformer(8, n_heads=2, bias=False)
    assert all("bias" not in name for name, _ in no_bias.named_parameters())


# ---------------------------------------------------------------------- errors
def test_heads_must_divide_d_model() -> None:
    with pytest.raises(ValueError, match=r"d_model=10, n_heads=4"):
        seqmem.CausalTransformer(10, n_heads=4)


def test_head_dim_must_be_even() -> None:
    with pytest.raises(ValueError, match=r"even.*d_model=12, n_heads=4 -> head_dim=3"):
        seqmem.CausalTransformer(12, n_heads=4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"d_model": 0},
        {"d_model": 8, "n_layers": 0},
        {"d_model": 8, "n_heads": 2.0},
        {"d_model": 8, "rope_base": -1.0},
    ],
)
def test_bad_sizes(kwargs) -> None:
    with pytest.raises(ValueError):
        seqmem.CausalTransformer(**kwargs)


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="numba"):
        seqmem.CausalTransformer(8, n_heads=2, backend="numba")


def test_cache_with_wrong_batch() -> None:
    model = seqmem.CausalTransformer(8, n_heads=2)
    _, cache = model(torch.randn(3, 4, 8))
    with pytest.raises(ValueError, match=r"batch.*2.*3"):
        model(torch.randn(2, 4, 8), cache)
    with pytest.raises(ValueError, match=r"batch.*2.*3"):
        model.step(torch.randn(2, 8), cache)


def test_cache_with_mismatched_lengths() -> None:
    model = seqmem.CausalTransformer(8, n_heads=2)
    _, cache = model(torch.randn(1, 4, 8))
    bad = seqmem.KVCache(cache.k, cache.v[:, :, :, :3])
    with pytest.raises(ValueError, match=r"4 positions.*3"):
        model.step(torch.randn(1, 8), bad)


def test_cache_with_wrong_heads() -> None:
    model = seqmem.CausalTransformer(8, n_heads=2)
    other = seqmem.CausalTransformer(8, n_heads=4)
    with pytest.raises(ValueError, match=r"state\.k"):
        model(torch.randn(1, 3, 8), other.initial_state(1))


def test_state_of_wrong_type() -> None:
    model = seqmem.CausalTransformer(8, n_heads=2)
    with pytest.raises(TypeError, match="KVCache"):
        model(torch.randn(1, 3, 8), seqmem.RNNState(torch.zeros(1, 8)))
    with pytest.raises(TypeError, match="KVCache"):
        model.step(torch.randn(1, 8), (torch.zeros(2, 1, 2, 0, 4), torch.zeros(2, 1, 2, 0, 4)))


def test_bad_input() -> None:
    model = seqmem.CausalTransformer(8, n_heads=2)
    with pytest.raises(ValueError, match=r"\(batch, seq_len, 8\)"):
        model(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="seq_len 0"):
        model(torch.randn(2, 0, 8))
    with pytest.raises(TypeError, match="dtype"):
        model(torch.randn(2, 3, 8, dtype=torch.float64))


# ---------------------------------------------------------------------- rotary
@settings(max_examples=20, deadline=None)
@given(
    half_dim=st.integers(1, 8),
    m=st.integers(0, 5000),
    n=st.integers(0, 5000),
    shift=st.integers(-5000, 5000),
    seed=st.integers(0, 2**16),
)
@example(half_dim=1, m=0, n=0, shift=0, seed=0)
def test_rotary_score_depends_only_on_offset(half_dim, m, n, shift, seed) -> None:
    head_dim = 2 * half_dim
    shift = max(shift, -min(m, n))  # keep positions non-negative
    gen = torch.Generator().manual_seed(seed)
    q, k = randn(gen, 1, head_dim), randn(gen, 1, head_dim)

    def score(pos_q: int, pos_k: int) -> torch.Tensor:
        cos_q, sin_q = rotary_cos_sin(torch.tensor([pos_q]), head_dim, dtype=torch.float64)
        cos_k, sin_k = rotary_cos_sin(torch.tensor([pos_k]), head_dim, dtype=torch.float64)
        return (apply_rotary(q, cos_q, sin_q) * apply_rotary(k, cos_k, sin_k)).sum()

    # angles up to ~1e4 rad carry float64 rounding of ~1e-12 rad
    torch.testing.assert_close(score(m + shift, n + shift), score(m, n), rtol=1e-9, atol=1e-9)
    # and a rotation keeps the norm
    cos, sin = rotary_cos_sin(torch.tensor([m]), head_dim, dtype=torch.float64)
    torch.testing.assert_close(apply_rotary(q, cos, sin).norm(), q.norm(), **TIGHT)


def test_rotary_is_eq_34() -> None:
    # RoFormer eq. 34 written out for d = 4: pairs (x1, x2), (x3, x4) turned by m*theta_1, m*theta_2
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    m, base = 3, 100.0
    theta = [1.0, base ** (-2 / 4)]
    cos, sin = rotary_cos_sin(torch.tensor([m]), 4, base, dtype=torch.float64)
    c1, s1, c2, s2 = (
        math.cos(m * theta[0]),
        math.sin(m * theta[0]),
        math.cos(m * theta[1]),
        math.sin(m * theta[1]),
    )
    expected = torch.tensor(
        [[1 * c1 - 2 * s1, 2 * c1 + 1 * s1, 3 * c2 - 4 * s2, 4 * c2 + 3 * s2]], dtype=torch.float64
    )
    torch.testing.assert_close(apply_rotary(x, cos, sin), expected, **TIGHT)
    # position 0 is the identity
    cos0, sin0 = rotary_cos_sin(torch.tensor([0]), 4, base, dtype=torch.float64)
    torch.testing.assert_close(apply_rotary(x, cos0, sin0), x, rtol=0, atol=0)


def test_rotary_rejects_odd_head_dim() -> None:
    with pytest.raises(ValueError, match="even"):
        rotary_cos_sin(torch.arange(3), 5)
