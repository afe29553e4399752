"""The GRU as a readable PyTorch loop: the oracle the other backends are checked against.

Gates in `torch.nn` order `r, z, n`. With `reset_after=True` (torch.nn / cuDNN):

    r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh (W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

With `reset_after=False` (Cho et al. 2014, eq. 5-8) the reset gate acts before the product:
`n_t = tanh(W_in x_t + b_in + W_hn (r_t * h_{t-1}) + b_hn)`.

References:
    Cho, K. et al. (2014). Learning phrase representations using RNN encoder-decoder for statistical
    machine translation. EMNLP, eq. (5)-(8).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GRUGates", "gru_cell", "gru_scan"]


class GRUGates(NamedTuple):
    """The gate activations of a GRU run, each `(batch, seq_len, hidden_size)` (or one step's
    `(batch, hidden_size)`), after their nonlinearity: reset `r`, update `z` (the keep gate:
    `h_t = (1 - z_t) * n_t + z_t * h_{t-1}`), candidate `n`."""

    r: Tensor
    z: Tensor
    n: Tensor


def _gru_gates(
    gx: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, reset_after: bool
) -> GRUGates:
    """From the input projection `gx = W_ih x_t + b_ih` `(B, 3H)` and `h_{t-1}` to the gates `r, z, n`."""
    H = h.shape[-1]
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    if reset_after:
        h_r, h_z, h_n = F.linear(h, weight_hh, bias_hh).chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
    else:
        b_r = b_z = b_n = None
        if bias_hh is not None:
            b_r, b_z, b_n = bias_hh.chunk(3)
        r = torch.sigmoid(x_r + F.linear(h, weight_hh[:H], b_r))
        z = torch.sigmoid(x_z + F.linear(h, weight_hh[H : 2 * H], b_z))
        n = torch.tanh(x_n + F.linear(r * h, weight_hh[2 * H :], b_n))
    return GRUGates(r, z, n)


def _gru_update(
    gx: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, reset_after: bool
) -> tuple[Tensor, GRUGates]:
    """From the input projection `gx = W_ih x_t + b_ih` `(B, 3H)` and `h_{t-1}` to `(h_t, gates)`."""
    gates = _gru_gates(gx, h, weight_hh, bias_hh, reset_after)
    return (1 - gates.z) * gates.n + gates.z * h, gates


def gru_cell(
    x_t: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    reset_after: bool = True,
) -> Tensor:
    """One GRU step.

    Args:
        x_t: `(batch, input_size)` input.
        h: `(batch, hidden_size)` previous hidden state.
        weight_ih: `(3 * hidden_size, input_size)`, gate rows `r, z, n`.
        weight_hh: `(3 * hidden_size, hidden_size)`, gate rows `r, z, n`.
        bias_ih: `(3 * hidden_size,)` or `None`.
        bias_hh: `(3 * hidden_size,)` or `None`.
        reset_after: `True` for the torch/cuDNN form, `False` for Cho et al. (2014).

    Returns:
        `(batch, hidden_size)` the next hidden state.
    """
    return _gru_update(F.linear(x_t, weight_ih, bias_ih), h, weight_hh, bias_hh, reset_after)[0]


def gru_scan(
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    reset_after: bool = True,
    initial_state: Tensor | None = None,
    return_gates: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, GRUGates]:
    """The GRU over a sequence.

    Args:
        x: `(batch, seq_len, input_size)`.
        weight_ih: `(3 * hidden_size, input_size)`.
        weight_hh: `(3 * hidden_size, hidden_size)`.
        bias_ih: `(3 * hidden_size,)` or `None`.
        bias_hh: `(3 * hidden_size,)` or `None`.
        reset_after: `True` for the torch/cuDNN form, `False` for Cho et al. (2014).
        initial_state: `(batch, hidden_size)` `h_0`, zeros if `None`.
        return_gates: also return the gate activations of every step.

    Returns:
        `(y, h_T)`: `y` `(batch, seq_len, hidden_size)` holds every `h_t`; `h_T` the last; with
        `return_gates`, also `GRUGates` of `(batch, seq_len, hidden_size)` tensors.
    """
    B, T, _ = x.shape
    h = x.new_zeros(B, weight_hh.shape[1]) if initial_state is None else initial_state
    gx = F.linear(x, weight_ih, bias_ih)  # (B, T, 3H)
    ys, all_gates = [], []
    for t in range(T):
        h, gates = _gru_update(gx[:, t], h, weight_hh, bias_hh, reset_after)
        ys.append(h)
        if return_gates:
            all_gates.append(gates)
    y = torch.stack(ys, dim=1)
    if return_gates:
        return y, h, GRUGates(*(torch.stack(g, dim=1) for g in zip(*all_gates, strict=True)))
    return y, h
