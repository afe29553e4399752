"""Checks of task options, and a sampler of distinct positions, shared by the task families (private)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def check_int(where: str, name: str, value: Any, least: int) -> int:
    """Return `value` if it is an int (not a bool) of at least `least`, else raise a `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{where}: {name} must be an int >= {least}, got {value!r}")
    return value


def check_min_seq_len(where: str, seq_len: int, least: int, why: str) -> None:
    """Raise a `ValueError` saying why `seq_len` must be at least `least`."""
    if seq_len < least:
        raise ValueError(f"{where}: seq_len must be at least {least} ({why}), got {seq_len}")


def distinct_positions(
    batch_size: int, n: int, low: int, high: int, generator: torch.Generator, *, sort: bool = True
) -> Tensor:
    """`(batch_size, n)` int64: `n` distinct positions per row, uniform in `[low, high)`.

    Every n-subset is equally likely (the first `n` of a uniformly random permutation); the
    positions come sorted if `sort`, else in uniformly random order.
    """
    scores = torch.rand(batch_size, high - low, generator=generator)  # (B, high - low)
    pos = scores.argsort(dim=1)[:, :n] + low  # (B, n)
    return pos.sort(dim=1).values if sort else pos
