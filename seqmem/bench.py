"""`seqmem bench`: time, peak memory and state size against `seq_len`, for every model and backend.

Three modes are measured, each as the median of repeated runs after warm-up:

- `forward`: the whole sequence, no gradient (inference on a prompt);
- `train`: forward + backward of a scalar loss (one training step, without the optimizer);
- `step`: streaming latency per step at batch size 1, averaged over a stream of `seq_len` steps
  from the initial state (for attention the cost of a step grows with the cache, so the average
  over the stream is what a streaming user pays).

Baselines: `torch.nn.RNN/LSTM/GRU` (oneDNN kernels) for `forward` and `train`, and their `*Cell`
classes for `step`. Peak memory is the peak of the bytes PyTorch's CPU allocator holds during one
run, from `torch.profiler` (allocations made outside PyTorch, e.g. by NumPy, are not seen: the
Numba wrappers allocate their buffers as torch tensors so they are). `state_bytes` is
[`state_nbytes`][seqmem.state_nbytes] of the state after the sequence.

Speed goals are reported here, never asserted in tests: timings depend on the machine and its load.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._memory import check_fits, estimate_forward_bytes, estimate_train_bytes
from ._memory import format_bytes as format_bytes  # re-exported: the CLI formats with it
from ._module import check_choice
from ._threads import threads
from .protocol import state_nbytes
from .registry import ModelSpec, list_models, model_spec, resolve_models

__all__ = [
    "BenchRecord",
    "TargetRecord",
    "bench",
    "compare_baselines",
    "onnx_goals",
    "plot_bench",
    "stream_goals",
    "write_json",
]

MODES = ("forward", "train", "step")


def _torch_twin(name: str, cell: bool) -> type[nn.Module]:
    """A model's `torch.nn` twin from its spec: the sequence module, or the cell (`cell=True`)."""
    return model_spec(name).torch_equivalents[1 if cell else 0]


@dataclass
class BenchRecord:
    """One measured case.

    Attributes:
        model: model name (`lstm`, ...), or `torch.nn.LSTM` etc. for a baseline.
        backend: `torch`, `numba`, or `oneDNN` for a `torch.nn` baseline.
        mode: `forward`, `train` or `step`.
        batch_size: sequences per batch (1 for `step`).
        seq_len: sequence length (for `step`, the length of the stream).
        width: `hidden_size` or `d_model`.
        median_s: median wall time of one run, in seconds (for `step`: of one step).
        min_s: the fastest run, in seconds.
        repeats: number of timed runs.
        peak_bytes: peak bytes held by PyTorch's allocator during one run (`None` if not measured).
        state_bytes: bytes of the state after the sequence (`None` for `torch.nn` baselines).
        threads: torch, numba and BLAS threads used.
        params: number of parameters.
    """

    model: str
    backend: str
    mode: str
    batch_size: int
    seq_len: int
    width: int
    median_s: float
    min_s: float
    repeats: int
    peak_bytes: int | None
    state_bytes: int | None
    threads: int
    params: int

    @property
    def label(self) -> str:
        """`model/backend`, as used in tables and plot legends."""
        return self.model if self.model.startswith("torch.nn") else f"{self.model}/{self.backend}"


@dataclass
class TargetRecord:
    """A speed goal of the Numba backend, measured as a ratio in one run.

    Attributes:
        name: what is compared.
        ours_s: seqmem's time (seconds).
        baseline_s: the baseline's time (seconds).
        speedup: `baseline_s / ours_s`.
        goal: the speed-up the goal asks for (a minimum).
        met: whether `speedup >= goal`.
        note: extra facts (sizes, errors).
    """

    name: str
    ours_s: float
    baseline_s: float
    speedup: float
    goal: float
    met: bool
    note: str = ""


@dataclass
class _Case:
    model: str
    backend: str
    mode: str
    batch_size: int
    seq_len: int
    width: int
    module: nn.Module = field(repr=False)
    is_baseline: bool = False


# ---------------------------------------------------------------------------- building cases
def _build_model(model: str | ModelSpec, width: int, backend: str) -> nn.Module:
    """The model at this width, inputs of the same width, on `backend`."""
    spec = model if isinstance(model, ModelSpec) else model_spec(model)
    return spec.build(width, width, backend=backend) if backend != "torch" else spec.build(width, width)


def _baseline(seq_cls: type[nn.Module], width: int) -> nn.Module:
    return seq_cls(width, width, batch_first=True)


def _timed(fn: Callable[[], Any], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Silence file descriptors 1 and 2 (some torch builds' profiler prints from C++)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak of PyTorch's CPU allocations during `fn()`, from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_fds(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage != 0), key=lambda e: e.time_range.start
    )
    current = peak = 0
    for e in events:
        current += e.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def _runner(case: _Case, x: torch.Tensor) -> Callable[[], Any]:
    m = case.module
    if case.mode == "forward":

        def run() -> Any:
            with torch.no_grad():
                return m(x)

    elif case.mode == "train":
        params = list(m.parameters())

        def run() -> Any:
            for p in params:
                p.grad = None
            y = m(x)[0]
            y.square().mean().backward()

    else:  # step: a stream of seq_len steps, batch 1, no gradient

        def run() -> Any:
            with torch.no_grad():
                state = None
                if case.is_baseline:
                    for t in range(x.shape[1]):
                        state = m(x[:, t], state)
                else:
                    state = m.initial_state(x.shape[0])
                    for t in range(x.shape[1]):
                        _, state = m.step(x[:, t], state)
            return state

    return run


def _cases(
    models: Sequence[ModelSpec],
    backends: Sequence[str] | None,
    modes: Sequence[str],
    seq_lens: Sequence[int],
    batch_sizes: Sequence[int],
    width: int,
    baselines: bool,
) -> Iterator[_Case]:
    for mode in modes:
        batches = [1] if mode == "step" else batch_sizes
        for spec in models:
            for backend in spec.backends:
                if backends is not None and backend not in backends:
                    continue
                module = _build_model(spec, width, backend)
                for B in batches:
                    for T in seq_lens:
                        yield _Case(spec.name, backend, mode, B, T, width, module)
            if baselines and spec.torch_equivalents:
                seq_cls, cell_cls = spec.torch_equivalents
                module = cell_cls(width, width) if mode == "step" else seq_cls(width, width, batch_first=True)
                label = f"torch.nn.{type(module).__name__}"
                for B in batches:
                    for T in seq_lens:
                        yield _Case(label, "oneDNN", mode, B, T, width, module, is_baseline=True)


def _check_memory(
    models: Sequence[ModelSpec],
    backends: Sequence[str] | None,
    modes: Sequence[str],
    seq_len: int,
    batch_size: int,
    width: int,
    step_seq_len: int,
    baselines: bool,
) -> None:
    """Refuse, before anything is built at full size, a grid whose largest case cannot fit in memory.

    The peak of a case grows with its batch and its length, so each model, backend and mode is
    estimated at the largest of both (step mode: batch 1 and the longest stream measured).
    """
    for spec in models:
        makers: list[tuple[str, Callable[[int], nn.Module]]] = [
            (f"{spec.name}/{b}", functools.partial(_build_model, spec, backend=b))
            for b in spec.backends if backends is None or b in backends
        ]
        if baselines and spec.torch_equivalents:
            seq_cls = spec.torch_equivalents[0]
            makers.append((f"torch.nn.{seq_cls.__name__}", functools.partial(_baseline, seq_cls)))
        for label, make in makers:
            for mode in modes:
                B, T = (1, min(seq_len, step_seq_len)) if mode == "step" else (batch_size, seq_len)
                estimate = estimate_train_bytes if mode == "train" else estimate_forward_bytes
                what = f"seqmem.bench: {label} {mode}, batch {B}, seq_len {T}, width {width},"
                check_fits(estimate(make, B, T, width), what=what)


def _default_repeats(seq_len: int, batch: int, quick: bool) -> int:
    work = seq_len * max(batch, 1)
    base = 3 if quick else 7
    return max(2, base if work < 8192 else base // 2 + 1)


def bench(
    models: Sequence[str] | None = None,
    *,
    backends: Sequence[str] | None = None,
    modes: Sequence[str] = MODES,
    seq_lens: Sequence[int] = (64, 256, 1024),
    batch_sizes: Sequence[int] = (32,),
    width: int = 64,
    repeats: int | None = None,
    warmup: int = 1,
    num_threads: int = 1,
    baselines: bool = True,
    memory: bool = True,
    max_step_seq_len: int = 1024,
    memory_max_tokens: int = 8192,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
) -> list[BenchRecord]:
    """Measure time, peak memory and state size of every model x backend against `seq_len`.

    Args:
        models: the models: names, import paths `module:attr`, `ModelSpec`s or classes (default:
            every registered model, `seqmem.list_models()`).
        backends: restrict to these backends (default: every backend each model supports).
        modes: any of `"forward"`, `"train"`, `"step"`.
        seq_lens: sequence lengths `T` to measure.
        batch_sizes: batch sizes for `forward` and `train` (`step` always uses batch 1).
        width: `hidden_size` of RNN/LSTM/GRU (also their `input_size`), `d_model` of the others.
        repeats: timed runs per case (default: 7, fewer for large cases; 3 with `quick`).
        warmup: untimed runs first (compiles numba kernels, warms caches).
        num_threads: torch, numba and BLAS threads (1 by default: the most stable figures on a
            shared CPU).
        baselines: include `torch.nn.RNN/LSTM/GRU` and their cells.
        memory: measure peak memory with `torch.profiler` (one extra untimed run per case).
        max_step_seq_len: longest stream measured in `step` mode (a Python loop per step).
        memory_max_tokens: measure peak memory only for cases with `batch_size * seq_len` at most this
            (the profiler keeps every allocation event: on a long Python loop, such as the reference
            selective scan at B=32, T=1024, its own bookkeeping takes tens of GiB).
        quick: a small grid for smoke tests (`seq_lens` 32 and 128, batch 8, width 32, few repeats).
        progress: called with a description before each case.
        force: run even if the memory estimate of the largest case exceeds the memory available.

    Returns:
        One `BenchRecord` per case.

    Raises:
        ValueError: for unknown model names or modes, non-positive sizes, or, unless `force`, a grid
            whose largest case is estimated to need more memory than the machine has available (the
            message gives the estimate and the memory available).
    """
    specs = resolve_models(models, "seqmem.bench") if models is not None else list_models()
    for mode in modes:
        check_choice("mode", mode, MODES, "seqmem.bench")
    if quick:
        seq_lens, batch_sizes, width = (32, 128), (8,), 32
    for what, values in (("seq_lens", seq_lens), ("batch_sizes", batch_sizes), ("width", [width])):
        if not values or any(int(v) < 1 for v in values):
            raise ValueError(f"seqmem.bench: {what} must be positive integers, got {list(values)}")
    if not force:
        _check_memory(specs, backends, modes, max(seq_lens), max(batch_sizes), width, max_step_seq_len, baselines)
    records: list[BenchRecord] = []
    gen = torch.Generator().manual_seed(0)
    with threads(num_threads):
        for case in _cases(specs, backends, modes, seq_lens, batch_sizes, width, baselines):
            if case.mode == "step" and case.seq_len > max_step_seq_len:
                continue
            if progress is not None:
                progress(f"{case.model}/{case.backend} {case.mode} B={case.batch_size} T={case.seq_len}")
            x = torch.randn(case.batch_size, case.seq_len, width, generator=gen)
            run = _runner(case, x)
            n = repeats if repeats is not None else _default_repeats(case.seq_len, case.batch_size, quick)
            times = _timed(run, n, warmup)
            per = case.seq_len if case.mode == "step" else 1
            # a stream's memory is its state (state_bytes); peak memory is measured for whole sequences
            measure = memory and case.mode != "step" and case.batch_size * case.seq_len <= memory_max_tokens
            peak = _peak_bytes(run) if measure else None
            state_bytes = None
            if not case.is_baseline:
                with torch.no_grad():
                    state_bytes = state_nbytes(case.module(x)[1])
            records.append(
                BenchRecord(
                    model=case.model,
                    backend=case.backend,
                    mode=case.mode,
                    batch_size=case.batch_size,
                    seq_len=case.seq_len,
                    width=width,
                    median_s=statistics.median(times) / per,
                    min_s=min(times) / per,
                    repeats=n,
                    peak_bytes=peak,
                    state_bytes=state_bytes,
                    threads=num_threads,
                    params=sum(p.numel() for p in case.module.parameters()),
                )
            )
    return records


# ---------------------------------------------------------------------------- goals vs baselines
def _median_time(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    return statistics.median(_timed(fn, repeats, warmup))


def _step_time(step: Callable[[Any], Any], state: Any, n_steps: int, repeats: int) -> float:
    def run() -> None:
        s = state
        for _ in range(n_steps):
            s = step(s)

    return _median_time(run, repeats) / n_steps


def _subprocess_seconds(code: str) -> tuple[float, str]:
    out = (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ}
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    seconds, _, extra = out.partition(" ")
    return float(seconds), extra


def compare_baselines(num_threads: int = 1, repeats: int = 7, quick: bool = False) -> list[TargetRecord]:
    """Measure the Numba backend's speed goals against the `torch.nn` baselines, in one run.

    Goals (ratios `baseline / numba`):

    | case | goal |
    | --- | --- |
    | streaming step, B=1, H=64: LSTM and GRU vs `LSTMCell`/`GRUCell` | >= 10 |
    | forward, B=1, T=1000, H=64: LSTM vs `torch.nn.LSTM` | >= 1 |
    | forward, B=32, T=256, H=128: GRU, RNN vs `torch.nn.GRU`/`RNN` | > 1 |
    | forward, B=32, T=256, H=128: LSTM vs `torch.nn.LSTM` | >= 0.5 |
    | train step, B=32, T=256, H=128: LSTM vs `torch.nn.LSTM` autograd | >= 0.5 |
    | selective scan, B=8, D=256, N=16, L=1024: vs the `"torch"` reference loop | >= 30 |
    | `import seqmem` (fresh process), seconds, numba not imported | < 1 s |
    | a second process's first numba call (cache), seconds | < 0.5 s |

    and the streaming and ONNX Runtime goals of `stream_goals` and `onnx_goals` (appended).

    Args:
        num_threads: torch, numba and BLAS threads.
        repeats: timed runs per measurement (median).
        quick: smaller sizes (for smoke tests; the ratios are then not the goals' cases).

    Returns:
        One `TargetRecord` per goal.
    """
    from .ssm.numba_scan import selective_scan_numba
    from .ssm.reference import selective_scan

    results: list[TargetRecord] = []
    gen = torch.Generator().manual_seed(0)

    def add(name: str, ours: float, base: float, goal: float, note: str = "") -> None:
        speedup = base / ours
        results.append(TargetRecord(name, ours, base, speedup, goal, speedup >= goal, note))

    H_small, T_long = (32, 200) if quick else (64, 1000)
    B_big, T_big, H_big = (8, 64, 64) if quick else (32, 256, 128)
    with threads(num_threads), torch.no_grad():
        for name in ("lstm", "gru"):
            ours = _build_model(name, H_small, "numba")
            cell = _torch_twin(name, cell=True)(H_small, H_small)
            x = torch.randn(1, H_small, generator=gen)
            t_ours = _step_time(lambda s, m=ours, x=x: m.step(x, s)[1], ours.initial_state(1), 200, repeats)
            t_base = _step_time(lambda s, c=cell, x=x: c(x, s), None, 200, repeats)
            add(f"step B=1 H={H_small}: {name} numba vs torch.nn.{type(cell).__name__}", t_ours, t_base, 10.0)

        ours = _build_model("lstm", H_small, "numba")
        base = nn.LSTM(H_small, H_small, batch_first=True)
        x = torch.randn(1, T_long, H_small, generator=gen)
        add(
            f"forward B=1 T={T_long} H={H_small}: lstm numba vs torch.nn.LSTM",
            _median_time(lambda: ours(x), repeats),
            _median_time(lambda: base(x), repeats),
            1.0,
        )

        x = torch.randn(B_big, T_big, H_big, generator=gen)
        for name, goal in (("gru", 1.0), ("rnn", 1.0), ("lstm", 0.5)):
            ours = _build_model(name, H_big, "numba")
            base = _torch_twin(name, cell=False)(H_big, H_big, batch_first=True)
            add(
                f"forward B={B_big} T={T_big} H={H_big}: {name} numba vs torch.nn.{type(base).__name__}",
                _median_time(lambda m=ours: m(x), repeats),
                _median_time(lambda m=base: m(x), repeats),
                goal,
            )

    with threads(num_threads):
        for name in ("lstm", "gru", "rnn"):
            ours = _build_model(name, H_big, "numba")
            base = _torch_twin(name, cell=False)(H_big, H_big, batch_first=True)

            def train(m: nn.Module) -> None:
                m.zero_grad(set_to_none=True)
                m(x)[0].square().mean().backward()

            add(
                f"train B={B_big} T={T_big} H={H_big}: {name} numba vs torch.nn.{type(base).__name__}",
                _median_time(lambda m=ours: train(m), repeats),
                _median_time(lambda m=base: train(m), repeats),
                0.5,
            )

        Bs, D, N, L = (2, 64, 16, 256) if quick else (8, 256, 16, 1024)
        u = torch.randn(Bs, L, D, generator=gen)
        delta = torch.rand(Bs, L, D, generator=gen) * 0.1 + 1e-3
        A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(D, 1)
        Bm, Cm = torch.randn(Bs, L, N, generator=gen), torch.randn(Bs, L, N, generator=gen)
        Dv = torch.ones(D)
        with torch.no_grad():
            t_ref = _median_time(lambda: selective_scan(u, delta, A, Bm, Cm, Dv), max(2, repeats // 3), 1)
            t_nb = _median_time(lambda: selective_scan_numba(u, delta, A, Bm, Cm, Dv), repeats)
            y32 = selective_scan_numba(u, delta, A, Bm, Cm, Dv)[0]
            y64 = selective_scan_numba(*(t.double() for t in (u, delta, A, Bm, Cm, Dv)))[0]
        rel = float((y32.double() - y64).norm() / y64.norm())
        add(
            f"selective scan B={Bs} D={D} N={N} L={L}: numba vs torch reference loop",
            t_nb,
            t_ref,
            30.0,
            f"float32 vs float64 relative error {rel:.1e} (goal < 1e-5)",
        )

    t_import, extra = _subprocess_seconds(
        "import sys, time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); import seqmem; "
        "t2 = time.perf_counter(); print(t2 - t0, t2 - t1, 'numba' in sys.modules)"
    )
    own, loaded = extra.split()
    results.append(
        TargetRecord(
            "import seqmem (fresh process, torch included)",
            t_import,
            1.0,
            1.0 / t_import,
            1.0,
            t_import < 1.0 and loaded == "False",
            f"of which seqmem itself {float(own) * 1e3:.0f} ms; numba imported: {loaded}",
        )
    )
    cold = (
        "import time, torch, seqmem; m = seqmem.LSTM(8, 8, backend='numba'); x = torch.randn(1, 4, 8); "
        "t = time.perf_counter(); m(x); print(time.perf_counter() - t)"
    )
    _subprocess_seconds(cold)  # fills the cache if it is empty
    t_cold, _ = _subprocess_seconds(cold)
    results.append(
        TargetRecord(
            "first numba call in a second process (cached)",
            t_cold,
            0.5,
            0.5 / t_cold,
            1.0,
            t_cold < 0.5,
            "seconds, goal < 0.5 s",
        )
    )
    results += stream_goals(num_threads=num_threads, repeats=repeats, quick=quick)
    results += onnx_goals(num_threads=num_threads, repeats=repeats, quick=quick)
    return results


def _ratio_record(name: str, ours: float, base: float, goal: float, note: str = "") -> TargetRecord:
    speedup = base / ours
    return TargetRecord(name, ours, base, speedup, goal, speedup >= goal, note)


def _stream_time(stream: Any, x_t: torch.Tensor, n_steps: int, repeats: int) -> float:
    """Median seconds per `push` over runs of `n_steps` tokens."""
    return _step_time(lambda s: stream.push(x_t), None, n_steps, repeats)


def stream_goals(num_threads: int = 1, repeats: int = 7, quick: bool = False) -> list[TargetRecord]:
    """Per-token latency of streams (`model.stream`, `SequenceNetwork.stream`), batch 1, in one run.

    | case | baseline | goal |
    | --- | --- | --- |
    | LSTM and GRU stream, H=64 (numba) | `torch.nn.LSTMCell`/`GRUCell` per token | >= 8 |
    | mamba block stream, d_model=64 (numba) | the block's `step` on the torch backend | >= 8 |
    | every family's network stream, width 64, token inputs | `SequenceNetwork.step` on torch | >= 1 (0.9 unfused) |

    The recurrences' goal is also `<= 3 us` per token per layer (the note gives the time).
    Networks use each family's default depth; the numba backend where the family has it (the
    transformer streams with its KV cache on torch).

    Args:
        num_threads: torch, numba and BLAS threads.
        repeats: timed runs per measurement (median).
        quick: smaller sizes and shorter streams (smoke tests; not the goals' cases).

    Returns:
        One `TargetRecord` per case.
    """
    from .network import SequenceNetwork

    H = 16 if quick else 64
    n = 50 if quick else 500
    results: list[TargetRecord] = []
    gen = torch.Generator().manual_seed(0)
    with threads(num_threads), torch.no_grad():
        x = torch.randn(1, H, generator=gen)
        for name in ("lstm", "gru"):
            stream = _build_model(name, H, "numba").stream(1)
            cell = _torch_twin(name, cell=True)(H, H)
            t_ours = _stream_time(stream, x, n, repeats)
            t_cell = _step_time(lambda s, c=cell: c(x, s), None, n, repeats)
            results.append(_ratio_record(
                f"stream B=1 H={H}: {name} numba vs torch.nn.{type(cell).__name__}", t_ours, t_cell, 8.0,
                f"{t_ours * 1e6:.2f} us per token per layer (goal <= 3 us)",
            ))  # fmt: skip
        block = _build_model("mamba", H, "numba")
        reference = _build_model("mamba", H, "torch")
        reference.load_state_dict(block.state_dict())
        t_ours = _stream_time(block.stream(1), x, n, repeats)
        t_ref = _step_time(lambda s: reference.step(x, s)[1], reference.initial_state(1), max(10, n // 10), repeats)
        results.append(_ratio_record(f"stream B=1 d_model={H}: mamba block numba vs its torch step", t_ours, t_ref, 8))
        vocab = 64
        tok = torch.tensor([7])
        for name in [spec.name for spec in list_models()]:
            net = SequenceNetwork(name, H, vocab_size=vocab, output_size=vocab)
            fast = copy.deepcopy(net)  # the same weights, on the numba backend where the family has it
            for layer in fast.modules():
                if "numba" in getattr(layer, "backends", ()):
                    layer.backend = "numba"
            stream = fast.stream(1)
            t_ours = _stream_time(stream, tok, n, repeats)
            t_step = _step_time(lambda s, m=net: m.step(tok, s)[1], None, max(10, n // 5), repeats)
            how = "fused numba" if stream.fused else "torch"
            note = f"{t_ours * 1e6:.1f} us per token, {t_ours * 1e6 / net.n_layers:.1f} per layer"
            if not stream.fused:  # the stream runs the layers' step: the goal is to cost no more than it
                note += "; no fused kernel, so the goal is the step's speed within 10%"
            results.append(_ratio_record(
                f"network stream B=1 W={H}: {name} ({net.n_layers} layers, {how}) vs SequenceNetwork.step (torch)",
                t_ours, t_step, 1.0 if stream.fused else 0.9, note,
            ))  # fmt: skip
    return results


def onnx_goals(num_threads: int = 1, repeats: int = 7, quick: bool = False) -> list[TargetRecord]:
    """seqmem against ONNX Runtime's LSTM and GRU operators (extra `seqmem[bench]`), in one run.

    | case | goal |
    | --- | --- |
    | LSTM and GRU stream, B=1, H=64, vs the ONNX op called once per token | >= 4 |
    | LSTM forward, B=1, T=1000, H=64, numba vs the ONNX op | >= 1 |
    | LSTM and GRU forward, B=32, T=256, H=128, numba vs the ONNX op | >= 1 |

    The ONNX graphs carry the same weights as seqmem's models (gates reordered), and the note gives
    the largest output difference. Without `onnx` and `onnxruntime` nothing is measured: a warning
    says so and the list is empty.

    Args:
        num_threads: torch, numba, BLAS and ONNX Runtime intra-op threads.
        repeats: timed runs per measurement (median).
        quick: smaller sizes (smoke tests; not the goals' cases).

    Returns:
        One `TargetRecord` per case (none without ONNX Runtime).
    """
    from ._onnx import OnnxRecurrent, onnx_missing

    missing = onnx_missing()
    if missing:
        warnings.warn(f"ONNX Runtime baselines skipped: {missing}", stacklevel=2)
        return []
    H_small, T_long = (16, 100) if quick else (64, 1000)
    B_big, T_big, H_big = (4, 32, 32) if quick else (32, 256, 128)
    n = 50 if quick else 500
    results: list[TargetRecord] = []
    gen = torch.Generator().manual_seed(0)
    with threads(num_threads), torch.no_grad():
        for name in ("lstm", "gru"):
            ours = _build_model(name, H_small, "numba")
            onnx = OnnxRecurrent(ours.to_torch(), num_threads)
            x = torch.randn(1, H_small, generator=gen)
            x_np = x[None].numpy()  # (1, 1, H): one token, sequence first
            t_ours = _stream_time(ours.stream(1), x, n, repeats)
            t_onnx = _step_time(lambda s, o=onnx, x1=x_np: o.step(x1, s), onnx.initial_state(1), n, repeats)
            diff = onnx.max_abs_diff(ours.to_torch(), torch.randn(1, 8, H_small, generator=gen))
            results.append(_ratio_record(
                f"stream B=1 H={H_small}: {name} numba vs ONNX Runtime {name.upper()} op per token",
                t_ours, t_onnx, 4.0, f"ONNX vs torch.nn max |diff| {diff:.1e}",
            ))  # fmt: skip
        cases = [("lstm", 1, T_long, H_small)] + [(name, B_big, T_big, H_big) for name in ("lstm", "gru")]
        for name, B, T, H in cases:
            ours = _build_model(name, H, "numba")
            onnx = OnnxRecurrent(ours.to_torch(), num_threads)
            x = torch.randn(B, T, H, generator=gen)
            x_np = x.transpose(0, 1).contiguous().numpy()  # (T, B, H)
            results.append(_ratio_record(
                f"forward B={B} T={T} H={H}: {name} numba vs ONNX Runtime {name.upper()} op",
                _median_time(lambda m=ours, xs=x: m(xs), repeats),
                _median_time(lambda o=onnx, xs=x_np: o.run(xs), repeats),
                1.0,
            ))  # fmt: skip
    return results


# ---------------------------------------------------------------------------- output
def write_json(records: Iterable[BenchRecord | TargetRecord], path: str | os.PathLike[str]) -> Path:
    """Write records as a JSON list, atomically (a temporary file, then a rename).

    Args:
        records: bench or target records.
        path: the JSON file to write.

    Returns:
        The path written.
    """
    from ._files import atomic_write_bytes

    return atomic_write_bytes(path, json.dumps([asdict(r) for r in records], indent=1).encode("utf-8"))


_PANELS = (
    ("the models, torch backend", lambda r: r.backend == "torch" and not r.model.startswith("torch.nn")),
    ("numba kernels and torch.nn", lambda r: r.backend != "torch" or r.model.startswith("torch.nn")),
)
_MEASURES = {
    # measure: (file prefix, y label, modes)
    "median_s": ("bench_time", "seconds per call", MODES),
    "peak_bytes": ("bench_memory", "peak bytes allocated", ("forward", "train")),
    "state_bytes": ("bench_state", "state bytes after T steps", ("step",)),
}
_MODE_TITLES = {
    "forward": "forward, whole sequence, no gradient",
    "train": "train step, forward + backward",
    "step": "streaming: seconds per token",
}


def _bench_figure(records: Sequence[BenchRecord], measure: str, mode: str) -> Any:
    """One figure: `measure` against `seq_len` for one mode, a panel per group of implementations."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    from .plotstyle import FIGURE_WIDTH, line_style

    rows = [r for r in records if r.mode == mode and getattr(r, measure)]
    batch = max(r.batch_size for r in rows)
    rows = [r for r in rows if r.batch_size == batch]
    if measure == "state_bytes":  # the same for every backend
        panels = [("the same on every backend", [r for r in rows if _PANELS[0][1](r)])]
    else:
        panels = [(title, [r for r in rows if keep(r)]) for title, keep in _PANELS]
    panels = [(title, rs) for title, rs in panels if rs]
    fig = Figure(figsize=(FIGURE_WIDTH, 0.6 + 3.3 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    seq_lens = sorted({r.seq_len for r in rows})
    _, ylabel, _ = _MEASURES[measure]
    for ax, (title, rs) in zip(axes, panels, strict=True):
        for label in dict.fromkeys(r.label for r in rs):
            pts = sorted((r.seq_len, getattr(r, measure)) for r in rs if r.label == label)
            backend = next(r.backend for r in rs if r.label == label)
            name = label.partition("/")[0] if measure == "state_bytes" else label
            ax.plot(*zip(*pts, strict=True), label=name, **line_style(label, backend))
        if len(seq_lens) > 1 and measure != "state_bytes" and ax is axes[0]:
            lo = min(getattr(r, measure) for r in rs)
            for power, name, style in ((1, "O(T) guide", ":"), (2, "O(T²) guide", "-.")):
                ys = [lo * (t / seq_lens[0]) ** power for t in seq_lens]
                ax.plot(seq_lens, ys, style, color="grey", lw=1.2, marker="", label=name)
        ax.set(xscale="log", yscale="log", ylabel="seconds per token" if mode == "step" and measure == "median_s"
               else ylabel, title=title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes[-1].set_xlabel("seq_len T")
    axes[-1].set_xticks(seq_lens, [str(t) for t in seq_lens])
    axes[-1].xaxis.set_minor_locator(NullLocator())
    what = {"median_s": _MODE_TITLES[mode], "peak_bytes": f"{mode}: peak memory",
            "state_bytes": "state carried after T tokens"}[measure]
    fig.suptitle(f"{what} (batch {batch})")
    return fig


def plot_bench(records: Sequence[BenchRecord], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Log-log plots of time, peak memory and state size against `seq_len`, one figure per mode.

    Time: `bench_time_<mode>.png` for each mode measured; peak memory: `bench_memory_<mode>.png` for
    `forward` and `train`; state: `bench_state.png`. Each figure stacks two panels on shared axes:
    the models on their `"torch"` backend (with O(T) and O(T^2) guides), then the `"numba"` kernels
    and the `torch.nn` baselines. Every model keeps its colour and marker (`seqmem.plotstyle`); the
    line style tells the implementation (solid torch, dashed numba, dotted torch.nn). At the largest
    batch size measured. Written atomically.

    Args:
        records: from `bench`.
        out_dir: folder for the PNG files (created if missing).

    Returns:
        The paths written.

    Raises:
        ImportError: if matplotlib is not installed (`pip install seqmem[plot]`).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'seqmem[plot]'") from err
    from .plotstyle import plot_style, save_figure

    out = Path(out_dir)
    written = []
    for measure, (prefix, _, modes) in _MEASURES.items():
        for mode in modes:
            if not any(r.mode == mode and getattr(r, measure) for r in records):
                continue
            with plot_style():
                fig = _bench_figure(records, measure, mode)
                name = f"{prefix}.png" if measure == "state_bytes" else f"{prefix}_{mode}.png"
                written.append(save_figure(fig, out / name))
    return written


def format_seconds(s: float) -> str:
    """Seconds in the most readable unit: `3.2 us`, `12.5 ms`, `1.24 s`."""
    if s < 1e-3:
        return f"{s * 1e6:.3g} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"
