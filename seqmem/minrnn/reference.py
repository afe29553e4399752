r"""minGRU and minLSTM as readable PyTorch loops: the sequential form, the oracle of the other forms.

Both minimal RNNs take their gates from the input alone, never from $h_{t-1}$ (Feng et al. 2024,
Sec. 3.1 and 3.2, "Step 1: drop previous state dependencies from gates"), so one linear map computes
every gate of every step before the time loop. Here that map's output, the gate *pre-activations*
`gates = Linear(x)` `(batch, seq_len, G * hidden_size)`, is the input; the loop runs the recurrence
alone. Elementwise, for each hidden unit:

minGRU (Sec. 3.1), `gates = [k_z | k_h]`:

$$z_t = \sigma(k^z_t), \qquad \tilde h_t = g(k^h_t), \qquad
h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t \tag{1}$$

minLSTM (Sec. 3.2), `gates = [k_i | k_f | k_h]` (torch.nn's LSTM gate order `i, f, g` without `o`):

$$f_t = \sigma(k^f_t), \quad i_t = \sigma(k^i_t), \quad
f'_t = \frac{f_t}{f_t + i_t}, \quad i'_t = \frac{i_t}{f_t + i_t}, \quad
\tilde h_t = g(k^h_t), \quad h_t = f'_t \odot h_{t-1} + i'_t \odot \tilde h_t \tag{2}$$

The normalisation $f'_t + i'_t = 1$ is the paper's Step 3 ("ensure output is time-independent in
scale", Sec. 3.2): $h_t$ is a convex combination of $h_{t-1}$ and $\tilde h_t$, as in minGRU, so the
scale of the state does not grow with $t$.

The candidate's activation is the paper's $g$ of its log-space version (appendix, "log-space
version"), which replaces minGRU/minLSTM's identity (Step 2: "drop range restriction of candidate
states") by a continuous, increasing, strictly positive function:

$$g(x) = x + \tfrac12 \ (x \ge 0), \qquad g(x) = \sigma(x) \ (x < 0). \tag{3}$$

With $g > 0$ and convex weights, $h_0 \ge 0$ gives $h_t > 0$ for every $t \ge 1$: the logarithm of the
state exists, which is what the parallel form (`parallel.py`, Heinsen 2023) needs. The recurrent loop
here needs nothing of the sort and takes any real $h_0$.

References:
    Feng, L., Tung, F., Ahmed, M. O., Bengio, Y. & Hajimirsadeghi, H. (2024). Were RNNs all we needed?
    arXiv:2410.01201, Sec. 3.1 (minGRU), Sec. 3.2 (minLSTM) and the appendix on the log-space version
    (the function g, positive states).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["g", "mingru_recurrent", "mingru_step", "minlstm_recurrent", "minlstm_step"]


def g(x: Tensor) -> Tensor:
    r"""The candidate activation (3): $x + 1/2$ for $x \ge 0$, $\sigma(x)$ for $x < 0$; positive, continuous.

    Args:
        x: any float tensor.

    Returns:
        A tensor of `x`'s shape, every entry $> 0$ (for finite `x`; NaN stays NaN).

    References:
        Feng et al. (2024), arXiv:2410.01201, appendix (log-space version).
    """
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def mingru_step(gates_t: Tensor, h: Tensor) -> Tensor:
    r"""One step of minGRU, eq. (1): $h_t = (1 - z_t) h_{t-1} + z_t\, g(k^h_t)$.

    Args:
        gates_t: `(batch, 2 * hidden_size)` pre-activations `[k_z | k_h]` of this step.
        h: `(batch, hidden_size)` the state $h_{t-1}$.

    Returns:
        `(batch, hidden_size)` the new state $h_t$ (also the output).
    """
    k_z, k_h = gates_t.chunk(2, dim=-1)  # (B, H) each
    z = torch.sigmoid(k_z)  # update gate
    one_minus_z = torch.sigmoid(-k_z)  # 1 - z_t, exact also where z_t rounds to 1 (1 - z would give 0)
    h_tilde = g(k_h)  # candidate state
    return one_minus_z * h + z * h_tilde


def minlstm_step(gates_t: Tensor, h: Tensor) -> Tensor:
    r"""One step of minLSTM, eq. (2): $h_t = f'_t h_{t-1} + i'_t\, g(k^h_t)$, $f'_t + i'_t = 1$.

    Args:
        gates_t: `(batch, 3 * hidden_size)` pre-activations `[k_i | k_f | k_h]` of this step.
        h: `(batch, hidden_size)` the state $h_{t-1}$.

    Returns:
        `(batch, hidden_size)` the new state $h_t$ (also the output).
    """
    k_i, k_f, k_h = gates_t.chunk(3, dim=-1)  # (B, H) each
    # f'_t = f / (f + i) = sigma(u), u = log f - log i, and i'_t = sigma(-u): the same numbers as the
    # quotients, without their 0 / 0 where both sigmoids underflow (k < -104 in float32)
    u = F.logsigmoid(k_f) - F.logsigmoid(k_i)  # log(f_t / i_t)
    f_norm = torch.sigmoid(u)  # f'_t
    i_norm = torch.sigmoid(-u)  # i'_t
    h_tilde = g(k_h)
    return f_norm * h + i_norm * h_tilde


def _recurrent(step, gates: Tensor, initial_state: Tensor | None, num_gates: int) -> tuple[Tensor, Tensor]:
    B, T, GH = gates.shape
    h = gates.new_zeros(B, GH // num_gates) if initial_state is None else initial_state
    hs = []
    for t in range(T):
        h = step(gates[:, t], h)
        hs.append(h)
    return torch.stack(hs, dim=1), h


def mingru_recurrent(gates: Tensor, initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """minGRU over a sequence, one step at a time (eq. (1)): the sequential form.

    Args:
        gates: `(batch, seq_len, 2 * hidden_size)` pre-activations `[k_z | k_h]` (`Linear(x)`).
        initial_state: `(batch, hidden_size)` $h_0$, any real values; zeros if `None`.

    Returns:
        `(h, h_T)`: every state `(batch, seq_len, hidden_size)` (the output) and the last one
        `(batch, hidden_size)`.
    """
    return _recurrent(mingru_step, gates, initial_state, 2)


def minlstm_recurrent(gates: Tensor, initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """minLSTM over a sequence, one step at a time (eq. (2)): the sequential form.

    Args:
        gates: `(batch, seq_len, 3 * hidden_size)` pre-activations `[k_i | k_f | k_h]` (`Linear(x)`).
        initial_state: `(batch, hidden_size)` $h_0$, any real values; zeros if `None`.

    Returns:
        `(h, h_T)`: every state `(batch, seq_len, hidden_size)` (the output) and the last one
        `(batch, hidden_size)`.
    """
    return _recurrent(minlstm_step, gates, initial_state, 3)
