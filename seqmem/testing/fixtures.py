"""What a test sets up: a reproducible input, a seeded torch, one thread.

Hypothesis manages Python's and numpy's random state but not torch's, so the kit never draws from
torch's global generator: inputs come from a `torch.Generator` seeded explicitly
([`random_sequence`][seqmem.testing.random_sequence]), and a model is built under
[`seeded`][seqmem.testing.seeded], which seeds torch and restores its state afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["one_thread", "random_sequence", "seeded"]


def callable_name(fn: Any) -> str:
    """`"TorchGRU"`, `"test_models.<lambda>"`: how a factory is named in notes and reports."""
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def generator(seed: int) -> torch.Generator:
    """A CPU `torch.Generator` seeded with `seed` (taken modulo `2**64`)."""
    return torch.Generator().manual_seed(int(seed) % 2**64)


def noise_like(x: Tensor, gen: torch.Generator) -> Tensor:
    """Fresh normal noise, shaped and scaled like `x` (never zero)."""
    rms = float(x.detach().double().pow(2).mean().sqrt()) if x.numel() else 1.0
    scale = rms if rms > 0 and math.isfinite(rms) else 1.0
    return torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.device, x.dtype) * scale


def random_sequence(
    batch_size: int,
    seq_len: int,
    input_size: int,
    *,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    scale: float = 1.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """A reproducible input sequence: standard normal entries times `scale`, from a seeded generator.

    What [`sequences`][seqmem.testing.sequences] draws, and what hypothesis' notes tell you to call
    to replay a failing example.

    Args:
        batch_size: number of sequences `B`.
        seq_len: number of steps `T`.
        input_size: number of features `I`.
        dtype: a floating dtype.
        seed: seed of the `torch.Generator` (torch's global random state is untouched).
        scale: standard deviation of the entries.
        device: where the tensor goes (generated on the CPU first, so it is the same everywhere).

    Returns:
        `(batch_size, seq_len, input_size)` tensor.

    Example:
        >>> import torch
        >>> from seqmem.testing import random_sequence
        >>> x = random_sequence(2, 5, 3, dtype=torch.float64, seed=7)
        >>> x.shape, x.dtype, torch.equal(x, random_sequence(2, 5, 3, dtype=torch.float64, seed=7))
        (torch.Size([2, 5, 3]), torch.float64, True)
    """
    gen = generator(seed)
    x = torch.randn(batch_size, seq_len, input_size, generator=gen, dtype=torch.float64) * float(scale)
    return x.to(device=device, dtype=dtype)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global generators seeded with `seed`, and restore them afterwards.

    For building a model reproducibly (its `nn.Linear` and friends draw their initial weights from
    torch's global generator) without disturbing the random state of the code around it. CUDA
    generators are forked and seeded too when CUDA is initialised.

    Args:
        seed: the seed (taken modulo `2**64`).

    Example:
        >>> import torch
        >>> from seqmem.testing import seeded
        >>> with seeded(3):
        ...     a = torch.nn.Linear(2, 2)
        >>> with seeded(3):
        ...     b = torch.nn.Linear(2, 2)
        >>> torch.equal(a.weight, b.weight)
        True
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed) % 2**64)
        yield


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one thread in torch, in numba (once imported) and in the BLAS numba calls.

    The tensors of property tests are tiny: intra-op threads only add contention, and on a busy
    machine they can make a test many times slower. Use it around a test, or as an autouse fixture:

    ```python
    @pytest.fixture(autouse=True, scope="session")
    def _one_thread():
        with seqmem.testing.one_thread():
            yield
    ```

    The previous thread counts are restored on exit.
    """
    from .._threads import threads

    with threads(1):
        yield
