"""Shared test configuration: hypothesis profiles, one thread, and a once-per-session numba warm-up.

Profiles: `dev` (default, fast), `ci` (loaded when the `CI` environment variable is set:
derandomized so a CI failure replays), `nightly` (thousands of examples), and `nojit` (small,
for running the kernels as plain Python under `NUMBA_DISABLE_JIT=1`). Pick one with
`--hypothesis-profile NAME` or `SEQMEM_HYPOTHESIS_PROFILE=NAME`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

import seqmem
import seqmem.testing

_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("dev", max_examples=10, **_common)
settings.register_profile("ci", max_examples=25, derandomize=True, print_blob=True, **_common)
settings.register_profile("nightly", max_examples=2000, **_common)
settings.register_profile("nojit", max_examples=4, derandomize=True, **_common)

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")

_profile = os.environ.get("SEQMEM_HYPOTHESIS_PROFILE") or (
    "nojit" if NO_JIT else "ci" if os.environ.get("CI") else "dev"
)
settings.load_profile(_profile)


def pytest_report_header(config: pytest.Config) -> str:
    return f"seqmem: hypothesis profile {settings._current_profile!r}, NUMBA_DISABLE_JIT={int(NO_JIT)}"


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread (torch, numba, BLAS) is faster and stable on a shared 2-core machine."""
    with seqmem.testing.one_thread():
        yield


@pytest.fixture(scope="session", autouse=True)
def warm_numba_kernels(one_thread: None) -> None:
    """Compile (or load from the cache) every numba kernel specialisation once, before any test runs,
    so that hypothesis deadlines and test durations measure the code, not the compiler."""
    from seqmem._warmup import warmup

    warmup()  # every registered numba model, each kernel variant, float32 and float64
