"""The LSTM's entry in the model registry."""

from __future__ import annotations

from typing import Any

from ..registry import ModelSpec
from .module import LSTM


def _configs(max_size: int) -> Any:
    """`input_size`, `hidden_size`, `bias`, `forget_bias` (1, 0, 2), `peephole`."""
    from hypothesis import strategies as st

    size = st.integers(1, max_size)
    return st.fixed_dictionaries({
        "input_size": size,
        "hidden_size": size,
        "bias": st.booleans(),
        "forget_bias": st.sampled_from([1.0, 0.0, 2.0]),
        "peephole": st.booleans(),
    })


SPECS = (
    ModelSpec(
        "lstm",
        LSTM,
        description="LSTM (gates i, f, g, o): an additive cell state, the 'constant error carousel'",
        configs=_configs,
        kernel_variants=tuple({"peephole": p, "bias": b} for p in (False, True) for b in (True, False)),
        color="#0072B2",
        marker="s",
        references="Hochreiter & Schmidhuber (1997); Gers et al. (2000)",
    ),
)
