"""The Elman RNN's entry in the model registry."""

from __future__ import annotations

from typing import Any

from ..registry import ModelSpec
from .module import RNN


def _configs(max_size: int) -> Any:
    """`input_size`, `hidden_size`, `nonlinearity` (tanh, relu), `bias`; sizes shrink to 1, flags to the default."""
    from hypothesis import strategies as st

    size = st.integers(1, max_size)
    return st.fixed_dictionaries({
        "input_size": size,
        "hidden_size": size,
        "nonlinearity": st.sampled_from(["tanh", "relu"]),
        "bias": st.booleans(),
    })


SPECS = (
    ModelSpec(
        "rnn",
        RNN,
        description="Elman RNN, h = tanh(W x + U h + b): one state vector, gradients vanish through time",
        configs=_configs,
        kernel_variants=tuple({"nonlinearity": n, "bias": b} for n in ("tanh", "relu") for b in (True, False)),
        color="#D55E00",
        marker="o",
        references="Elman (1990); Bengio et al. (1994); Pascanu et al. (2013)",
    ),
)
