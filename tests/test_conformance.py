"""The protocol's properties (DESIGN.md 2 and 6) on every model and every backend it lists.

Hypothesis draws a config (`seqmem.testing.model_configs`), an input sequence
(`seqmem.testing.sequences`: shape, dtype, scale and seed) and the seed of the parameters; each
property of `seqmem.testing` is a test of its own, per model and backend, so a failure names what
broke where. Edge cases are pinned with `@example`: one step, a batch of one, every size 1,
saturating inputs (x * 50) in both dtypes, odd sizes, and a long sequence (512 steps for the
recurrences, 128 for attention).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import seqmem
from seqmem.testing import (
    ModelConfig,
    check_backend_parity,
    check_batch_independent,
    check_causal,
    check_chunked,
    check_gradients,
    check_inputs_unchanged,
    check_sequence_model,
    check_shapes,
    check_state_size,
    check_step_equals_forward,
    model_configs,
    random_sequence,
    seeds,
    sequences,
)

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
F32, F64 = torch.float32, torch.float64
NAMES = seqmem.model_names()

# every size 1 (the transformer's smallest head is 2: rotary pairs)
MINIMAL = {
    "rnn": ModelConfig("rnn", input_size=1, hidden_size=1),
    "lstm": ModelConfig("lstm", input_size=1, hidden_size=1, peephole=True),
    "gru": ModelConfig("gru", input_size=1, hidden_size=1, reset_after=False),
    "transformer": ModelConfig("transformer", d_model=2, n_heads=1, n_layers=1, mlp_ratio=1),
    "mamba": ModelConfig("mamba", d_model=1, d_state=1, d_conv=1, expand=1),
    "s4d": ModelConfig("s4d", d_model=1, d_state=1, d_conv=1, expand=1),
    "mingru": ModelConfig("mingru", input_size=1, hidden_size=1),
    "minlstm": ModelConfig("minlstm", input_size=1, hidden_size=1),
    "hawk": ModelConfig("hawk", d_model=1, n_layers=1, d_rnn=1, mlp_ratio=1, d_conv=1),
    "griffin": ModelConfig(
        "griffin", d_model=2, n_heads=1, n_layers=2, window=1, d_rnn=1, mlp_ratio=1, d_conv=1,
        block_types=("recurrent", "attention"),
    ),
    "linear-attention": ModelConfig("linear-attention", d_model=1, n_heads=1, n_layers=1, mlp_ratio=1, chunk_size=1),
    "retention": ModelConfig("retention", d_model=1, n_heads=1, n_layers=1, mlp_ratio=1, chunk_size=1),
    "mlstm": ModelConfig("mlstm", d_model=1, n_heads=1, expand=1, d_conv=1, qkv_block_size=1, chunk_size=1),
}
TYPICAL = {
    "rnn": ModelConfig("rnn", input_size=3, hidden_size=5),
    "lstm": ModelConfig("lstm", input_size=3, hidden_size=5, peephole=True),
    "gru": ModelConfig("gru", input_size=3, hidden_size=5, reset_after=False),
    "transformer": ModelConfig("transformer", d_model=8, n_heads=2, n_layers=2),
    "mamba": ModelConfig("mamba", d_model=4, d_state=4, d_conv=4, expand=2),
    "s4d": ModelConfig("s4d", d_model=4, d_state=4, d_conv=4, expand=2),
    "mingru": ModelConfig("mingru", input_size=3, hidden_size=5),
    "minlstm": ModelConfig("minlstm", input_size=3, hidden_size=5),
    "hawk": ModelConfig("hawk", d_model=4, n_layers=2),
    "griffin": ModelConfig("griffin", d_model=8, n_heads=2, n_layers=3, window=4),  # 16 steps cross the window
    # chunks of 4 positions: the 16-step examples cross chunk boundaries, the 512-step one 128 of them
    "linear-attention": ModelConfig("linear-attention", d_model=8, n_heads=2, n_layers=2, chunk_size=4),
    "retention": ModelConfig("retention", d_model=8, n_heads=2, n_layers=2, chunk_size=4),
    "mlstm": ModelConfig("mlstm", d_model=4, n_heads=2, qkv_block_size=2, chunk_size=4),
}
ODD = {
    "rnn": ModelConfig("rnn", input_size=7, hidden_size=3, nonlinearity="relu", bias=False),
    "lstm": ModelConfig("lstm", input_size=7, hidden_size=3, bias=False, forget_bias=0.0),
    "gru": ModelConfig("gru", input_size=7, hidden_size=3, bias=False),
    "transformer": ModelConfig("transformer", d_model=6, n_heads=3, n_layers=1, bias=False, rope_base=10.0),
    "mamba": ModelConfig("mamba", d_model=5, d_state=3, d_conv=3, expand=1, dt_rank=2, bias=True),
    "s4d": ModelConfig("s4d", d_model=5, d_state=3, d_conv=2, expand=1, conv_bias=False),
    "mingru": ModelConfig("mingru", input_size=7, hidden_size=3, bias=False),
    "minlstm": ModelConfig("minlstm", input_size=7, hidden_size=3, bias=False),
    "hawk": ModelConfig("hawk", d_model=5, n_layers=2, d_rnn=3, mlp_ratio=2, d_conv=3, c=2.0, bias=False),
    "griffin": ModelConfig(
        "griffin", d_model=6, n_heads=3, n_layers=3, window=3, d_rnn=5, d_conv=2,
        block_types=("attention", "recurrent"), bias=False, rope_base=10.0,
    ),
    "linear-attention": ModelConfig(
        "linear-attention", d_model=5, n_heads=2, d_k=3, d_v=2, n_layers=1, mlp_ratio=2, decay=(0.9, 0.6),
        gate=True, bias=False, chunk_size=3,
    ),
    "retention": ModelConfig("retention", d_model=6, n_heads=3, d_v=3, n_layers=2, bias=False, chunk_size=5),
    "mlstm": ModelConfig(
        "mlstm", d_model=3, n_heads=3, d_conv=3, qkv_block_size=2, forget_gate="exp", bias=True, chunk_size=5
    ),
}
LONG = {name: 128 if name == "transformer" else 512 for name in NAMES}
GROWTH = {name: "linear" if name == "transformer" else "constant" for name in NAMES}

BACKENDS = {name: tuple(MINIMAL[name].build().backends) for name in NAMES}
PAIRS = [pytest.param(name, backend, id=f"{name}-{backend}") for name in NAMES for backend in BACKENDS[name]]
PARITY = [
    pytest.param(name, backend, id=f"{name}-{backend}")
    for name in NAMES
    for backend in BACKENDS[name]
    if backend != "torch"
]


def _edge_cases(name: str, long: bool) -> list[tuple[ModelConfig, torch.Tensor]]:
    small, usual, odd = MINIMAL[name], TYPICAL[name], ODD[name]
    cases = [
        (small, random_sequence(1, 1, small.input_size, dtype=F64, seed=1)),  # T = 1, batch 1, sizes 1
        (small, random_sequence(1, 9, small.input_size, dtype=F32, seed=2)),
        (usual, random_sequence(3, 16, usual.input_size, dtype=F64, seed=3, scale=50.0)),  # saturated
        (usual, random_sequence(2, 16, usual.input_size, dtype=F32, seed=4, scale=50.0)),
        (odd, random_sequence(4, 5, odd.input_size, dtype=F64, seed=5)),
    ]
    if long and not NO_JIT:  # without the JIT the kernels run as plain Python: keep to drawn sizes
        cases.append((usual, random_sequence(2, LONG[name], usual.input_size, dtype=F64, seed=6)))
        cases.append((usual, random_sequence(2, LONG[name], usual.input_size, dtype=F32, seed=7)))
    return cases


@st.composite
def _cases(draw: Callable[[st.SearchStrategy[Any]], Any], name: str) -> tuple[ModelConfig, torch.Tensor]:
    config = draw(model_configs(name, max_size=6))
    x = draw(sequences(config.input_size, batch=(1, 4), seq_len=(1, 24), scale=(0.3, 3.0)))
    return config, x


def _run(
    name: str,
    backend: str,
    prop: str,
    body: Callable[[torch.nn.Module, torch.Tensor, int], Any],
    long: bool = False,
) -> None:
    """Run `body(model, x, seed)` under hypothesis for one model family and backend; `long` adds the
    long-sequence example (where rounding accumulates over the steps)."""

    @given(case=_cases(name), seed=seeds())
    def test(case: tuple[ModelConfig, torch.Tensor], seed: int) -> None:
        config, x = case
        model = config.build(seed=seed, dtype=x.dtype, backend=backend)
        body(model, x, seed)

    for case in _edge_cases(name, long):
        test = example(case=case, seed=0)(test)
    # one example database entry per property, model and backend
    test._hypothesis_internal_add_digest = f"{prop}/{name}/{backend}".encode()
    test()


@pytest.mark.parametrize(("name", "backend"), PAIRS)
def test_shapes_and_dtypes(name, backend):
    _run(name, backend, "shapes", lambda m, x, seed: check_shapes(m, x))


@pytest.mark.parametrize(("name", "backend"), PAIRS)
def test_inputs_unchanged(name, backend):
    _run(name, backend, "inputs", lambda m, x, seed: check_inputs_unchanged(m, x))


@pytest.mark.parametrize(("name", "backend"), PAIRS)
def test_causal(name, backend):
    _run(name, backend, "causal", lambda m, x, seed: check_causal(m, x, seed=seed))


@pytest.mark.parametrize(("name", "backend"), PAIRS)
def test_batch_independent(name, backend):
    _run(name, backend, "batch", lambda m, x, seed: check_batch_independent(m, x, seed=seed))


@pytest.mark.parametrize(("name", "backend"), PAIRS)
def test_step_equals_forward(name, backend):
    _run(name, backend, "step", lambda m, x, seed: check_step_equals_forward(m, x), long=True)


@pytest.mark.parametrize(("name", "backend"), PAIRS)
def test_chunked_streaming(name, backend):
    _run(name, backend, "chunked", lambda m, x, seed: check_chunked(m, x, seed=seed))


@pytest.mark.parametrize(("name", "backend"), PAIRS)
def test_gradients(name, backend):
    _run(name, backend, "gradients", lambda m, x, seed: check_gradients(m, x, seed=seed), long=True)


@pytest.mark.parametrize(("name", "backend"), PAIRS)
def test_state_size(name, backend):
    """O(1) state for the recurrences (RNN, LSTM, GRU, SSM), O(t) for the KV cache."""
    _run(name, backend, "state", lambda m, x, seed: check_state_size(m, x, growth=GROWTH[name]))


@pytest.mark.parametrize(("name", "backend"), PARITY)
def test_backend_parity(name, backend):
    """Outputs, states, a step and every gradient (input, initial state, parameters) equal "torch"'s,
    in both dtypes, over the long sequence too."""

    def parity(model, x, seed):
        return check_backend_parity(model, x, backends=(backend,), seed=seed)

    _run(name, backend, "parity", parity, long=True)


@pytest.mark.parametrize(("name", "backend"), PAIRS)
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_check_sequence_model_passes(name, backend, dtype):
    """The all-in-one check, as a user calls it, holds for the default-sized models (parity and state size
    included)."""
    model = TYPICAL[name].build(backend=backend)
    report = check_sequence_model(model, dtype=dtype, seed=3, state_growth=GROWTH[name])
    assert report.passed
    expected = [
        "protocol",
        "shapes and dtypes",
        "state shapes",
        "inputs unchanged",
        "gradients",
        "causality",
        "batch independence",
        "step == forward",
        "chunked streaming",
        "backend parity",
        "state size",
    ]
    assert [r.name for r in report] == expected
    assert report.skipped == ([] if len(BACKENDS[name]) > 1 else ["backend parity"])
    assert next(model.parameters()).dtype == F32  # checked on a copy: the model is untouched


def test_every_model_is_covered():
    """Every registered model appears in the conformance matrix, on every backend it lists."""
    assert set(MINIMAL) == set(TYPICAL) == set(ODD) == set(NAMES)
    assert {p.values[0] for p in PAIRS} == set(NAMES)
    for name in NAMES:
        assert "torch" in BACKENDS[name]
