"""minGRU and minLSTM in the model registry."""

from __future__ import annotations

from typing import Any

from ..registry import ModelSpec
from .module import MinGRU, MinLSTM


def _configs(max_size: int) -> Any:
    """`input_size`, `hidden_size`, `bias`."""
    from hypothesis import strategies as st

    size = st.integers(1, max_size)
    return st.fixed_dictionaries({"input_size": size, "hidden_size": size, "bias": st.booleans()})


# The paper's models stack the cells with residual connections and normalisation (Feng et al. 2024,
# appendix); SequenceNetwork's pre-norm residual blocks x + cell(LayerNorm(x)) are that block without its
# optional convolution and MLP, which would add state and parameters that are not the recurrence's.
_COMMON: dict[str, Any] = {
    "width_arg": "hidden_size",
    "input_arg": "input_size",
    "stacking": "residual",
    "default_layers": 2,
    "configs": _configs,
    "kernel_variants": ({},),
    "references": "Feng et al. (2024), Were RNNs all we needed?; Heinsen (2023)",
}

SPECS = (
    ModelSpec(
        "mingru",
        MinGRU,
        description="minGRU: a GRU whose gate and candidate see only the input, trained by a parallel scan",
        color="#117733",
        marker="X",
        **_COMMON,
    ),
    ModelSpec(
        "minlstm",
        MinLSTM,
        description="minLSTM: an LSTM with input-only gates normalised to f' + i' = 1, trained by a parallel scan",
        color="#44AA99",
        marker="x",
        **_COMMON,
    ),
)
