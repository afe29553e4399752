"""The LSTM's entry in the model registry."""

from __future__ import annotations

from typing import Any

from ..registry import ModelSpec
from .module import LSTM


def _configs(max_size: int) -> Any:
    """`input_size`, `hidden_size`, `bias`, `forget_bias` (1, 0, 2), `peephole`, and `forget_init`:
    constant (the bias above), or chrono with `chrono_t_max` in 2..max_size (then `bias=True`)."""
    from hypothesis import strategies as st

    size = st.integers(1, max_size)
    constant = st.fixed_dictionaries({
        "input_size": size,
        "hidden_size": size,
        "bias": st.booleans(),
        "forget_bias": st.sampled_from([1.0, 0.0, 2.0]),
        "peephole": st.booleans(),
    })
    chrono = st.fixed_dictionaries({
        "input_size": size,
        "hidden_size": size,
        "bias": st.just(True),
        "peephole": st.booleans(),
        "forget_init": st.just("chrono"),
        "chrono_t_max": st.integers(2, max(2, max_size)),  # a time scale, drawn like the sizes
    })
    return constant | chrono  # shrinks towards the constant initialisation


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
