"""The mLSTM block in the model registry."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..registry import ModelSpec
from .module import MLSTM
from .reference import FORGET_GATES

_DEFAULTS = {"n_heads": 4, "qkv_block_size": 4, "expand": 2}
"""The constructor's defaults of the arguments that constrain the width (the paper's 4 heads, blocks of 4, PF 2)."""


def _width_multiple(kwargs: Mapping[str, Any]) -> int:
    """`n_heads` and `qkv_block_size` must divide `d_inner = expand * d_model`: widths are multiples of
    `lcm(n_heads, qkv_block_size) / gcd(that, expand)` (2 with the defaults: every width keeps 4 heads and
    blocks of 4, so the parameter count grows smoothly with the width)."""
    args = {**_DEFAULTS, **{k: v for k, v in kwargs.items() if k in _DEFAULTS and v is not None}}
    need = math.lcm(int(args["n_heads"]), int(args["qkv_block_size"]))
    return need // math.gcd(need, int(args["expand"]))


def _configs(max_size: int) -> Any:
    """`d_model` (a multiple of what the drawn sizes need), `n_heads` 1-2, `expand` 1-2, `d_conv` 1-4,
    `qkv_block_size` 1-2, `forget_gate`, `bias`, `chunk_size` 1-8 (the chunkwise form runs on drawn
    lengths); no size above `max_size`."""
    from hypothesis import strategies as st

    @st.composite
    def draw(draw_: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "n_heads": draw_(st.integers(1, 2)),
            "expand": draw_(st.integers(1, 2)),
            "qkv_block_size": draw_(st.integers(1, 2)),
        }
        step = _width_multiple(kwargs)
        kwargs["d_model"] = step * draw_(st.integers(1, max(1, max_size // step)))
        kwargs["d_conv"] = draw_(st.integers(1, min(4, max_size)))
        kwargs["forget_gate"] = draw_(st.sampled_from(FORGET_GATES))
        kwargs["bias"] = draw_(st.booleans())
        kwargs["chunk_size"] = draw_(st.integers(1, min(8, max_size)))
        return kwargs

    return draw()


SPECS = (
    ModelSpec(
        "mlstm",
        MLSTM,
        description="mLSTM (xLSTM): matrix memory with exponential gating, parallel and recurrent forms",
        width_arg="d_model",
        input_arg=None,
        width_multiple=_width_multiple,
        width_rule="n_heads and qkv_block_size must divide d_inner = expand * d_model",
        stacking="residual",
        default_layers=2,
        configs=_configs,
        color="#DDCC77",
        marker="d",
        references="Beck et al. (2024), xLSTM",
    ),
)
