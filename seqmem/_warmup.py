"""Compile the numba kernels ahead of time (`seqmem warmup`), so that the first real call does not wait.

Numba compiles a kernel on its first call for each argument type (here: each dtype) and keeps it in its
disk cache; later processes only load it (see `seqmem._numba`). Warming up runs every numba path of a
model once per dtype at a tiny size, for each of its spec's `kernel_variants` (the constructor arguments
that select different kernels, e.g. the LSTM with and without peepholes): the forward scan with and
without autograd, its backward, and the streaming step with and without autograd.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .registry import ModelSpec, list_models, model_spec

__all__ = ["WarmupRecord", "numba_models", "warmup"]


@dataclass(frozen=True)
class WarmupRecord:
    """One model warmed up in one dtype.

    Attributes:
        model: the model's name.
        dtype: `"float32"` or `"float64"`.
        seconds: wall time of the warm-up.
        compiled: kernels numba compiled (0: all were loaded from the cache).
    """

    model: str
    dtype: str
    seconds: float
    compiled: int


def _variants(spec: ModelSpec) -> list[torch.nn.Module]:
    """A tiny instance of the model for each of its spec's kernel variants, on the numba backend."""
    width = spec.step() * 4
    return [spec.build(width, width, backend="numba", **kwargs) for kwargs in spec.kernel_variants or ({},)]


def numba_models() -> list[str]:
    """The names of the registered models that have a numba backend."""
    return [spec.name for spec in list_models() if "numba" in spec.backends]


def _detached(state):
    return type(state)(*(t.detach() for t in state)) if isinstance(state, tuple) else state.detach()


def _exercise(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Every numba path of `model` once: forward with and without autograd, backward, step with and without."""
    model = model.to(dtype)
    x = torch.randn(2, 3, model.input_size, dtype=dtype, requires_grad=True)
    y, state = model(x)
    loss = y.sum() + sum(t.sum() for t in (state if isinstance(state, tuple) else (state,)))
    loss.backward()
    with torch.no_grad():
        model(x[:1].detach())
        model.step(x[:, 0].detach(), _detached(state))
    model.step(x[:, 0], _detached(state))[0].sum().backward()


def warmup(
    models: Sequence[str] | None = None,
    dtypes: Sequence[torch.dtype | str] = (torch.float32, torch.float64),
    progress: Callable[[str], None] | None = None,
) -> list[WarmupRecord]:
    """Compile (or load from the cache) the numba kernels of these models in these dtypes.

    Args:
        models: model names (default: every model with a numba backend).
        dtypes: `torch.float32` and/or `torch.float64` (or their names).
        progress: called with a short description before each model and dtype.

    Returns:
        One record per model and dtype: time taken and kernels compiled.

    Raises:
        ValueError: for an unknown model name or one without a numba backend.
    """
    from ._numba import compile_count  # imports numba: only here, not at `import seqmem`

    available = numba_models()
    names = list(models) if models is not None else available
    for name in names:
        if name not in available:
            raise ValueError(
                f"warmup: model {name!r} has no numba backend; models with one: {', '.join(available)}"
            )
    records = []
    for name in names:
        for dtype in dtypes:
            dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
            label = str(dtype).removeprefix("torch.")
            if progress is not None:
                progress(f"{name} {label}")
            before, t0 = compile_count(), time.perf_counter()
            for model in _variants(model_spec(name)):
                _exercise(model, dtype)
            records.append(WarmupRecord(name, label, time.perf_counter() - t0, compile_count() - before))
    return records
