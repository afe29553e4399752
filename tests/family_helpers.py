"""Scaffolding shared by the family tests of the matrix-memory models (linear attention, retention, mLSTM)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from seqmem.testing import assert_close

F64 = torch.float64


def perturbed(factory: Callable[..., torch.nn.Module], seed: int, **kwargs: Any) -> torch.nn.Module:
    """A float64 model with every parameter moved off its initial value by N(0, 0.3^2) noise, so that norms
    at 1, biases and gate weights at 0 do not hide a term of the equations."""
    torch.manual_seed(seed)
    model = factory(**kwargs).double()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=F64))
    return model


def assert_forward_equals_steps(model: Any, x: torch.Tensor, state: Any) -> None:
    """`forward(x, state)` equals `step` over t from `state`: every output and every field of the final state."""
    y, final = model(x, state)
    ys = []
    for t in range(x.shape[1]):
        y_t, state = model.step(x[:, t], state)
        ys.append(y_t)
    assert_close("y", y, torch.stack(ys, 1))
    for field in type(final)._fields:
        assert_close(field, getattr(final, field), getattr(state, field))
