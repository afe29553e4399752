"""One thread count for every pool a training or benchmark run uses: torch, numba and BLAS.

The numba backend has two thread pools besides torch's: numba's own (the `prange` kernels) and the
OpenBLAS inside SciPy, which numba calls for `np.dot` (the RNN and GRU kernels' per-step product).
OpenBLAS starts one thread per core. Left alone, a process pool of `jobs` workers then runs
`jobs x cores` busy BLAS threads on `cores` cores, and a benchmark "at one thread" is not. Setting
torch's count alone is not enough, so this module sets all three.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch


def _blas_limiter(n: int) -> Any:
    """Limit the BLAS libraries of this process (SciPy's, which numba uses, loaded first) to `n` threads.

    Returns the threadpoolctl controller; `.restore_original_limits()` undoes it.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS numba calls, so the limit reaches it)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


def _set_numba(n: int) -> int | None:
    """Set numba's thread count if numba is loaded; returns the old count, or `None` when it is not."""
    numba_mod = sys.modules.get("numba")
    if numba_mod is None:
        return None
    old = numba_mod.get_num_threads()
    numba_mod.set_num_threads(min(n, numba_mod.config.NUMBA_NUM_THREADS))
    return old


def set_threads(n: int) -> None:
    """Use `n` threads in torch, numba (once loaded) and BLAS for the rest of the process.

    For worker processes (`seqmem.executors`); `threads` is the scoped form. Numba, when it is not
    imported yet, gets `NUMBA_NUM_THREADS=n`: it starts its pool with `n` threads when it is.
    """
    torch.set_num_threads(n)
    if _set_numba(n) is None:
        os.environ["NUMBA_NUM_THREADS"] = str(n)
    _blas_limiter(n)


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch threads, `n` numba threads (if numba is loaded) and `n` BLAS threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    old_nb = _set_numba(n)
    blas = _blas_limiter(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
        if old_nb is not None:
            _set_numba(old_nb)
        blas.restore_original_limits()
