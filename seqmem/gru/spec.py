"""The GRU's entry in the model registry."""

from __future__ import annotations

from typing import Any

from ..registry import ModelSpec
from .module import GRU


def _configs(max_size: int) -> Any:
    """`input_size`, `hidden_size`, `bias`, `reset_after` (both reset conventions), and `update_init`:
    torch's uniform draw, or chrono with `chrono_t_max` in 2..max_size (then `bias=True`)."""
    from hypothesis import strategies as st

    size = st.integers(1, max_size)
    uniform = st.fixed_dictionaries({
        "input_size": size,
        "hidden_size": size,
        "bias": st.booleans(),
        "reset_after": st.booleans().map(lambda b: not b),
    })
    chrono = st.fixed_dictionaries({
        "input_size": size,
        "hidden_size": size,
        "bias": st.just(True),
        "reset_after": st.booleans().map(lambda b: not b),
        "update_init": st.just("chrono"),
        "chrono_t_max": st.integers(2, max(2, max_size)),  # a time scale, drawn like the sizes
    })
    return uniform | chrono  # shrinks towards the uniform initialisation


SPECS = (
    ModelSpec(
        "gru",
        GRU,
        description="GRU (gates r, z, n): interpolates between the old state and a candidate",
        configs=_configs,
        kernel_variants=tuple({"reset_after": r, "bias": b} for r in (True, False) for b in (True, False)),
        color="#009E73",
        marker="^",
        references="Cho et al. (2014); Chung et al. (2014)",
    ),
)
