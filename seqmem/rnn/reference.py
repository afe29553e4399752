"""The Elman RNN as a readable PyTorch loop: the oracle the other backends are checked against.

    h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   y_t = h_t,   phi in {tanh, relu}

References:
    Elman, J. L. (1990). Finding structure in time. Cognitive Science 14(2), eq. (1)-(2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["rnn_cell", "rnn_scan"]

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def rnn_cell(
    x_t: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    """One step of the Elman RNN.

    Args:
        x_t: `(batch, input_size)` input.
        h: `(batch, hidden_size)` previous hidden state.
        weight_ih: `(hidden_size, input_size)` input weights $W_{ih}$.
        weight_hh: `(hidden_size, hidden_size)` recurrent weights $W_{hh}$.
        bias_ih: `(hidden_size,)` or `None`.
        bias_hh: `(hidden_size,)` or `None`.
        nonlinearity: `"tanh"` or `"relu"`.

    Returns:
        `(batch, hidden_size)` the next hidden state.
    """
    return ACTIVATIONS[nonlinearity](F.linear(x_t, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh))


def rnn_scan(
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The Elman RNN over a sequence.

    The input projection `W_ih x_t + b_ih` of every step is one matrix product before the loop; only
    `W_hh h_{t-1}` stays inside it.

    Args:
        x: `(batch, seq_len, input_size)`.
        weight_ih: `(hidden_size, input_size)`.
        weight_hh: `(hidden_size, hidden_size)`.
        bias_ih: `(hidden_size,)` or `None`.
        bias_hh: `(hidden_size,)` or `None`.
        nonlinearity: `"tanh"` or `"relu"`.
        initial_state: `(batch, hidden_size)` `h_0`, zeros if `None`.

    Returns:
        `(y, h_T)`: `y` of shape `(batch, seq_len, hidden_size)` holds every `h_t`; `h_T` the last.
    """
    B, T, _ = x.shape
    act = ACTIVATIONS[nonlinearity]
    h = x.new_zeros(B, weight_hh.shape[1]) if initial_state is None else initial_state
    gx = F.linear(x, weight_ih, bias_ih)  # (B, T, H)
    ys = []
    for t in range(T):
        h = act(gx[:, t] + F.linear(h, weight_hh, bias_hh))
        ys.append(h)
    return torch.stack(ys, dim=1), h
