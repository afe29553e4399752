"""The LSTM as a readable PyTorch loop: the oracle the other backends are checked against.

Gates in `torch.nn` order `i, f, g, o` (stacked rows of `weight_ih`, `weight_hh`, the biases):

    i_t = sigma(W_ii x_t + W_hi h_{t-1} + b_i [+ w_ci * c_{t-1}])
    f_t = sigma(W_if x_t + W_hf h_{t-1} + b_f [+ w_cf * c_{t-1}])
    g_t = tanh (W_ig x_t + W_hg h_{t-1} + b_g)
    c_t = f_t * c_{t-1} + i_t * g_t                  (the additive cell path: dc_t/dc_{t-1} = diag(f_t))
    o_t = sigma(W_io x_t + W_ho h_{t-1} + b_o [+ w_co * c_t])
    h_t = o_t * tanh(c_t)

The bracketed peephole terms (Gers & Schmidhuber 2000) are used when `weight_peephole` is given.

References:
    Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8).
    Gers, F. A., Schmidhuber, J. & Cummins, F. (2000). Learning to forget: continual prediction with
    LSTM. Neural Computation 12(10) (the forget gate).
    Gers, F. A. & Schmidhuber, J. (2000). Recurrent nets that time and count. IJCNN (peepholes).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..protocol import LSTMState

__all__ = ["LSTMGates", "lstm_cell", "lstm_scan"]


class LSTMGates(NamedTuple):
    """The gate activations of an LSTM run, each `(batch, seq_len, hidden_size)` (or one step's
    `(batch, hidden_size)`), after their nonlinearity: input `i`, forget `f`, candidate `g`, output `o`."""

    i: Tensor
    f: Tensor
    g: Tensor
    o: Tensor


def _lstm_update(
    gates: Tensor, c: Tensor, weight_peephole: Tensor | None
) -> tuple[Tensor, Tensor, LSTMGates]:
    """From pre-activations `(B, 4H)` and `c_{t-1}` to `(h_t, c_t, gates)`."""
    i, f, g, o = gates.chunk(4, dim=-1)
    if weight_peephole is not None:
        i = i + weight_peephole[0] * c
        f = f + weight_peephole[1] * c
    i, f, g = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
    c = f * c + i * g
    if weight_peephole is not None:
        o = o + weight_peephole[2] * c
    o = torch.sigmoid(o)
    h = o * torch.tanh(c)
    return h, c, LSTMGates(i, f, g, o)


def lstm_cell(
    x_t: Tensor,
    state: LSTMState,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    weight_peephole: Tensor | None = None,
) -> tuple[LSTMState, LSTMGates]:
    """One LSTM step.

    Args:
        x_t: `(batch, input_size)` input.
        state: `LSTMState(h, c)`, each `(batch, hidden_size)`.
        weight_ih: `(4 * hidden_size, input_size)`, gate rows `i, f, g, o`.
        weight_hh: `(4 * hidden_size, hidden_size)`, gate rows `i, f, g, o`.
        bias_ih: `(4 * hidden_size,)` or `None`.
        bias_hh: `(4 * hidden_size,)` or `None`.
        weight_peephole: `(3, hidden_size)` peephole weights `w_ci, w_cf, w_co`, or `None`.

    Returns:
        The next `LSTMState(h, c)` and the step's `LSTMGates`.
    """
    h, c = state
    gates = F.linear(x_t, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)
    h, c, acts = _lstm_update(gates, c, weight_peephole)
    return LSTMState(h, c), acts


def lstm_scan(
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    weight_peephole: Tensor | None = None,
    initial_state: LSTMState | None = None,
    return_gates: bool = False,
) -> tuple[Tensor, LSTMState] | tuple[Tensor, LSTMState, LSTMGates]:
    """The LSTM over a sequence.

    Args:
        x: `(batch, seq_len, input_size)`.
        weight_ih: `(4 * hidden_size, input_size)`.
        weight_hh: `(4 * hidden_size, hidden_size)`.
        bias_ih: `(4 * hidden_size,)` or `None`.
        bias_hh: `(4 * hidden_size,)` or `None`.
        weight_peephole: `(3, hidden_size)` or `None`.
        initial_state: `LSTMState(h_0, c_0)`, zeros if `None`.
        return_gates: also return the gate activations of every step.

    Returns:
        `(y, state)` with `y` `(batch, seq_len, hidden_size)` holding every `h_t` and the final
        `LSTMState`; with `return_gates`, also `LSTMGates` of `(batch, seq_len, hidden_size)` tensors.
    """
    B, T, _ = x.shape
    H = weight_hh.shape[1]
    if initial_state is None:
        initial_state = LSTMState(x.new_zeros(B, H), x.new_zeros(B, H))
    h, c = initial_state
    gx = F.linear(x, weight_ih, bias_ih)  # (B, T, 4H)
    ys, all_gates = [], []
    for t in range(T):
        h, c, acts = _lstm_update(gx[:, t] + F.linear(h, weight_hh, bias_hh), c, weight_peephole)
        ys.append(h)
        if return_gates:
            all_gates.append(acts)
    y = torch.stack(ys, dim=1)
    if return_gates:
        return y, LSTMState(h, c), LSTMGates(*(torch.stack(g, dim=1) for g in zip(*all_gates)))
    return y, LSTMState(h, c)
