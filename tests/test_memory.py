"""Memory estimates: close to the peaks torch.profiler measures, exact extrapolation, and a clear refusal."""

from __future__ import annotations

import tracemalloc

import pytest
import torch
from typer.testing import CliRunner

import seqmem
from seqmem._memory import (
    MemoryEstimate,
    available_memory_bytes,
    check_fits,
    estimate_forward_bytes,
    estimate_train_bytes,
)
from seqmem.bench import _build_model, _peak_bytes, bench
from seqmem.cli import app

# measured / estimated peak, for every model, backend and mode: the estimate errs on the side of too much, and
# never by more than a factor of 2 (0.63 .. 1.00 at bench sizes, batch 4-32, seq_len 256-1024, width 32-128)
LOW, HIGH = 0.5, 1.25
CASES = [(spec.name, backend) for spec in seqmem.list_models() for backend in spec.backends]


def _measured(run) -> int:
    """Peak bytes of `run()`: PyTorch's allocations (torch.profiler) plus NumPy's (tracemalloc: the numba buffers)."""
    run()  # warm up: compile, first allocations
    torch_peak = _peak_bytes(run)
    tracemalloc.start()
    try:
        run()
        numpy_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return torch_peak + numpy_peak


def _pass(module, x, train: bool, loss=lambda out: out.square().mean()):
    params = list(module.parameters())

    def run():
        if train:
            for p in params:
                p.grad = None
            loss(module(x)[0]).backward()
        else:
            with torch.no_grad():
                module(x)

    return run


@pytest.mark.slow
@pytest.mark.parametrize("train", [False, True], ids=["forward", "train"])
@pytest.mark.parametrize("name, backend", CASES)
@pytest.mark.parametrize("B, T, W", [(4, 64, 24), (2, 160, 40)])
def test_estimate_of_a_model_is_close_to_the_measured_peak(name, backend, train, B, T, W):
    torch.manual_seed(0)
    model = _build_model(name, W, backend)
    x = torch.randn(B, T, W, generator=torch.Generator().manual_seed(0))
    est = (estimate_train_bytes if train else estimate_forward_bytes)(model, B, T)
    assert est.parameters == sum(p.numel() for p in model.parameters()) * 4
    assert est.inputs == B * T * W * 4
    assert est.gradients == (est.parameters if train else 0) and est.optimizer == 0
    ratio = _measured(_pass(model, x, train)) / (est.activations + est.gradients)  # what the pass allocates
    assert LOW <= ratio <= HIGH, f"measured / estimated = {ratio:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize("train", [False, True], ids=["forward", "train"])
@pytest.mark.parametrize("name, backend", CASES)
def test_estimate_of_a_network_is_close_to_the_measured_peak(name, backend, train):
    B, T, V, O = 3, 50, 10, 10
    torch.manual_seed(0)
    net = seqmem.SequenceNetwork(name, 16, vocab_size=V, output_size=O, n_layers=2, backend=backend)
    x = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, O, (B, T), generator=torch.Generator().manual_seed(1))
    run = _pass(net, x, train, loss=lambda logits: torch.nn.functional.cross_entropy(logits.reshape(-1, O), y.reshape(-1)))
    est = (estimate_train_bytes if train else estimate_forward_bytes)(net, B, T)
    assert est.inputs == 2 * B * T * 8  # int64 tokens and targets
    ratio = _measured(run) / (est.activations + est.gradients)
    assert LOW <= ratio <= HIGH, f"measured / estimated = {ratio:.2f}"


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("cls", [torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU])
def test_estimate_of_a_torch_nn_baseline(cls, train):
    torch.manual_seed(0)
    model = cls(24, 24, batch_first=True)
    est = (estimate_train_bytes if train else estimate_forward_bytes)(model, 4, 64)
    ratio = _measured(_pass(model, torch.randn(4, 64, 24), train)) / (est.activations + est.gradients)
    assert LOW <= ratio <= HIGH, f"measured / estimated = {ratio:.2f}"


@pytest.mark.parametrize("name", seqmem.model_names())
def test_a_name_is_extrapolated_exactly_from_small_networks(name):
    """Above 256 the network is not built: three small ones are, and every part is a polynomial in the width."""
    width = 288  # a multiple of 16: the SSM's dt_rank = width / 16 exactly
    kwargs = {"vocab_size": 7, "output_size": 5, "n_layers": 2, "d_state": 4} if name in ("mamba", "s4d") else {
        "vocab_size": 7, "output_size": 5, "n_layers": 2}
    built = seqmem.SequenceNetwork(name, width, **kwargs)
    for estimate in (estimate_forward_bytes, estimate_train_bytes):
        got = estimate(name, 8, 300, width, **kwargs)
        want = estimate(built, 8, 300)
        assert got.parameters == want.parameters
        assert got.inputs == want.inputs
        assert got.activations == pytest.approx(want.activations, rel=1e-6)


def test_tbptt_and_optimizer_states():
    full = estimate_train_bytes("transformer", 4, 1024, 64, vocab_size=3, output_size=2, optimizer_states=2)
    assert full.optimizer == 2 * full.parameters == 2 * full.gradients
    chunked = estimate_train_bytes("transformer", 4, 1024, 64, vocab_size=3, output_size=2, tbptt=128)
    assert chunked.inputs == full.inputs  # the whole batch is in memory
    assert chunked.activations < full.activations / 2  # one chunk's activations, behind a cache of 896 positions
    lstm = [estimate_train_bytes("lstm", 4, 1024, 64, vocab_size=3, output_size=2, tbptt=k).activations
            for k in (64, 128, 2048)]
    per_position = (lstm[1] - lstm[0]) / 64  # a recurrence holds what its chunk holds, linear in its length
    assert per_position > 0 and lstm[0] - 64 * per_position == pytest.approx(lstm[1] - 128 * per_position)
    assert lstm[2] - lstm[1] == pytest.approx((1024 - 128) * per_position)  # tbptt >= seq_len: the whole sequence


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 0}, ValueError, "batch_size must be a positive int, got 0"),
    ({"seq_len": 2.5}, ValueError, "seq_len must be a positive int, got 2.5"),
    ({"width": None}, ValueError, "width must be a positive int, got None"),
    ({"width": 65, "model": "transformer"}, ValueError, "width divisible by 2, got 65"),
    ({"model": 3}, TypeError, "expects a model name, a module or make"),
    ({"model": "elman"}, ValueError, "unknown model 'elman'"),
    ({"tbptt": 0}, ValueError, "tbptt must be a positive int or None, got 0"),
    ({"optimizer_states": -1}, ValueError, "optimizer_states must be an int >= 0"),
])
def test_bad_arguments(kwargs, error, match):
    args = {"model": "lstm", "batch_size": 2, "seq_len": 8, "width": 300, **kwargs}
    with pytest.raises(error, match=match):
        estimate_train_bytes(args.pop("model"), **args)


def test_available_memory_is_read_from_the_machine():
    available = available_memory_bytes()
    assert isinstance(available, int) and 0 < available
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert available <= total


def test_check_fits_refuses_with_the_estimate_and_the_memory_available():
    est = MemoryEstimate("training step of lstm, batch 32, seq_len 1000000, width 64", parameters=10 * 2**10,
                         gradients=10 * 2**10, optimizer=0, inputs=2**20, activations=50 * 2**30)
    with pytest.raises(ValueError, match=r"training step of lstm, batch 32, seq_len 1000000, width 64 needs about "
                                         r"50 GiB \(activations 50 GiB, parameters 10 KiB, gradients 10 KiB, "
                                         r"inputs 1 MiB\); this machine has 8 GiB available"):
        check_fits(est, available=8 * 2**30)
    with pytest.raises(ValueError, match=r"^sweep run 3 needs about 50 GiB"):
        check_fits(est, what="sweep run 3", available=8 * 2**30)
    with pytest.raises(ValueError, match=r"this needs about 3 KiB; this machine has 1 KiB"):
        check_fits(3 * 2**10, available=2**10)
    check_fits(est, available=est.total)  # it fits exactly
    check_fits(est, available=8 * 2**30, force=True)  # told to try anyway
    huge = estimate_train_bytes("mamba", 32, 10**7, 64, vocab_size=4, output_size=2)
    with pytest.raises(ValueError, match="available"):
        check_fits(huge)  # against this machine's memory


def test_bench_refuses_a_grid_that_cannot_fit_before_building_it(monkeypatch):
    built = []
    monkeypatch.setattr(seqmem.bench, "_timed", lambda *a, **k: built.append(a) or [0.0])
    with pytest.raises(ValueError, match=r"seqmem.bench: lstm/torch forward, batch 32, seq_len 10000000, width 64, "
                                         r"needs about .* GiB .*available"):
        bench(["lstm"], seq_lens=[64, 10_000_000])
    assert built == []  # refused before the first case


def test_cli_bench_with_an_impossible_length_ends_with_a_clear_error():
    result = CliRunner().invoke(app, ["bench", "--seq-lens", "10000000", "--models", "rnn,transformer"])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert "needs about" in result.output and "available" in result.output
