"""Numba settings shared by every kernel: import this module only from kernel modules (`numba_scan.py`,
`seqmem._kernels`).

- `JIT` holds the flags of every kernel: `cache=True` (a second process loads the compiled code
  instead of compiling again), `nogil=True`, and never `fastmath` (it makes `isnan` always false,
  and NaNs must be seen by the training loop's guard).
- Parallel kernels use numba's `workqueue` threading layer unless `NUMBA_THREADING_LAYER` says
  otherwise: the OpenMP layer's spinning workers slow PyTorch down for the rest of the process. The
  workqueue layer aborts the process when two threads launch parallel kernels at once, so such
  launches go through `parallel_launch`, which serialises them (see there).
- The cache. Numba writes it beside the sources by default. When that folder is read-only (a system or
  a container install), the cache goes to a user cache directory instead (`$SEQMEM_CACHE_DIR`, else
  `$XDG_CACHE_HOME/seqmem/numba`, else `~/.cache/seqmem/numba`). An explicit `NUMBA_CACHE_DIR` always
  wins. When no candidate is writable (a read-only install and HOME), the kernels run uncached
  (compiled in every process) after a one-line warning on stderr, instead of failing.
- Compilation is visible: the first time the kernels of a family compile in a process (a cold cache),
  one line on stderr says so; loading them from a warm cache prints nothing. `seqmem warmup` compiles
  ahead of time.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _usable(folder: Path) -> bool:
    """Whether cache files can be written in `folder` (made if missing): tried, not guessed from modes."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def _source_folders() -> list[Path]:
    """The folders holding kernel modules: numba keeps their cache in `__pycache__` beside them."""
    folders = [_PACKAGE, *(d for d in sorted(_PACKAGE.iterdir()) if d.is_dir())]
    return [d for d in folders if any(d.glob("numba_*.py")) or any(d.glob("_*kernels.py"))]


def _choose_cache() -> tuple[bool, str | None, str]:
    """`(cache on, folder for NUMBA_CACHE_DIR or None for numba's default, where it goes or what was tried)`."""
    explicit = os.environ.get("NUMBA_CACHE_DIR")
    if explicit:
        return _usable(Path(explicit)), None, explicit
    if all(_usable(d / "__pycache__") for d in _source_folders()):
        return True, None, str(_PACKAGE)
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CACHE_HOME") or (os.path.join(home, ".cache") if home != "~" else "")
    tried = [str(_PACKAGE)]
    for candidate in (os.environ.get("SEQMEM_CACHE_DIR"), xdg and os.path.join(xdg, "seqmem", "numba")):
        if candidate:
            if _usable(Path(candidate)):
                return True, candidate, candidate
            tried.append(candidate)
    return False, None, ", ".join(tried)


CACHE, _cache_dir, _cache_where = _choose_cache()
"""Whether compiled kernels are cached on disk, and where."""

if _cache_dir is not None:
    os.environ["NUMBA_CACHE_DIR"] = _cache_dir

import numba  # noqa: E402  (the cache directory must be chosen before numba reads its config)
from numba.core import event as _event  # noqa: E402

if _cache_dir is not None:  # numba may have been imported (and configured) before us
    numba.config.CACHE_DIR = _cache_dir
if not CACHE:
    print(
        f"seqmem: warning: no writable folder for numba's cache (tried {_cache_where}); the kernels are "
        "compiled in every process. Set SEQMEM_CACHE_DIR to a writable folder to keep them.",
        file=sys.stderr,
        flush=True,
    )

# Numba's OpenMP threading layer leaves its worker threads spinning after a parallel kernel, and
# PyTorch's own OpenMP pool then runs up to 50x slower for the rest of the process. The workqueue
# layer has no such cost. An explicit NUMBA_THREADING_LAYER still wins.
if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "workqueue"

JIT = {"cache": CACHE, "nogil": True, "fastmath": False}
"""Flags of every serial kernel."""

PJIT = {**JIT, "parallel": True}
"""Flags of kernels that use `numba.prange` over the batch."""

from numba.extending import intrinsic  # noqa: E402

njit = numba.njit
prange = numba.prange


# ====================================================================== compile notice
def _family(module: str) -> str | None:
    """The kernel family of a seqmem module (`seqmem.lstm.numba_scan` -> `lstm`), `None` outside seqmem."""
    parts = module.split(".")
    if parts[0] != "seqmem" or len(parts) < 2:
        return None
    return parts[1] if len(parts) > 2 else "shared math"


class _CompileNotice(_event.Listener):
    """Prints one line on stderr when a family's kernels first compile in this process.

    Numba broadcasts `numba:compile` only when it compiles, not when it loads a kernel from the cache.
    The kernels a kernel calls compile inside its event: only the outermost one is announced.
    """

    def __init__(self) -> None:
        self.announced: set[str] = set()
        self.depth = 0
        self.compiles = 0

    def on_start(self, event: _event.Event) -> None:
        self.depth += 1
        self.compiles += 1
        if self.depth > 1:
            return
        func = getattr(event.data["dispatcher"], "py_func", None)
        family = _family(getattr(func, "__module__", "") or "")
        if family is None or family in self.announced:
            return
        self.announced.add(family)
        kept = "cached afterwards" if CACHE else "not cached: no writable cache folder"
        print(f"seqmem: compiling numba kernels for {family} (once per dtype, ~10 s; {kept})", file=sys.stderr,
              flush=True)

    def on_end(self, event: _event.Event) -> None:
        self.depth -= 1


_NOTICE = _CompileNotice()
_event.register("numba:compile", _NOTICE)


def compile_count() -> int:
    """How many kernels numba has compiled in this process (loads from the cache do not count)."""
    return _NOTICE.compiles


# ====================================================================== parallel launches
_PARALLEL_LOCK = threading.Lock()
_NO_LOCK = contextlib.nullcontext()
_SAFE_LAYERS = ("tbb", "omp", "safe", "threadsafe")
"""Threading layers that may be entered by several threads at once (the others may resolve to workqueue)."""


def parallel_launch() -> contextlib.AbstractContextManager:
    """The context to hold around every call of a `parallel=True` kernel: `with parallel_launch(): ...`.

    Numba's workqueue threading layer is not thread-safe: two threads that launch parallel kernels at
    once abort the process. Under it, launches are serialised by a lock (a parallel kernel already uses
    every numba thread, so running two at once would gain nothing; about 0.1 us when uncontended). The
    TBB and OpenMP layers are thread-safe: there it is a no-op.
    """
    return _NO_LOCK if numba.config.THREADING_LAYER in _SAFE_LAYERS else _PARALLEL_LOCK


__all__ = ["CACHE", "JIT", "PJIT", "compile_count", "intrinsic", "njit", "numba", "parallel_launch", "prange"]
