"""Linear attention and retention in the model registry: one class, two names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..registry import ModelSpec
from .module import FEATURE_MAPS, RETENTION, LinearAttention


def _auto_heads(width: int, preferred: int = 4) -> int:
    """`preferred` heads if they divide `width`, else the largest power of two below it that does."""
    h = preferred
    while h > 1 and width % h:
        h //= 2
    return h


def _width_multiple(kwargs: Mapping[str, Any]) -> int:
    """Any width when `d_k` and `d_v` are both given; else multiples of `n_heads` (any width when it is chosen)."""
    if kwargs.get("d_k") is not None and kwargs.get("d_v") is not None:
        return 1
    n_heads = kwargs.get("n_heads")
    return 1 if n_heads is None else int(n_heads)


def _configure(width: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs.get("n_heads") is None:
        kwargs = {**kwargs, "n_heads": _auto_heads(width)}
    return kwargs


def _configs(retention: bool) -> Any:
    def configs(max_size: int) -> Any:
        """Sizes (heads 1-2, d_k and d_v 1-3, any d_model), depth, chunk size 1-8 (so the chunkwise form
        runs on drawn lengths; no size above `max_size`), bias, and for `linear-attention` every variant
        flag: feature map, normaliser, decay (none, multiscale, one float, one per head), gate, group norm."""
        from hypothesis import strategies as st

        @st.composite
        def draw(draw_: Any) -> dict[str, Any]:
            n_heads = draw_(st.integers(1, 2))
            kwargs: dict[str, Any] = {
                "d_model": draw_(st.integers(1, max_size)),
                "n_heads": n_heads,
                "d_k": draw_(st.integers(1, min(3, max_size))),
                "d_v": draw_(st.integers(1, min(3, max_size))),
                "n_layers": draw_(st.integers(1, 2)),
                "mlp_ratio": draw_(st.integers(1, 2)),
                "chunk_size": draw_(st.integers(1, min(8, max_size))),
                "bias": not draw_(st.booleans()),
            }
            if not retention:
                gammas = st.floats(0.5, 1.0)
                kwargs["feature_map"] = draw_(st.sampled_from(FEATURE_MAPS))
                kwargs["normalize"] = kwargs["feature_map"] == "elu+1" and not draw_(st.booleans())
                kwargs["decay"] = draw_(st.one_of(
                    st.none(), st.just("multiscale"), gammas, st.tuples(*[gammas] * n_heads)
                ))
                kwargs["gate"] = draw_(st.booleans())
                kwargs["group_norm"] = draw_(st.booleans())
            return kwargs

        return draw()

    return configs


_COMMON: dict[str, Any] = {
    "width_arg": "d_model",
    "input_arg": None,
    "width_multiple": _width_multiple,
    "width_rule": "the default head sizes d_k = d_v = d_model // n_heads need d_model divisible by n_heads "
    "(any width when n_heads is chosen automatically, or d_k and d_v are given)",
    "configure": _configure,
    "stacking": "block",
    "default_layers": 2,
    "kernel_variants": ({},),  # one kernel: the normaliser and the decays are run-time arguments
}

SPECS = (
    ModelSpec(
        "linear-attention",
        LinearAttention,
        description="linear attention (elu+1 features): softmax-free attention run as a matrix-state recurrence",
        configs=_configs(False),
        color="#AA4499",
        marker="*",
        references="Katharopoulos et al. (2020)",
        **_COMMON,
    ),
    ModelSpec(
        "retention",
        LinearAttention,
        description="multi-scale retention (RetNet): linear attention with a fixed decay per head, gated",
        kwargs=RETENTION,
        configs=_configs(True),
        color="#999933",
        marker="p",
        references="Sun et al. (2023), RetNet",
        **_COMMON,
    ),
)
