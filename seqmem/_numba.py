"""Numba settings shared by every kernel: import this module only from `numba_scan.py` files.

- `JIT` holds the flags of every kernel: `cache=True` (a second process loads the compiled code
  instead of compiling again), `nogil=True`, and never `fastmath` (it makes `isnan` always false,
  and NaNs must be seen by the training loop's guard).
- Parallel kernels use numba's `workqueue` threading layer unless `NUMBA_THREADING_LAYER` says
  otherwise: the OpenMP layer's spinning workers slow PyTorch down for the rest of the process.
- Numba writes its cache beside the source by default. When the package directory is read-only
  (a system or a container install), the cache goes to a user cache directory instead
  (`$SEQMEM_CACHE_DIR`, else `$XDG_CACHE_HOME/seqmem/numba`, else `~/.cache/seqmem/numba`).
  An explicit `NUMBA_CACHE_DIR` always wins.
"""

from __future__ import annotations

import os
from pathlib import Path


def _choose_cache_dir() -> str | None:
    """The cache directory to use, or `None` to keep numba's default (beside the sources)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    package_dir = Path(__file__).resolve().parent
    if os.access(package_dir, os.W_OK):
        return None
    base = os.environ.get("SEQMEM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "seqmem", "numba"
    )
    os.makedirs(base, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = base
    return base


_cache_dir = _choose_cache_dir()

import numba  # noqa: E402  (the cache directory must be chosen before numba reads its config)

if _cache_dir is not None:  # numba may have been imported (and configured) before us
    numba.config.CACHE_DIR = _cache_dir

# Numba's OpenMP threading layer leaves its worker threads spinning after a parallel kernel, and
# PyTorch's own OpenMP pool then runs up to 50x slower for the rest of the process. The workqueue
# layer has no such cost. An explicit NUMBA_THREADING_LAYER still wins.
if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "workqueue"

JIT = {"cache": True, "nogil": True, "fastmath": False}
"""Flags of every serial kernel."""

PJIT = {**JIT, "parallel": True}
"""Flags of kernels that use `numba.prange` over the batch."""

from numba.extending import intrinsic  # noqa: E402

njit = numba.njit
prange = numba.prange

__all__ = ["JIT", "PJIT", "intrinsic", "njit", "numba", "prange"]
