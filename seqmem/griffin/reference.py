r"""The RG-LRU and local attention as readable PyTorch loops: the oracles the other forms are tested against.

The Real-Gated Linear Recurrent Unit (De et al. 2024, sec. 2.4), for every channel independently (all
products elementwise), with $x_t$ its input and $h_0$ the initial state:

$$
\begin{aligned}
r_t &= \sigma(W_a x_t + b_a) && \text{recurrence gate, eq. (1)} \\
i_t &= \sigma(W_x x_t + b_x) && \text{input gate, eq. (2)} \\
a_t &= a^{c\, r_t}, \quad a = \sigma(\Lambda) && \text{eq. (3)} \\
h_t &= a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot x_t) && \text{eq. (4)}
\end{aligned}
$$

and the output is $y_t = h_t$. The functions here take the gates' pre-activations
$W_a x_t + b_a$ and $W_x x_t + b_x$ (`gate_a`, `gate_x`), so that the projections stay in the module and
every form of the recurrence (this loop, the parallel scan of `parallel.py`, the Numba kernels of
`numba_scan.py`) has one signature. As the paper does (Appendix A), $a_t$ is computed in log space:
$\log a_t = c\, r_t \log \sigma(\Lambda) = -c\, r_t\, \mathrm{softplus}(-\Lambda)$, which is finite for
every $\Lambda$, and $\sqrt{1 - a_t^2} = \sqrt{-\mathrm{expm1}(2 \log a_t)}$, accurate when $a_t$ is close to 1.

Local multi-query attention (sec. 2.2): a query at position $t$ attends to itself and the `window`
positions before it ($t - \text{window} \le s \le t$, the mask of the authors' released code, RecurrentGemma),
with one key/value head shared by every query head (Shazeer 2019) and rotary positions (Su et al. 2021).
`local_attention_reference` writes that out with an explicit softmax over every key;
`parallel.local_attention` is the banded form the model runs.

References:
    De, S., Smith, S. L., Fernando, A. et al. (2024). Griffin: mixing gated linear recurrences with local
    attention for efficient language models. arXiv:2402.19427, sec. 2.2 (local attention), 2.4 and
    eq. (1)-(4) (the RG-LRU), Appendix A (log-space computation).
    Orvieto, A. et al. (2023). Resurrecting recurrent neural networks for long sequences (the LRU, whose
    normalisation $\sqrt{1 - a^2}$ the RG-LRU keeps). ICML.
    Botev, A., De, S., Smith, S. L. et al. (2024). RecurrentGemma: moving past transformers for efficient
    open language models. arXiv:2404.07839 (the authors' released code: the window mask).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["C_DEFAULT", "local_attention_reference", "log_a", "rglru", "rglru_gates", "rglru_step"]

C_DEFAULT = 8.0
"""The scalar constant $c$ of eq. (3), fixed to 8 in the paper."""


def log_a(Lambda: Tensor) -> Tensor:
    r"""$\log a = \log \sigma(\Lambda) = -\mathrm{softplus}(-\Lambda)$, finite for every $\Lambda$ (eq. 3).

    Args:
        Lambda: `(d_rnn,)` the recurrence parameter $\Lambda$.

    Returns:
        `(d_rnn,)` the log of the recurrent weight $a = \sigma(\Lambda) \in (0, 1)$.
    """
    return -F.softplus(-Lambda)


def rglru_gates(
    x: Tensor, gate_a: Tensor, gate_x: Tensor, Lambda: Tensor, c: float = C_DEFAULT
) -> tuple[Tensor, Tensor]:
    r"""The decay and the gated, normalised input of eq. (4): $a_t$ and $b_t = \sqrt{1 - a_t^2}\, i_t x_t$.

    With them the recurrence is $h_t = a_t h_{t-1} + b_t$, a diagonal linear recurrence.

    Args:
        x: `(..., d_rnn)` input $x_t$ of the RG-LRU.
        gate_a: `(..., d_rnn)` pre-activation $W_a x_t + b_a$ of the recurrence gate.
        gate_x: `(..., d_rnn)` pre-activation $W_x x_t + b_x$ of the input gate.
        Lambda: `(d_rnn,)` the recurrence parameter $\Lambda$.
        c: the constant $c$ of eq. (3).

    Returns:
        `(a_t, b_t)`, both shaped like `x`: $a_t \in (0, 1]$ and $b_t$.
    """
    r = torch.sigmoid(gate_a)  # eq. (1)
    i = torch.sigmoid(gate_x)  # eq. (2)
    log_a_t = c * r * log_a(Lambda)  # eq. (3) in log space: log a_t = c r_t log a
    a_t = torch.exp(log_a_t)
    multiplier = torch.sqrt(-torch.expm1(2.0 * log_a_t))  # sqrt(1 - a_t^2)
    return a_t, multiplier * (i * x)


def rglru_step(
    x_t: Tensor, gate_a_t: Tensor, gate_x_t: Tensor, Lambda: Tensor, c: float, h: Tensor
) -> tuple[Tensor, Tensor]:
    """One step of the RG-LRU, eq. (1)-(4).

    Args:
        x_t: `(batch, d_rnn)` input.
        gate_a_t: `(batch, d_rnn)` recurrence-gate pre-activation $W_a x_t + b_a$.
        gate_x_t: `(batch, d_rnn)` input-gate pre-activation $W_x x_t + b_x$.
        Lambda: `(d_rnn,)` the recurrence parameter.
        c: the constant of eq. (3).
        h: `(batch, d_rnn)` state $h_{t-1}$.

    Returns:
        `(y_t, h_t)`, both `(batch, d_rnn)`: the output is the new state, $y_t = h_t$ (the same tensor).
    """
    a_t, b_t = rglru_gates(x_t, gate_a_t, gate_x_t, Lambda, c)
    h = a_t * h + b_t  # eq. (4)
    return h, h


def rglru(
    x: Tensor,
    gate_a: Tensor,
    gate_x: Tensor,
    Lambda: Tensor,
    c: float = C_DEFAULT,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The RG-LRU over a whole sequence, one step at a time (eq. 1-4).

    Args:
        x: `(batch, seq_len, d_rnn)` input.
        gate_a: `(batch, seq_len, d_rnn)` recurrence-gate pre-activations $W_a x_t + b_a$.
        gate_x: `(batch, seq_len, d_rnn)` input-gate pre-activations $W_x x_t + b_x$.
        Lambda: `(d_rnn,)` the recurrence parameter.
        c: the constant of eq. (3).
        initial_state: `(batch, d_rnn)` $h_0$, zeros if `None`.

    Returns:
        `(y, h_T)`: `y` `(batch, seq_len, d_rnn)` (the states $h_1 .. h_T$) and the final state
        `(batch, d_rnn)`.
    """
    h = x.new_zeros(x.shape[0], x.shape[2]) if initial_state is None else initial_state
    ys = []
    for t in range(x.shape[1]):
        y_t, h = rglru_step(x[:, t], gate_a[:, t], gate_x[:, t], Lambda, c, h)
        ys.append(y_t)
    return torch.stack(ys, dim=1), h


def local_attention_reference(q: Tensor, k: Tensor, v: Tensor, window: int, n_cached: Tensor) -> Tensor:
    r"""Sliding-window multi-query attention written out: $\mathrm{softmax}(q K^\top / \sqrt{d} + M) V$.

    The `T` queries are the last `T` of the `S = C + T` key positions (`C` cached positions first). Query
    `t` (key position `C + t`) sees key `s` when `C + t - window <= s <= C + t` and the key is held:
    of the `C` cached slots, only the last `n_cached[b]` of row `b` are.

    Args:
        q: `(batch, n_heads, T, head_dim)` queries (rotary positions applied).
        k: `(batch, S, head_dim)` keys of the one key/value head (rotary positions applied).
        v: `(batch, S, head_dim)` values.
        window: how many positions before its own each query sees.
        n_cached: `(batch,)` how many of the `C = S - T` cached slots hold keys (the last ones).

    Returns:
        `(batch, n_heads, T, head_dim)`.
    """
    T, S, d = q.shape[-2], k.shape[-2], q.shape[-1]
    C = S - T
    scores = torch.einsum("bhtd,bsd->bhts", q, k) / math.sqrt(d)  # (B, H, T, S)
    t = torch.arange(T, device=q.device)[:, None] + C  # (T, 1) key position of each query
    s = torch.arange(S, device=q.device)[None, :]  # (1, S)
    band = (s <= t) & (s >= t - window)  # (T, S)
    held = s[None] >= C - n_cached.to(torch.long)[:, None, None]  # (B, 1, S)
    mask = band[None, None] & held[:, None]  # (B, 1, T, S)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhts,bsd->bhtd", scores.softmax(dim=-1), v)
