"""Streams (`model.stream`, `SequenceNetwork.stream`) equal `step`, see weight updates, own their
state, and run one per thread; `step` itself is free of shared caches.

Every family is covered on both backends: the numba backend runs the fused kernels
(`seqmem/<family>/numba_stream.py`), the torch backend (and the transformer) `step` or the
capacity-doubling KV cache.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch import nn

import seqmem
from seqmem.network import SequenceNetwork
from seqmem.stream import Stream

from .kernel_helpers import NO_JIT

MODELS = {
    "rnn": lambda: seqmem.RNN(3, 5),
    "rnn-relu-nobias": lambda: seqmem.RNN(3, 5, nonlinearity="relu", bias=False),
    "lstm": lambda: seqmem.LSTM(3, 5),
    "lstm-peephole-nobias": lambda: seqmem.LSTM(3, 5, peephole=True, bias=False),
    "gru": lambda: seqmem.GRU(3, 5),
    "gru-cho-nobias": lambda: seqmem.GRU(3, 5, reset_after=False, bias=False),
    "mamba": lambda: seqmem.SelectiveSSM(3, d_state=4, expand=2),
    "mamba-conv1-bias": lambda: seqmem.SelectiveSSM(3, d_state=2, d_conv=1, bias=True, conv_bias=False),
    "s4d": lambda: seqmem.SelectiveSSM(3, d_state=4, selective=False),
    "transformer": lambda: seqmem.CausalTransformer(4, n_heads=2, n_layers=2),
}
NETWORKS = ("rnn", "lstm", "gru", "mamba", "s4d", "transformer")
TIGHT = {"rtol": 1e-10, "atol": 1e-12}
LOOSE = {"rtol": 1e-4, "atol": 1e-5}


def _model(name: str, backend: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = MODELS[name]().to(dtype)
    if backend in model.backends:
        model.backend = backend
    with torch.no_grad():  # away from the initialisation's special values (D = 1, LayerNorm = 1)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _steps(model, x: torch.Tensor, state=None):
    """`step` over every position of `x`: the outputs `(B, T, O)` and the last state."""
    ys = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = model.step(x[:, t], state)
            ys.append(y)
    return torch.stack(ys, dim=1), state


def _assert_states_close(a, b, **tol) -> None:
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, **tol)
        return
    assert type(a) is type(b), (type(a), type(b))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        _assert_states_close(x, y, **tol)


def _uses_kernel(model) -> bool:
    return getattr(model, "backend", "torch") == "numba"


# ---------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("name", list(MODELS))
@given(B=st.integers(1, 3), T=st.integers(1, 4 if NO_JIT else 9), seed=st.integers(0, 2**31 - 1))
@example(B=1, T=1, seed=0)
def test_model_stream_equals_step(name, backend, B, T, seed):
    model = _model(name, backend, seed=seed % 1000)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, model.input_size, generator=gen, dtype=torch.float64)
    y_ref, s_ref = _steps(model, x)
    y_fwd, _ = model(x)
    torch.testing.assert_close(y_ref, y_fwd.detach(), **TIGHT)  # the oracle itself
    stream = model.stream(B)
    assert stream.fused == _uses_kernel(model)
    ys = [stream.push(x[:, t]).clone() for t in range(T)]
    torch.testing.assert_close(torch.stack(ys, dim=1), y_ref, **TIGHT)
    _assert_states_close(stream.state, s_ref, **TIGHT)
    assert stream.position == T
    stream.reset()
    assert stream.position == 0
    torch.testing.assert_close(stream.push_many(x), y_ref, **TIGHT)
    _assert_states_close(stream.state, s_ref, **TIGHT)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_stream_float32(name):
    model = _model(name, "numba", torch.float32)
    x = torch.randn(2, 7, model.input_size)
    y_ref, s_ref = _steps(model, x)
    stream = model.stream(2)
    torch.testing.assert_close(stream.push_many(x), y_ref, **LOOSE)
    _assert_states_close(stream.state, s_ref, **LOOSE)


@pytest.mark.parametrize("name", ["lstm", "gru", "mamba", "transformer"])
def test_reset_to_a_state_resumes_the_stream(name):
    model = _model(name, "numba")
    x = torch.randn(2, 8, model.input_size, dtype=torch.float64)
    whole = model.stream(2).push_many(x)
    first = model.stream(2)
    first.push_many(x[:, :5])
    saved = first.state
    second = model.stream(2)
    second.reset(saved)
    assert second.position == (5 if name == "transformer" else 0)  # a cache knows its length
    torch.testing.assert_close(second.push_many(x[:, 5:]), whole[:, 5:], **TIGHT)
    # the state is the caller's copy: changing it changes no stream
    for t in saved:
        t.add_(1.0)
    torch.testing.assert_close(first.push_many(x[:, 5:]), whole[:, 5:], **TIGHT)


@pytest.mark.parametrize("name", ["lstm", "mamba", "transformer"])
def test_reset_rejects_a_foreign_state(name):
    model = _model(name, "numba")
    stream = model.stream(2)
    with pytest.raises(TypeError, match="state must be"):
        stream.reset(seqmem.RNN(3, 5).initial_state(2))
    with pytest.raises(ValueError, match="sequences|shape"):
        stream.reset(model.initial_state(3))


def test_push_returns_the_stream_buffer_and_push_many_a_new_tensor():
    model = _model("lstm", "numba")
    stream = model.stream(1)
    x = torch.randn(1, 2, 3, dtype=torch.float64)
    y1 = stream.push(x[:, 0])
    kept = y1.clone()
    y2 = stream.push(x[:, 1])
    assert y1.data_ptr() == y2.data_ptr()  # documented: clone to keep it
    assert not torch.equal(kept, y2)
    a, b = stream.push_many(x), stream.push_many(x)
    assert a.data_ptr() != b.data_ptr()


# ---------------------------------------------------------------------------------------------- networks
def _network(name: str, tokens: bool, backend: str, dtype=torch.float64, n_layers=2, seed=0) -> SequenceNetwork:
    torch.manual_seed(seed)
    io = {"vocab_size": 7} if tokens else {"input_size": 3}
    kwargs = {"backend": backend} if backend == "numba" and name != "transformer" else {}
    net = SequenceNetwork(name, 8, output_size=5, n_layers=n_layers, **io, **kwargs).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def _inputs(net: SequenceNetwork, B: int, T: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if net.tokens:
        return torch.randint(0, net.vocab_size, (B, T), generator=gen)
    return torch.randn(B, T, net.input_size, generator=gen, dtype=net.head.weight.dtype)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("tokens", [True, False])
@pytest.mark.parametrize("name", NETWORKS)
def test_network_stream_equals_step(name, tokens, backend):
    net = _network(name, tokens, backend)
    x = _inputs(net, 2, 6)
    y_ref, s_ref = _steps(net, x)
    stream = net.stream(2)
    assert stream.fused == (backend == "numba" and name != "transformer")
    ys = torch.stack([stream.push(x[:, t]).clone() for t in range(6)], dim=1)
    torch.testing.assert_close(ys, y_ref, **TIGHT)
    _assert_states_close(stream.state, s_ref, **TIGHT)
    stream.reset()
    torch.testing.assert_close(stream.push_many(x), y_ref, **TIGHT)
    torch.testing.assert_close(y_ref, net(x)[0].detach(), **TIGHT)


@pytest.mark.parametrize("name", ["lstm", "mamba"])
def test_network_stream_float32_and_any_int_tokens(name):
    net = _network(name, True, "numba", torch.float32)
    x = _inputs(net, 3, 5)
    y_ref, _ = _steps(net, x)
    stream = net.stream(3)
    torch.testing.assert_close(stream.push_many(x.to(torch.int32)), y_ref, **LOOSE)
    stream.reset()
    torch.testing.assert_close(stream.push(x[:, 0].to(torch.uint8)), y_ref[:, 0], **LOOSE)


def test_network_stream_rejects_bad_tokens_before_any_update():
    net = _network("gru", True, "numba")
    stream = net.stream(2)
    stream.push(torch.tensor([1, 2]))
    before = stream.state
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 7\)"):
        stream.push_many(torch.tensor([[1, 2], [3, 7]]))
    with pytest.raises(ValueError, match=r"token ids"):
        stream.push(torch.tensor([-1, 0]))
    _assert_states_close(stream.state, before, rtol=0, atol=0)
    assert stream.position == 1
    with pytest.raises(ValueError, match="integer tensor"):
        stream.push(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="batch 2"):
        stream.push(torch.tensor([1, 2, 3]))


def test_model_stream_input_errors():
    model = _model("lstm", "numba")
    stream = model.stream(2)
    with pytest.raises(TypeError, match="dtype"):
        stream.push(torch.randn(2, 3))  # float32 into a float64 model, as step
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        stream.push(torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="batch 2"):
        stream.push(torch.randn(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="seq_len >= 1"):
        stream.push_many(torch.randn(2, 0, 3, dtype=torch.float64))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            model.stream(bad)


def test_a_fused_stack_over_many_layers_and_a_deep_transformer():
    for name in ("lstm", "mamba", "transformer"):
        net = _network(name, True, "numba", n_layers=3)
        x = _inputs(net, 1, 5)
        torch.testing.assert_close(net.stream(1).push_many(x), _steps(net, x)[0], **TIGHT)


# ---------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "mamba"])
def test_stream_sees_every_kind_of_weight_update(name):
    net = _network(name, True, "numba")
    stream = net.stream(1)
    body = net.layers[0].mixer if hasattr(net.layers[0], "mixer") else net.layers[0]
    tokens = iter(range(100))

    def check(expect_fused: bool = True) -> None:
        """The stream and a fresh `step` from the stream's state agree on the next token."""
        x = torch.tensor([next(tokens) % 7])
        state = stream.state
        with torch.no_grad():
            y_ref, _ = net.step(x, state)
        torch.testing.assert_close(stream.push(x), y_ref, **TIGHT)
        assert stream.fused == expect_fused

    check()
    with torch.no_grad():
        next(body.parameters()).mul_(1.5)  # in place (an optimiser step)
    check()
    with torch.no_grad():
        net.head.bias.data.add_(0.25)  # through .data: no version bump
    check()
    net.embed.weight.data = net.embed.weight.data * 2  # re-bound storage
    check()
    first = next(iter(body._parameters))
    setattr(body, first, nn.Parameter(getattr(body, first).detach() * 0.5))  # a new Parameter
    check()
    net.load_state_dict({k: v * 1.1 for k, v in net.state_dict().items()})
    check()
    net.float()  # a new dtype: the stream follows, its state cast at the next push
    with torch.no_grad():
        x = torch.tensor([3])
        y_ref, _ = net.step(x, seqmem.map_state(stream.state, lambda t: t.float()))
    torch.testing.assert_close(stream.push(x), y_ref, rtol=1e-5, atol=1e-6)
    assert stream.fused and stream.state[0][0].dtype == torch.float32


def test_stream_falls_back_when_the_kernel_cannot_read_a_parameter():
    model = _model("lstm", "numba")
    stream = model.stream(1)
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    stream.push(x[:, 0])
    model.weight_hh.data = model.weight_hh.data.t().contiguous().t()  # same values, not contiguous
    with torch.no_grad():
        y_ref, _ = model.step(x[:, 1], stream.state)
    torch.testing.assert_close(stream.push(x[:, 1]), y_ref, **TIGHT)
    assert not stream.fused and stream.position == 2


def test_step_sees_writes_through_data_and_keeps_no_chunk_alive():
    """The old step cached transposed weights (stale after `.data` writes) and cut states out of
    shared chunks (a kept state pinned the chunk); the kernel step reads in place, allocates exact."""
    model = _model("lstm", "numba")
    x = torch.randn(2, 3, dtype=torch.float64)
    state = model.initial_state(2)
    with torch.no_grad():
        model.step(x, state)
        model.weight_hh.data.mul_(2.0)  # invisible to version counters
        y, new = model.step(x, state)
        ref = seqmem.LSTM(3, 5).double()
        ref.load_state_dict(model.state_dict())
        y_ref, _ = ref.step(x, state)
    torch.testing.assert_close(y, y_ref, **TIGHT)
    for t in new:
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


# ---------------------------------------------------------------------------------------------- threads
def _in_threads(fn, n: int) -> list:
    results: list = [None] * n
    errors: list = []

    def run(i: int) -> None:
        try:
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize("name", ["lstm", "gru", "mamba"])
def test_one_stream_per_thread_on_a_shared_network(name):
    net = _network(name, True, "numba")
    xs = [_inputs(net, 1 + i % 2, 40, seed=i) for i in range(4)]
    expected = [_steps(net, x)[0] for x in xs]

    def work(i: int) -> torch.Tensor:
        stream = net.stream(xs[i].shape[0])
        return torch.stack([stream.push(xs[i][:, t]).clone() for t in range(xs[i].shape[1])], dim=1)

    for got, want in zip(_in_threads(work, 4), expected, strict=True):
        torch.testing.assert_close(got, want, **TIGHT)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "mamba"])
def test_step_from_several_threads_with_different_batch_sizes(name):
    """The LSTM's old step plan was shared and unlocked: heap corruption or a state of another batch."""
    model = _model(name, "numba")
    xs = [torch.randn(1 + i, 30, model.input_size, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
          for i in range(4)]
    expected = [_steps(copy.deepcopy(model), x) for x in xs]

    def work(i: int):
        return _steps(model, xs[i])

    for (y, s), (y_ref, s_ref) in zip(_in_threads(work, 4), expected, strict=True):
        torch.testing.assert_close(y, y_ref, **TIGHT)
        _assert_states_close(s, s_ref, **TIGHT)


def test_one_stream_used_by_two_threads_at_once_is_refused():
    model = _model("gru", "numba")
    stream = model.stream(1)
    stream._lock.acquire()  # another thread inside push
    try:
        with pytest.raises(RuntimeError, match="another thread"):
            stream.push(torch.randn(1, 3, dtype=torch.float64))
    finally:
        stream._lock.release()


# ---------------------------------------------------------------------------------------------- transformer
def test_transformer_stream_grows_its_cache_and_reports_exact_state():
    from seqmem.transformer.stream import KVStream

    model = _model("transformer", "torch")
    stream = KVStream(model, 2, capacity=2)
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    y_ref, s_ref = _steps(model, x)
    ys = [stream.push(x[:, t]) for t in range(9)]
    torch.testing.assert_close(torch.stack(ys, dim=1), y_ref, **TIGHT)
    assert stream.capacity == 16
    state = stream.state
    assert state.seq_len == 9 and seqmem.state_nbytes(state) == seqmem.state_nbytes(s_ref)
    _assert_states_close(state, s_ref, **TIGHT)


def test_transformer_step_allocates_one_cache_and_leaves_the_old_one():
    model = _model("transformer", "torch")
    x = torch.randn(1, 3, 4, dtype=torch.float64)
    _, state = model(x[:, :2])
    kept = state.k.clone()
    with torch.no_grad():
        y, new = model.step(x[:, 2], state)
    assert torch.equal(state.k, kept) and new.seq_len == 3
    torch.testing.assert_close(y, model(x)[0][:, 2].detach(), **TIGHT)


def test_stream_type_and_repr():
    stream = _model("rnn", "numba").stream(1)
    assert isinstance(stream, Stream)
    assert "fused=True" in repr(stream)
