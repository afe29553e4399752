"""The causal transformer's entry in the model registry, and how it picks its number of heads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..registry import ModelSpec
from .module import CausalTransformer


def auto_heads(width: int, preferred: int = 4) -> int:
    """The number of attention heads a transformer of this width gets when none is asked for.

    `preferred` heads if `width` splits into that many heads of even size (rotary embeddings rotate
    pairs of features), else the largest power of two below it that does, else one head.

    Args:
        width: the transformer's `d_model`, an even int.
        preferred: the number of heads wanted.

    Returns:
        The number of heads.

    Raises:
        ValueError: if `width` is odd (no head size is even).
    """
    if width % 2:
        raise ValueError(f"a transformer needs an even width (even head size for rotary pairs), got {width}")
    h = preferred
    while h > 1 and width % (2 * h):
        h //= 2
    return max(h, 1)


def _width_multiple(kwargs: Mapping[str, Any]) -> int:
    """Widths are multiples of `2 * n_heads` (an even head size for rotary pairs), any even width without."""
    n_heads = kwargs.get("n_heads")
    return 2 if n_heads is None else 2 * int(n_heads)


def _configure(width: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs.get("n_heads") is None:
        kwargs = {**kwargs, "n_heads": auto_heads(width)}
    return kwargs


def _configs(max_size: int) -> Any:
    """`n_heads` (1-3), `d_model` (head size 2 or 4), `n_layers`, `mlp_ratio`, `bias`, `rope_base`."""
    from hypothesis import strategies as st

    @st.composite
    def draw(draw_: Any) -> dict[str, Any]:
        n_heads = draw_(st.integers(1, min(3, max_size // 2)))
        head_dim = draw_(st.sampled_from([d for d in (2, 4) if n_heads * d <= max_size]))
        return {
            "d_model": n_heads * head_dim,
            "n_heads": n_heads,
            "n_layers": draw_(st.integers(1, 2)),
            "mlp_ratio": draw_(st.integers(1, 2)),
            "bias": not draw_(st.booleans()),
            "rope_base": draw_(st.sampled_from([10000.0, 10.0])),
        }

    return draw()


SPECS = (
    ModelSpec(
        "transformer",
        CausalTransformer,
        description="causal attention with rotary positions: keeps every past step in a KV cache",
        width_arg="d_model",
        input_arg=None,
        width_multiple=_width_multiple,
        width_rule="each head needs an even size (rotary embeddings rotate pairs of features): widths are "
        "multiples of 2 * n_heads, any even width when n_heads is chosen automatically",
        configure=_configure,
        stacking="block",
        default_layers=2,
        configs=_configs,
        color="#CC79A7",
        marker="D",
        references="Vaswani et al. (2017); Su et al. (2021)",
    ),
)
