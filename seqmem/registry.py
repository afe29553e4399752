"""Names of seqmem's models: `build(name, ...)` and `model_names()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ._module import check_choice
from .gru import GRU
from .lstm import LSTM
from .rnn import RNN
from .ssm import SelectiveSSM
from .transformer import CausalTransformer

__all__ = ["MODELS", "build", "model_names"]


def _s4d(*args: Any, **kwargs: Any) -> SelectiveSSM:
    if kwargs.get("selective", False):
        raise ValueError("build('s4d', ...): s4d is the LTI ablation, selective must be False")
    kwargs["selective"] = False
    return SelectiveSSM(*args, **kwargs)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "rnn": RNN,
    "lstm": LSTM,
    "gru": GRU,
    "transformer": CausalTransformer,
    "mamba": SelectiveSSM,
    "s4d": _s4d,
}
"""Model name -> constructor. `s4d` is `SelectiveSSM(..., selective=False)`."""


def model_names() -> list[str]:
    """The names `build` accepts: `rnn, lstm, gru, transformer, mamba, s4d`."""
    return list(MODELS)


def build(name: str, *args: Any, **kwargs: Any) -> nn.Module:
    """Build a model by name; the other arguments go to its constructor.

    | name | class |
    | --- | --- |
    | `rnn` | `RNN(input_size, hidden_size, nonlinearity="tanh", bias=True)` |
    | `lstm` | `LSTM(input_size, hidden_size, bias=True, forget_bias=1.0, peephole=False)` |
    | `gru` | `GRU(input_size, hidden_size, bias=True, reset_after=True)` |
    | `transformer` | `CausalTransformer(d_model, n_heads=4, n_layers=2)` |
    | `mamba` | `SelectiveSSM(d_model, d_state=16, d_conv=4, expand=2, selective=True)` |
    | `s4d` | `SelectiveSSM(d_model, ..., selective=False)`, the LTI ablation |

    Args:
        name: one of `model_names()`.
        *args: positional constructor arguments.
        **kwargs: keyword constructor arguments (e.g. `backend="numba"`).

    Returns:
        The model, an `nn.Module` satisfying `SequenceModel`.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).

    Example:
        >>> import seqmem
        >>> seqmem.build("lstm", 4, 32)
        LSTM(4, 32, bias=True, backend='torch', forget_bias=1.0, peephole=False)
    """
    check_choice("model", name, model_names(), "seqmem.build")
    return MODELS[name](*args, **kwargs)
