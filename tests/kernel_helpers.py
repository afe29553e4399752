"""Scaffolding shared by the kernel parity tests of the single-state recurrences (RNN, GRU)."""

from __future__ import annotations

import math
import os

import torch

from seqmem.testing import Tolerance

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
MAX_T = 6 if NO_JIT else 40
MAX_H = 5 if NO_JIT else 9
LONG_T = 1024
DTYPES = {"float64": torch.float64, "float32": torch.float32}
NAMES = ("x", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh")


# seqmem.testing's policy, with two departures the kernels' tests have always made: float64 long scans held
# as tight as short ones, and float32's atol of short scans doubled (torch.testing.assert_close does not
# scale atol with the size of the tensor, as seqmem.testing.assert_close does)
KERNEL_TOLERANCE = Tolerance(float32=(1e-4, 2e-5), long_float64=(1e-10, 1e-12))


def tolerance(dtype: torch.dtype, seq_len: int) -> dict[str, float]:
    """float64: tight; float32: tighter for short scans, mamba's bound (6e-4, 2e-3) for long ones (>= 256)."""
    return KERNEL_TOLERANCE.kwargs(dtype, seq_len=seq_len)


def make_inputs(
    seed: int, B: int, T: int, I: int, H: int, bias: bool, dtype: torch.dtype, scale: float = 1.0, gates: int = 1
):
    """x, h0 ~ N(0, 1); weights of `gates` stacked blocks ~ U(-k, k) with k = scale / sqrt(H), as torch.nn does."""
    gen = torch.Generator().manual_seed(seed)
    k = scale / math.sqrt(H)

    def uniform(*shape: int) -> torch.Tensor:
        return ((torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * k).to(dtype)

    x = torch.randn(B, T, I, generator=gen, dtype=torch.float64).to(dtype)
    h0 = torch.randn(B, H, generator=gen, dtype=torch.float64).to(dtype)
    G = gates * H
    params = [uniform(G, I), uniform(G, H), uniform(G) if bias else None, uniform(G) if bias else None]
    return [x, h0, *params]
