"""The mLSTM block in the model registry."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..registry import ModelSpec
from .module import MLSTM
from .reference import FORGET_GATES

_DEFAULTS = {"n_heads": 4, "qkv_block_size": 4}


def _largest_divisor(d: int, preferred: int) -> int:
    """`preferred` if it divides `d`, else the largest power of two below it that does."""
    h = preferred
    while h > 1 and d % h:
        h //= 2
    return h


def _width_multiple(kwargs: Mapping[str, Any]) -> int:
    """`n_heads` and `qkv_block_size` (those given) must divide `expand * d_model`: the smallest such step."""
    need = math.lcm(*(int(kwargs[k]) for k in _DEFAULTS if kwargs.get(k) is not None), 1)
    return need // math.gcd(need, int(kwargs.get("expand", 2)))


def _configure(width: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    d_inner = int(kwargs.get("expand", 2)) * width
    filled = {k: _largest_divisor(d_inner, v) for k, v in _DEFAULTS.items() if kwargs.get(k) is None}
    return {**kwargs, **filled}


def _configs(max_size: int) -> Any:
    """`d_model` (a multiple of what the drawn sizes need), `n_heads` 1-2, `expand` 1-2, `d_conv` 1-4,
    `qkv_block_size` 1-2, `forget_gate`, `bias`, `chunk_size` 1-8 (the chunkwise form runs on drawn lengths)."""
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
        kwargs["d_conv"] = draw_(st.integers(1, 4))
        kwargs["forget_gate"] = draw_(st.sampled_from(FORGET_GATES))
        kwargs["bias"] = draw_(st.booleans())
        kwargs["chunk_size"] = draw_(st.integers(1, 8))
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
        width_rule="n_heads and qkv_block_size must divide d_inner = expand * d_model (any width when they are "
        "chosen automatically)",
        configure=_configure,
        stacking="residual",
        default_layers=2,
        configs=_configs,
        color="#DDCC77",
        marker="d",
        references="Beck et al. (2024), xLSTM",
    ),
)
