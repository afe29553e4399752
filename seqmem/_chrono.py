r"""Chrono initialisation of the gate biases of a gated recurrence (Tallec & Ollivier 2018).

A unit whose keep gate (the LSTM's forget gate $f$, the `torch.nn.GRU` update gate $z$) sits at a
constant value $\sigma(b)$ forgets geometrically, with characteristic time
$\tau = 1 / (1 - \sigma(b)) = 1 + e^{b}$ steps. Drawing $b \sim \log \mathcal{U}(1, T_{max} - 1)$
makes $\tau = 1 + u$, $u \sim \mathcal{U}(1, T_{max} - 1)$: the units' memories are spread
uniformly over $[2, T_{max}]$ steps, where a constant bias of 1 gives every unit $\tau = 1 + e \approx 3.7$.

Shared by `seqmem.LSTM(forget_init="chrono")` and `seqmem.GRU(update_init="chrono")`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

__all__ = ["chrono_bias", "chrono_forget_time", "check_chrono_t_max"]


def check_chrono_t_max(where: str, init_name: str, init: str, t_max: Any, bias: bool) -> float | int | None:
    """Check `chrono_t_max` against the chosen initialisation; return it (`None` unless chrono).

    Args:
        where: the class, for the message (`"LSTM"`).
        init_name: the name of the initialisation argument (`"forget_init"`).
        init: its value, already checked to be a known one.
        t_max: the `chrono_t_max` given.
        bias: whether the model has biases.

    Returns:
        `t_max` (an int stays an int) for `init == "chrono"`, else `None`.

    Raises:
        TypeError: if `t_max` is not a real number (a string, a bool, `None` with chrono).
        ValueError: if it is given without chrono, is below 2 or not finite, or chrono is asked
            without biases.
    """
    if init != "chrono":
        if t_max is not None:
            raise ValueError(
                f"{where}: chrono_t_max applies to {init_name}='chrono' only; got chrono_t_max={t_max!r} "
                f"with {init_name}={init!r}"
            )
        return None
    if not bias:
        raise ValueError(f"{where}: {init_name}='chrono' sets the gate biases, so it needs bias=True; got bias=False")
    if t_max is None:
        raise TypeError(
            f"{where}: {init_name}='chrono' needs chrono_t_max, the longest dependency in steps "
            f"(e.g. the sequence length); got None"
        )
    if isinstance(t_max, bool) or not isinstance(t_max, numbers.Real):
        raise TypeError(f"{where}: chrono_t_max must be a real number >= 2, got {type(t_max).__name__} {t_max!r}")
    if not (math.isfinite(float(t_max)) and float(t_max) >= 2):
        raise ValueError(
            f"{where}: chrono_t_max must be a finite number >= 2 (the bias is log U(1, chrono_t_max - 1)), "
            f"got {t_max!r}"
        )
    return int(t_max) if isinstance(t_max, numbers.Integral) else float(t_max)


def chrono_bias(hidden_size: int, t_max: float, *, like: Tensor) -> Tensor:
    r"""Biases $b_j = \log u_j$, $u_j \sim \mathcal{U}(1, T_{max} - 1)$ i.i.d., one per unit.

    Drawn from torch's global generator, as `torch.nn.init` draws (so `torch.manual_seed` makes
    a model's initialisation reproducible).

    Args:
        hidden_size: the number of units `H`.
        t_max: $T_{max}$, at least 2 (at 2 every bias is 0).
        like: a tensor whose dtype and device the result takes.

    Returns:
        `(hidden_size,)` tensor in $[0, \log(T_{max} - 1)]$.

    References:
        Tallec, C. & Ollivier, Y. (2018). Can recurrent neural networks warp time? ICLR, sec. 4
        (chrono initialisation).
    """
    u = torch.empty(hidden_size, dtype=torch.float64, device=like.device).uniform_(1.0, float(t_max) - 1.0)
    return torch.log(u).to(like.dtype)


def chrono_forget_time(bias: Tensor) -> Tensor:
    r"""The characteristic forgetting time $1 / (1 - \sigma(b)) = 1 + e^{b}$ of a keep gate with bias `b`.

    Args:
        bias: the total bias of the keep gate (`b_if + b_hf` for the LSTM), any shape.

    Returns:
        A tensor of the same shape: the number of steps over which the unit's memory decays by a
        factor $e$ when the gate sits at $\sigma(b)$ (inputs and recurrent term at zero).
    """
    return 1.0 + torch.exp(bias)
