"""Hawk and Griffin in the model registry."""

from __future__ import annotations

from typing import Any

from ..registry import ModelSpec
from ..transformer.spec import _configure, _width_multiple  # the attention blocks' width rule: even heads
from .module import Griffin, Hawk

_PATTERNS = (
    ("recurrent", "recurrent", "attention"),  # the paper's
    ("attention", "recurrent"),
    ("attention",),
    ("recurrent",),
)


def _common_fields(max_size: int) -> dict[str, Any]:
    from hypothesis import strategies as st

    return {
        "n_layers": st.integers(1, 3),
        "d_rnn": st.one_of(st.none(), st.integers(1, max_size)),
        "mlp_ratio": st.integers(1, 3),
        "d_conv": st.integers(1, 4),
        "c": st.sampled_from([8.0, 2.0]),
        "bias": st.booleans().map(lambda b: not b),
    }


def _hawk_configs(max_size: int) -> Any:
    """`d_model` (from 2: at width 1 an `RMSNorm` returns sign(x) and its gradient is a cancellation to
    about 0 that rounds to 1e-3 relative in float32 in every backend, so float32 comparisons of it test
    luck), `n_layers` (1-3), `d_rnn` (default or 1..max), `mlp_ratio`, `d_conv` (1-4), `c`, `bias`."""
    from hypothesis import strategies as st

    d_model = st.integers(min(2, max_size), max_size)
    return st.fixed_dictionaries({"d_model": d_model, **_common_fields(max_size)})


def _griffin_configs(max_size: int) -> Any:
    """Hawk's fields and `n_heads` (1-3, head size 2 or 4), `window` (1 to 8, at most `max_size`: the drawn
    sequences cross it), `block_types` (the paper's pattern and others), `rope_base`."""
    from hypothesis import strategies as st

    @st.composite
    def draw(draw_: Any) -> dict[str, Any]:
        n_heads = draw_(st.integers(1, max(1, min(3, max_size // 2))))
        head_dim = draw_(st.sampled_from([d for d in (2, 4) if n_heads * d <= max(max_size, 2)]))
        fields = draw_(st.fixed_dictionaries(_common_fields(max_size)))
        return {
            "d_model": n_heads * head_dim,
            "n_heads": n_heads,
            "window": draw_(st.integers(1, max(1, min(8, max_size)))),
            "block_types": draw_(st.sampled_from(_PATTERNS)),
            "rope_base": draw_(st.sampled_from([10000.0, 10.0])),
            **fields,
            "n_layers": draw_(st.integers(1, max(1, min(4, max_size)))),
        }

    return draw()


_REFERENCES = "De et al. (2024), Griffin, arXiv:2402.19427"

SPECS = (
    ModelSpec(
        "hawk",
        Hawk,
        description="Hawk: gated linear recurrence (RG-LRU) blocks with a short convolution and gated MLPs",
        width_arg="d_model",
        input_arg=None,
        stacking="block",
        default_layers=2,  # as the transformer and mamba: two blocks (sizes to small budgets on a fine grid)
        configs=_hawk_configs,
        kernel_variants=({},),
        color="#332288",
        marker="h",
        references=_REFERENCES,
    ),
    ModelSpec(
        "griffin",
        Griffin,
        description="Griffin: RG-LRU blocks mixed 2:1 with sliding-window multi-query attention (bounded state)",
        width_arg="d_model",
        input_arg=None,
        width_multiple=_width_multiple,
        width_rule="each attention head needs an even size (rotary embeddings rotate pairs of features): widths "
        "are multiples of 2 * n_heads, any even width when n_heads is chosen automatically",
        configure=_configure,
        stacking="block",
        default_layers=3,  # one period of the paper's pattern: recurrent, recurrent, attention
        configs=_griffin_configs,
        kernel_variants=({},),
        color="#882255",
        marker="H",
        references=_REFERENCES + "; Shazeer (2019); Beltagy et al. (2020)",
    ),
)
