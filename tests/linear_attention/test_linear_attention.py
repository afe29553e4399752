"""Linear attention and retention: the equations by hand, recurrent == parallel == chunkwise, the module."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import seqmem
from seqmem.linear_attention import RETENTION, LinearAttention, LinearAttentionState, multiscale_decay
from seqmem.linear_attention.chunk import linear_attention_chunk
from seqmem.linear_attention.parallel import decay_mask, linear_attention_parallel
from seqmem.linear_attention.reference import elu_feature_map, linear_attention_recurrent, linear_attention_step
from seqmem.testing import assert_close, check_sequence_model, random_sequence
from tests.family_helpers import assert_forward_equals_steps, perturbed

F64 = torch.float64

# (batch, n_heads, seq_len, d_k, d_v)
shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 20), st.integers(1, 4), st.integers(1, 4))
decay_kinds = st.sampled_from(["none", "one", "per-head"])


def qkv(seed: int, B: int, H: int, T: int, dk: int, dv: int, dtype: torch.dtype = F64, positive: bool = True):
    """Queries and keys as the module makes them (elu+1 features, or raw), values and an initial state."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64).to(dtype)

    q, k = randn(B, H, T, dk), randn(B, H, T, dk)
    if positive:
        q, k = elu_feature_map(q), elu_feature_map(k)
    v = randn(B, H, T, dv)
    S0, z0 = randn(B, H, dk, dv), elu_feature_map(randn(B, H, dk))
    return q, k, v, S0, z0


def gammas(kind: str, H: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor | None:
    if kind == "none":
        return None
    gen = torch.Generator().manual_seed(seed + 99)
    if kind == "one":
        return torch.full((H,), 0.8, dtype=dtype)
    return (0.3 + 0.7 * torch.rand(H, generator=gen, dtype=F64)).to(dtype)  # in (0.3, 1]


def assert_same(name: str, expected, actual, dtype=F64, long: bool = False) -> None:
    """Outputs and both state fields (z may be None on both sides)."""
    (o1, (S1, z1)), (o2, (S2, z2)) = expected, actual
    assert_close(f"{name}: o", o1, o2, dtype=dtype, long=long)
    assert_close(f"{name}: S", S1, S2, dtype=dtype, long=long)
    assert (z1 is None) == (z2 is None)
    if z1 is not None:
        assert_close(f"{name}: z", z1, z2, dtype=dtype, long=long)


# ---------------------------------------------------------------------- the equations by hand
def test_feature_map_is_elu_plus_one() -> None:
    x = torch.tensor([-30.0, -1.0, 0.0, 0.5, 3.0], dtype=F64)
    expected = torch.tensor([math.exp(-30.0), math.exp(-1.0), 1.0, 1.5, 4.0], dtype=F64)
    assert torch.equal(elu_feature_map(x), expected)
    assert bool((elu_feature_map(torch.randn(1000, dtype=F64) * 30) > 0).all())


@pytest.mark.parametrize("normalize", [True, False])
def test_reference_two_steps_by_hand(normalize: bool) -> None:
    """One head, d_k = 2, d_v = 1, gamma = 0.5: S, z and o written out from eqs. (S_t = g S + k v^T)."""
    g, eps = 0.5, 1e-6
    q = torch.tensor([[1.0, 2.0], [3.0, 1.0]], dtype=F64)  # (T, dk)
    k = torch.tensor([[2.0, 1.0], [1.0, 4.0]], dtype=F64)
    v = torch.tensor([[3.0], [-1.0]], dtype=F64)  # (T, dv)
    S0, z0 = torch.tensor([[1.0], [2.0]], dtype=F64), torch.tensor([1.0, 1.0], dtype=F64)
    o, (S, z) = linear_attention_recurrent(
        q[None, None], k[None, None], v[None, None], torch.tensor([g], dtype=F64),
        normalize=normalize, eps=eps, initial_state=(S0[None, None], z0[None, None] if normalize else None),
    )
    S1 = [[g * 1 + 2 * 3], [g * 2 + 1 * 3]]  # [[6.5], [4.0]]
    S2 = [[g * S1[0][0] + 1 * -1], [g * S1[1][0] + 4 * -1]]  # [[2.25], [-2.0]]
    num = [1 * S1[0][0] + 2 * S1[1][0], 3 * S2[0][0] + 1 * S2[1][0]]  # q_t . S_t
    z1 = [g * 1 + 2, g * 1 + 1]
    z2 = [g * z1[0] + 1, g * z1[1] + 4]
    den = [1 * z1[0] + 2 * z1[1] + eps, 3 * z2[0] + 1 * z2[1] + eps]
    expected = [n / d for n, d in zip(num, den)] if normalize else num
    torch.testing.assert_close(o[0, 0, :, 0], torch.tensor(expected, dtype=F64), rtol=1e-15, atol=0)
    torch.testing.assert_close(S[0, 0], torch.tensor(S2, dtype=F64), rtol=1e-15, atol=0)
    if normalize:
        torch.testing.assert_close(z[0, 0], torch.tensor(z2, dtype=F64), rtol=1e-15, atol=0)
    else:
        assert z is None


def test_without_decay_it_is_masked_attention_without_softmax() -> None:
    """gamma = 1: o_n = sum_{m<=n} (phi(q_n).phi(k_m)) v_m / sum_{m<=n} phi(q_n).phi(k_m) (Katharopoulos eq. 9)."""
    q, k, v, _, _ = qkv(0, 2, 2, 7, 3, 4)
    scores = torch.tril(q @ k.transpose(-1, -2))  # (B, H, T, T): sim(q_n, k_m), m <= n
    expected = (scores @ v) / (scores.sum(-1, keepdim=True) + 1e-6)
    o, _ = linear_attention_recurrent(q, k, v)
    assert_close("o", expected, o)


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_normalised_output_is_an_average_of_values(shape, seed) -> None:
    """Without decay and with positive features, each output is a convex combination of the values seen."""
    B, H, T, dk, dv = shape
    q, k, v, _, _ = qkv(seed, B, H, T, dk, dv)
    o, _ = linear_attention_recurrent(q, k, v, eps=1e-300)
    v_min = torch.cummin(v, dim=2).values
    v_max = torch.cummax(v, dim=2).values
    slack = 1e-12 * (1 + v.abs().max())
    assert bool((o >= v_min - slack).all()) and bool((o <= v_max + slack).all())


def test_decay_mask() -> None:
    gamma = torch.tensor([0.5, 1.0], dtype=F64)
    D = decay_mask(gamma, 4, dtype=F64)
    for h, g in enumerate(gamma.tolist()):
        for n in range(4):
            for m in range(4):
                assert math.isclose(D[h, n, m].item(), g ** (n - m) if n >= m else 0.0, rel_tol=1e-15)
    assert torch.equal(decay_mask(None, 3, dtype=F64)[0], torch.tril(torch.ones(3, 3, dtype=F64)))
    tiny = decay_mask(torch.tensor([1e-3]), 600, dtype=torch.float32)  # gamma^-599 would overflow above the diagonal
    assert bool(tiny.isfinite().all()) and tiny[0, 0, 1].item() == 0.0 and tiny[0, 599, 0].item() == 0.0


def test_multiscale_decay() -> None:
    assert multiscale_decay(4).tolist() == [1 - 2**-5, 1 - 2**-6, 1 - 2**-7, 1 - 2**-8]
    with pytest.raises(ValueError, match="n_heads"):
        multiscale_decay(0)


# ---------------------------------------------------------------------- three forms, one function
@given(shape=shapes, kind=decay_kinds, normalize=st.booleans(), init=st.booleans(), seed=st.integers(0, 2**16))
@example(shape=(1, 1, 1, 1, 1), kind="none", normalize=True, init=False, seed=0)
@example(shape=(1, 1, 1, 1, 1), kind="per-head", normalize=False, init=True, seed=1)
def test_parallel_equals_recurrent(shape, kind, normalize, init, seed) -> None:
    B, H, T, dk, dv = shape
    q, k, v, S0, z0 = qkv(seed, B, H, T, dk, dv, positive=normalize)
    gamma = gammas(kind, H, seed)
    state = (S0, z0 if normalize else None) if init else None
    expected = linear_attention_recurrent(q, k, v, gamma, normalize=normalize, initial_state=state)
    assert_same("parallel", expected, linear_attention_parallel(q, k, v, gamma, normalize=normalize,
                                                                initial_state=state))


@given(shape=shapes, kind=decay_kinds, normalize=st.booleans(), init=st.booleans(), chunk=st.integers(1, 25),
       seed=st.integers(0, 2**16))
@example(shape=(2, 2, 12, 3, 2), kind="per-head", normalize=True, init=True, chunk=4, seed=0)  # full chunks only
@example(shape=(2, 2, 13, 3, 2), kind="one", normalize=False, init=True, chunk=4, seed=1)  # and a tail of 1
@example(shape=(1, 1, 1, 1, 1), kind="none", normalize=True, init=False, chunk=1, seed=2)
def test_chunkwise_equals_recurrent(shape, kind, normalize, init, chunk, seed) -> None:
    B, H, T, dk, dv = shape
    q, k, v, S0, z0 = qkv(seed, B, H, T, dk, dv, positive=normalize)
    gamma = gammas(kind, H, seed)
    state = (S0, z0 if normalize else None) if init else None
    expected = linear_attention_recurrent(q, k, v, gamma, normalize=normalize, initial_state=state)
    actual = linear_attention_chunk(q, k, v, gamma, chunk_size=chunk, normalize=normalize, initial_state=state)
    assert_same(f"chunk_size={chunk}", expected, actual)


@pytest.mark.parametrize("form", ["parallel", "chunk"])
@pytest.mark.parametrize("normalize", [True, False])
def test_gradients_equal_the_recurrent_forms(form: str, normalize: bool) -> None:
    """d loss / d (q, k, v, S0, z0) through the parallel and chunkwise forms equal those through the loop."""
    q, k, v, S0, z0 = qkv(3, 2, 2, 11, 3, 2, positive=normalize)
    gamma = torch.tensor([0.9, 0.7], dtype=F64)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, S0, z0)]
    weights = torch.Generator().manual_seed(5)

    def grads(fn):
        q_, k_, v_, S_, z_ = leaves
        o, (S, z) = fn(q_, k_, v_, gamma, normalize=normalize, initial_state=(S_, z_ if normalize else None))
        outs = [o, S] + ([z] if normalize else [])
        loss = sum((t * torch.randn(t.shape, generator=weights.manual_seed(i), dtype=F64)).sum()
                   for i, t in enumerate(outs))
        used = leaves if normalize else leaves[:4]
        return torch.autograd.grad(loss, used)

    def chunked(*args, **kwargs):
        return linear_attention_chunk(*args, chunk_size=4, **kwargs)

    expected = grads(linear_attention_recurrent)
    actual = grads(linear_attention_parallel if form == "parallel" else chunked)
    for name, e, a in zip(("q", "k", "v", "S0", "z0"), expected, actual):
        assert_close(f"d/d{name}", e, a)


def test_float32_long_chunkwise_against_float64() -> None:
    """512 steps in float32 through chunks of 64 stay within the long-scan tolerance of the float64 loop."""
    q, k, v, S0, z0 = qkv(7, 2, 2, 512, 4, 4)
    gamma = multiscale_decay(2)
    expected = linear_attention_recurrent(q, k, v, gamma, initial_state=(S0, z0))
    q32, k32, v32, S32, z32 = (t.float() for t in (q, k, v, S0, z0))
    actual = linear_attention_chunk(q32, k32, v32, gamma.float(), chunk_size=64, initial_state=(S32, z32))
    assert_same("float32", expected, actual, dtype=torch.float32, long=True)


def test_step_matches_one_position_of_the_loop() -> None:
    q, k, v, S0, z0 = qkv(11, 2, 3, 1, 2, 2)
    o, state = linear_attention_recurrent(q, k, v, initial_state=(S0, z0))
    o_t, state_t = linear_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], (S0, z0))
    assert torch.equal(o[:, :, 0], o_t) and torch.equal(state[0], state_t[0]) and torch.equal(state[1], state_t[1])


# ---------------------------------------------------------------------- the module
def make(seed: int, **kwargs) -> LinearAttention:
    return perturbed(LinearAttention, seed, **kwargs)


VARIANTS = {
    "katharopoulos": {},
    "decayed": {"decay": (0.9, 0.5)},
    "retention": RETENTION,
    "unnormalised-elu": {"normalize": False, "gate": True},
    "group-norm-only": {"decay": 0.95, "group_norm": True, "bias": False},
}


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_module_passes_conformance(variant: str, backend: str) -> None:
    """Every property, and (numba) parity with the chunkwise torch form: outputs, states, gradients."""
    model = make(0, d_model=6, n_heads=2, n_layers=2, chunk_size=3, **VARIANTS[variant])
    model.backend = backend
    report = check_sequence_model(model, x=random_sequence(2, 11, 6, dtype=F64, seed=1), state_growth="constant")
    assert report.passed and report.skipped == []


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_module_forward_equals_step_loop_across_chunks(variant: str) -> None:
    """Chunks of 4 over 19 steps (4 full chunks and a tail), from a non-zero state: forward == step loop."""
    model = make(1, d_model=8, n_heads=2, n_layers=2, chunk_size=4, **VARIANTS[variant])
    x = random_sequence(3, 19, 8, dtype=F64, seed=2)
    _, state0 = model(random_sequence(3, 5, 8, dtype=F64, seed=3))
    assert_forward_equals_steps(model, x, state0)


def test_chunk_size_does_not_change_the_function() -> None:
    x = random_sequence(2, 17, 4, dtype=F64, seed=4)
    ys = []
    for chunk_size in (1, 3, 16, 17, 64):
        model = make(2, d_model=4, n_heads=2, chunk_size=chunk_size, decay="multiscale")
        ys.append(model(x))
    for y, state in ys[1:]:
        assert_close("y", ys[0][0], y)
        assert_close("S", ys[0][1].S, state.S)


def test_state_shapes_and_size() -> None:
    model = LinearAttention(12, n_heads=3, n_layers=2, d_k=5, d_v=2)
    state = model.initial_state(4)
    assert isinstance(state, LinearAttentionState) and state.batch_size == 4
    assert state.S.shape == (2, 4, 3, 5, 2) and state.z.shape == (2, 4, 3, 5)
    sizes = {seqmem.state_nbytes(model(torch.randn(1, T, 12))[1]) for T in (1, 7, 300)}
    assert sizes == {2 * 3 * 5 * (2 + 1) * 4}  # layers x heads x d_k x (d_v + 1) float32, whatever T
    retention = LinearAttention(12, n_heads=3, d_k=5, d_v=2, **RETENTION)
    assert retention.initial_state(4).z.shape == (2, 4, 3, 0)
    assert seqmem.state_nbytes(retention(torch.randn(1, 9, 12))[1]) == 2 * 3 * 5 * 2 * 4


def test_registry_names() -> None:
    la = seqmem.build("linear-attention", 8)
    assert isinstance(la, LinearAttention) and la.decays is None and la.normalize and la.n_heads == 4
    ret = seqmem.build("retention", 8)
    assert ret.decays.tolist() == multiscale_decay(4).tolist()
    assert (ret.feature_map, ret.normalize, ret.gate, ret.group_norm) == ("identity", False, True, True)
    spec = seqmem.model_spec("retention")
    assert spec.build(6, 6).n_heads == 2 and spec.build(7, 7).n_heads == 1  # heads chosen to divide the width
    assert spec.step({"n_heads": 3}) == 3 and spec.step({"n_heads": 3, "d_k": 2, "d_v": 2}) == 1
    with pytest.raises(ValueError, match="decay must be 'multiscale'"):
        seqmem.build("retention", 8, decay=None)
    assert spec.stacking == "block" and spec.color == "#999933" and spec.marker == "p"
    assert seqmem.model_spec("linear-attention").color == "#AA4499"


def test_same_parameters_as_the_transformer_at_the_same_width() -> None:
    """Linear attention only replaces the attention: same projections, MLP and norms as CausalTransformer."""
    la = LinearAttention(16, n_heads=4, n_layers=3)
    tf = seqmem.CausalTransformer(16, n_heads=4, n_layers=3)
    assert sum(p.numel() for p in la.parameters()) == sum(p.numel() for p in tf.parameters())


def test_network_stacks_it_as_a_block() -> None:
    net = seqmem.SequenceNetwork("retention", 8, vocab_size=5, output_size=3, n_layers=3)
    assert len(net.layers) == 1 and net.layers[0].n_layers == 3 and isinstance(net.norm, torch.nn.Identity)
    logits, state = net(torch.randint(0, 5, (2, 9)))
    assert logits.shape == (2, 9, 3) and state[0].S.shape == (3, 2, 4, 2, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"d_model": 6, "n_heads": 4}, ValueError, "divisible by n_heads"),
        ({"d_model": 8, "decay": 0.0}, ValueError, r"\(0, 1\]"),
        ({"d_model": 8, "decay": 1.5}, ValueError, r"\(0, 1\]"),
        ({"d_model": 8, "n_heads": 2, "decay": (0.9,)}, ValueError, "one value per head"),
        ({"d_model": 8, "decay": "fast"}, ValueError, "unknown decay"),
        ({"d_model": 8, "decay": True}, TypeError, "decay must be"),
        ({"d_model": 8, "feature_map": "relu"}, ValueError, "unknown feature_map"),
        ({"d_model": 8, "feature_map": "identity"}, ValueError, "positive features"),
        ({"d_model": 8, "chunk_size": 0}, ValueError, "chunk_size"),
        ({"d_model": 8, "eps": 0.0}, ValueError, "eps"),
        ({"d_model": 8, "d_k": 0}, ValueError, "d_k"),
        ({"d_model": 8, "backend": "cuda"}, ValueError, "supported backends"),
    ],
)
def test_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        LinearAttention(**kwargs)


def test_explicit_head_sizes_allow_any_width() -> None:
    model = LinearAttention(7, n_heads=3, d_k=2, d_v=5)
    assert model.head_dims == (2, 5)
    assert model(torch.randn(2, 4, 7))[0].shape == (2, 4, 7)
    assert seqmem.build("linear-attention", 7, n_heads=3, d_k=2, d_v=5).head_dims == (2, 5)
