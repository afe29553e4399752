"""The selective SSM (Mamba block) and its LTI ablation in the model registry."""

from __future__ import annotations

from typing import Any

from ..registry import ModelSpec
from .module import SelectiveSSM


def _configs(selective: bool) -> Any:
    def configs(max_size: int) -> Any:
        """`d_model`, `d_state`, `d_conv` (1-4), `expand` (1-2), `dt_rank` (mamba), `bias`, `conv_bias`."""
        from hypothesis import strategies as st

        size = st.integers(1, max_size)
        fields: dict[str, Any] = {
            "d_model": size,
            "d_state": size,
            "d_conv": st.integers(1, 4),
            "expand": st.integers(1, 2),
        }
        if selective:
            fields["dt_rank"] = st.one_of(st.just("auto"), st.integers(1, 3))
        fields["bias"] = st.booleans()
        fields["conv_bias"] = st.booleans().map(lambda b: not b)
        return st.fixed_dictionaries(fields)

    return configs


_COMMON: dict[str, Any] = {
    "width_arg": "d_model",
    "input_arg": None,
    "stacking": "residual",
    "default_layers": 2,
}

SPECS = (
    ModelSpec(
        "mamba",
        SelectiveSSM,
        description="selective state-space model (Mamba, S6): input-dependent step size, B and C",
        configs=_configs(True),
        kernel_variants=({},),
        color="#E69F00",
        marker="v",
        references="Gu & Dao (2023)",
        **_COMMON,
    ),
    ModelSpec(
        "s4d",
        SelectiveSSM,
        description="the LTI ablation of mamba: fixed step size, B and C (a long convolution)",
        kwargs={"selective": False},
        configs=_configs(False),
        kernel_variants=({},),
        color="#56B4E9",
        marker="P",
        references="Gu et al. (2022), S4D; Gu & Dao (2023), sec. 4.6",
        **_COMMON,
    ),
)
