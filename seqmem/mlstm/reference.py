r"""The mLSTM cell as a readable recurrent loop: the oracle its parallel form is checked against.

The mLSTM of xLSTM (Beck et al. 2024, sec. 2.3) stores key-value pairs in a matrix memory, with an
exponential input gate and a sigmoid or exponential forget gate, per head:

$$C_t = f_t C_{t-1} + i_t\, v_t k_t^\top \;\text{(eq. 19)}, \qquad n_t = f_t n_{t-1} + i_t k_t \;\text{(eq. 20)},$$

$$\tilde h_t = \frac{C_t q_t}{\max\{|n_t^\top q_t|, 1\}} \;\text{(eq. 21)}, \qquad
i_t = \exp(\tilde\imath_t) \;\text{(eq. 25)}, \qquad
f_t = \sigma(\tilde f_t) \text{ or } \exp(\tilde f_t) \;\text{(eq. 26)}.$$

$\exp(\tilde\imath_t)$ overflows float32 from $\tilde\imath_t \approx 89$ on, so the state is kept scaled by a
stabiliser $m_t$ (sec. 2.2, eqs. 15-17):

$$m_t = \max(\log f_t + m_{t-1}, \tilde\imath_t), \quad i'_t = \exp(\tilde\imath_t - m_t), \quad
f'_t = \exp(\log f_t + m_{t-1} - m_t),$$

and $C_t, n_t$ are updated with $i'_t, f'_t \le 1$ in place of $i_t, f_t$. The stored $C_t, n_t$ are then
the true ones times $e^{-m_t}$, so the read-out becomes
$\tilde h_t = C_t q_t / \max\{|n_t^\top q_t|, e^{-m_t}\}$, which is eq. 21 exactly: the stabiliser changes
no output, only the range of the numbers. It belongs to the state: `(C, n, m)`, and a sequence continued
from a state must start from its `m`.

$e^{-m_t}$ is formed as $\exp$ of $-m_t$ clamped to the dtype's finite range: a floor below `finfo.tiny`
or above `finfo.max` stands for one that cannot be represented (the output is then 0, or
$C_t q_t / |n_t^\top q_t|$, as in exact arithmetic to the dtype's precision).

Shapes: `q, k` `(batch, n_heads, seq_len, d_k)`, `v` `(batch, n_heads, seq_len, d_v)`, gate
pre-activations `(batch, n_heads, seq_len)`; the state is `C` `(batch, n_heads, d_v, d_k)` (the paper's
$C_t$, so $\tilde h_t = C_t q_t$), `n` `(batch, n_heads, d_k)`, `m` `(batch, n_heads)`. The keys come
already scaled by $1/\sqrt{d_k}$ (eq. 23); the output gate of eq. 21, $h_t = o_t \odot \tilde h_t$, is
applied by the block (`seqmem.MLSTM`), so these functions return $\tilde h_t$.

References:
    Beck, M., Pöppel, K., Spanring, M., Auer, A., Prudnikova, O., Kopp, M., Klambauer, G.,
    Brandstetter, J. & Hochreiter, S. (2024). xLSTM: extended long short-term memory. arXiv:2405.04517,
    sec. 2.2 (eqs. 15-17, the stabiliser) and sec. 2.3 (eqs. 19-27, the mLSTM).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .._module import check_choice

__all__ = ["FORGET_GATES", "log_forget_gate", "mlstm_recurrent", "mlstm_step", "normaliser_floor"]

FORGET_GATES = ("sigmoid", "exp")
"""The forget gate activations of eq. 26: $f_t = \\sigma(\\tilde f_t)$ or $f_t = \\exp(\\tilde f_t)$."""

MLSTMCarry = tuple[Tensor, Tensor, Tensor]
"""The cell's state `(C (batch, n_heads, d_v, d_k), n (batch, n_heads, d_k), m (batch, n_heads))`."""


def log_forget_gate(f_pre: Tensor, forget_gate: str = "sigmoid") -> Tensor:
    r"""$\log f_t$ from the pre-activation $\tilde f_t$ (eq. 26): $\log\sigma(\tilde f_t)$ or $\tilde f_t$.

    Args:
        f_pre: forget gate pre-activations $\tilde f_t$, any shape.
        forget_gate: `"sigmoid"` or `"exp"`.

    Returns:
        A tensor shaped like `f_pre` (`logsigmoid` is computed without forming $\sigma$, so it stays finite).

    Raises:
        ValueError: for an unknown `forget_gate`.
    """
    check_choice("forget_gate", forget_gate, FORGET_GATES, "log_forget_gate")
    return F.logsigmoid(f_pre) if forget_gate == "sigmoid" else f_pre


def normaliser_floor(m: Tensor) -> Tensor:
    r"""$e^{-m}$, the stabilised form of the 1 in $\max\{|n_t^\top q_t|, 1\}$ (eq. 21), kept finite and positive.

    Args:
        m: stabiliser $m_t$, any shape.

    Returns:
        $\exp(\mathrm{clamp}(-m, \log \mathrm{tiny}, \log \mathrm{max}))$ in `m`'s dtype: never 0, never inf.
    """
    info = torch.finfo(m.dtype)
    return torch.exp((-m).clamp(min=math.log(info.tiny), max=math.log(info.max) - 1.0))


def mlstm_step(
    q_t: Tensor,
    k_t: Tensor,
    v_t: Tensor,
    i_pre_t: Tensor,
    f_pre_t: Tensor,
    state: MLSTMCarry,
    *,
    forget_gate: str = "sigmoid",
) -> tuple[Tensor, MLSTMCarry]:
    r"""One stabilised step of the mLSTM (eqs. 15-17, 19-21).

    Args:
        q_t: `(batch, n_heads, d_k)` query.
        k_t: `(batch, n_heads, d_k)` key, scaled by $1/\sqrt{d_k}$ (eq. 23).
        v_t: `(batch, n_heads, d_v)` value.
        i_pre_t: `(batch, n_heads)` input gate pre-activation $\tilde\imath_t$.
        f_pre_t: `(batch, n_heads)` forget gate pre-activation $\tilde f_t$.
        state: `(C, n, m)`: `(batch, n_heads, d_v, d_k)`, `(batch, n_heads, d_k)`, `(batch, n_heads)`.
        forget_gate: `"sigmoid"` or `"exp"` (eq. 26).

    Returns:
        `(h_tilde_t, (C_t, n_t, m_t))`: $\tilde h_t$ `(batch, n_heads, d_v)` and the new state.
    """
    C, n, m = state
    log_f = log_forget_gate(f_pre_t, forget_gate)  # (B, H)
    m_new = torch.maximum(log_f + m, i_pre_t)  # eq. 15
    i = torch.exp(i_pre_t - m_new)  # eq. 16: i'_t <= 1
    f = torch.exp(log_f + m - m_new)  # eq. 17: f'_t <= 1
    C = f[..., None, None] * C + i[..., None, None] * (v_t.unsqueeze(-1) * k_t.unsqueeze(-2))  # eq. 19
    n = f[..., None] * n + i[..., None] * k_t  # eq. 20
    num = torch.einsum("bhvk,bhk->bhv", C, q_t)  # C_t q_t
    den = torch.maximum((n * q_t).sum(-1).abs(), normaliser_floor(m_new))  # max{|n^T q|, e^-m}
    return num / den.unsqueeze(-1), (C, n, m_new)  # eq. 21


def mlstm_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i_pre: Tensor,
    f_pre: Tensor,
    *,
    forget_gate: str = "sigmoid",
    initial_state: MLSTMCarry | None = None,
) -> tuple[Tensor, MLSTMCarry]:
    r"""The stabilised mLSTM over a whole sequence, one step at a time.

    Args:
        q: `(batch, n_heads, seq_len, d_k)` queries.
        k: `(batch, n_heads, seq_len, d_k)` keys, scaled by $1/\sqrt{d_k}$.
        v: `(batch, n_heads, seq_len, d_v)` values.
        i_pre: `(batch, n_heads, seq_len)` input gate pre-activations $\tilde\imath_t$.
        f_pre: `(batch, n_heads, seq_len)` forget gate pre-activations $\tilde f_t$.
        forget_gate: `"sigmoid"` or `"exp"` (eq. 26).
        initial_state: `(C_0, n_0, m_0)` as `mlstm_step` takes it, or `None` for zeros (the empty
            memory; $m_0 = 0$).

    Returns:
        `(h_tilde, (C_T, n_T, m_T))`: `h_tilde` `(batch, n_heads, seq_len, d_v)` and the final state.
    """
    state = _initial(q, v, initial_state)
    outs = []
    for t in range(q.shape[2]):
        h_t, state = mlstm_step(
            q[:, :, t], k[:, :, t], v[:, :, t], i_pre[:, :, t], f_pre[:, :, t], state, forget_gate=forget_gate
        )
        outs.append(h_t)
    return torch.stack(outs, dim=2), state


def _initial(q: Tensor, v: Tensor, state: MLSTMCarry | None) -> MLSTMCarry:
    """Zeros of the right shapes (the empty memory, m = 0) when `state` is `None`."""
    if state is not None:
        return state
    B, H, _, dk = q.shape
    return q.new_zeros(B, H, v.shape[-1], dk), q.new_zeros(B, H, dk), q.new_zeros(B, H)
