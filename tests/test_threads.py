"""One thread count for torch, numba and the BLAS numba calls (seqmem._threads), in-process and in workers."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info

from seqmem._threads import threads
from seqmem.executors import ProcessExecutor


def _blas_threads() -> list[int]:
    return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]


def _pools(job, callback):
    """A pool worker's view: the thread counts a numba-backend run would use."""
    import numba

    import seqmem.rnn.numba_scan  # noqa: F401  (what a numba-backend run loads)

    return {"torch": torch.get_num_threads(), "numba": numba.get_num_threads(), "blas": _blas_threads()}


def test_threads_limits_blas_torch_and_numba_and_restores_them():
    import numba
    import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba's np.dot calls)

    before = (_blas_threads(), torch.get_num_threads(), numba.get_num_threads())
    assert before[0], "no BLAS library found to limit"
    with threads(1):
        assert _blas_threads() == [1] * len(before[0])
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
    assert (_blas_threads(), torch.get_num_threads(), numba.get_num_threads()) == before


@pytest.mark.parametrize("n", [1, 2])
def test_pool_workers_run_every_pool_at_the_requested_thread_count(n):
    outcomes = list(ProcessExecutor(jobs=1, threads=n).run(_pools, [None]))
    assert len(outcomes) == 1 and outcomes[0].error is None, outcomes
    got = outcomes[0].result
    assert got["torch"] == n and got["numba"] == n
    assert got["blas"] and all(t == n for t in got["blas"]), got
