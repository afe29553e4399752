r"""The parallel form of the mLSTM with the stabilised gate matrix $D$, and its chunkwise use.

Unrolling eqs. 19-20 from a state $(C_0, n_0, m_0)$ over the positions $t = 1..T$ of a call, the weight
of the pair written at $s \le t$ in the memory at $t$ is $D_{ts} = \big(\prod_{r=s+1}^{t} f_r\big)\, i_s$,
that of the initial memory $\prod_{r=1}^{t} f_r$ (Beck et al. 2024, appendix, eq. 73: $D = F \odot \exp(I)$).
In logarithms,

$$\log D_{ts} = \sum_{r=s+1}^{t} \log f_r + \tilde\imath_s \;(s \le t), \qquad
\log w_t = \sum_{r=1}^{t} \log f_r + m_0 ,$$

and the stabiliser is their row maximum, $m_t = \max(\max_s \log D_{ts}, \log w_t)$ (eqs. 74-75, with
the initial state as one more column). That is exactly the $m_t$ the recurrence computes, so both forms
end in the same state $(C_T, n_T, m_T)$, not only the same outputs. With $D'_{ts} = e^{\log D_{ts} - m_t}$,
$w'_t = e^{\log w_t - m_t}$ (all $\le 1$) and the keys already scaled by $1/\sqrt{d_k}$,

$$\tilde C = Q K^\top \odot D', \qquad
\tilde h_t = \frac{\sum_s \tilde C_{ts} v_s + w'_t\, C_0 q_t}
{\max\{|\sum_s \tilde C_{ts} + w'_t\, n_0^\top q_t|,\; e^{-m_t}\}} .$$

The sums $\sum_{r=s+1}^{t} \log f_r$ are formed as segment sums of the terms themselves (a masked
cumulative sum, as Mamba-2's `segsum`), not as differences of one running sum, whose rounding grows
with $t$: the float32 error of $\log D_{ts}$ stays that of its own $t - s$ terms.

Cost $O(T^2 (d_k + d_v))$ per head. `mlstm_chunkwise` runs the parallel form on chunks of $C$ positions
and carries $(C, n, m)$ from one to the next: $O(T C)$ memory.

References:
    Beck, M. et al. (2024). xLSTM: extended long short-term memory. arXiv:2405.04517, sec. 2.3 and the
    appendix on the parallel mLSTM (eqs. 73-75, the stabilised gate activation matrix).
    Dao, T. & Gu, A. (2024). Transformers are SSMs. ICML (the segment sum of Mamba-2's reference code).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .reference import MLSTMCarry, _initial, log_forget_gate, normaliser_floor

__all__ = ["mlstm_chunkwise", "mlstm_parallel", "segment_sum"]


def segment_sum(x: Tensor) -> Tensor:
    r"""$S_{ts} = \sum_{r=s+1}^{t} x_r$ for $s \le t$ (0 on the diagonal), $-\infty$ above it.

    Args:
        x: `(..., T)` terms (log forget gates).

    Returns:
        `(..., T, T)`, row `t`, column `s`.
    """
    T = x.shape[-1]
    terms = x.unsqueeze(-1).expand(*x.shape, T)  # (..., T, T): terms[r, s] = x_r
    strictly_below = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(-1)  # r > s
    sums = torch.cumsum(terms.masked_fill(~strictly_below, 0.0), dim=-2)  # [t, s] = sum_{s < r <= t} x_r
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    return sums.masked_fill(~causal, float("-inf"))


def mlstm_parallel(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i_pre: Tensor,
    f_pre: Tensor,
    *,
    forget_gate: str = "sigmoid",
    initial_state: MLSTMCarry | None = None,
) -> tuple[Tensor, MLSTMCarry]:
    r"""The stabilised mLSTM over a sequence in the parallel form; equal to `mlstm_recurrent`.

    Args:
        q: `(batch, n_heads, seq_len, d_k)` queries.
        k: `(batch, n_heads, seq_len, d_k)` keys, scaled by $1/\sqrt{d_k}$.
        v: `(batch, n_heads, seq_len, d_v)` values.
        i_pre: `(batch, n_heads, seq_len)` input gate pre-activations $\tilde\imath_t$.
        f_pre: `(batch, n_heads, seq_len)` forget gate pre-activations $\tilde f_t$.
        forget_gate: `"sigmoid"` or `"exp"` (eq. 26).
        initial_state: `(C_0, n_0, m_0)`: `(batch, n_heads, d_v, d_k)`, `(batch, n_heads, d_k)`,
            `(batch, n_heads)`; `None` for zeros.

    Returns:
        `(h_tilde, (C_T, n_T, m_T))`: `h_tilde` `(batch, n_heads, seq_len, d_v)` and the final state.

    Example:
        >>> import torch
        >>> from seqmem.mlstm.parallel import mlstm_parallel
        >>> from seqmem.mlstm.reference import mlstm_recurrent
        >>> q, k, v = (torch.randn(1, 2, 6, 3, dtype=torch.float64) for _ in range(3))
        >>> i_pre = 200 * torch.randn(1, 2, 6, dtype=torch.float64)  # exp(i_pre) would overflow
        >>> f_pre = torch.randn(1, 2, 6, dtype=torch.float64)
        >>> h, (C, n, m) = mlstm_parallel(q, k, v, i_pre, f_pre)
        >>> h_rec, (C_rec, n_rec, m_rec) = mlstm_recurrent(q, k, v, i_pre, f_pre)
        >>> torch.allclose(h, h_rec) and torch.allclose(C, C_rec) and torch.allclose(m, m_rec)
        True
    """
    C0, n0, m0 = _initial(q, v, initial_state)
    log_f = log_forget_gate(f_pre, forget_gate)  # (B, H, T)
    log_D = segment_sum(log_f) + i_pre.unsqueeze(-2)  # (B, H, T, T): [t, s] = sum_{s<r<=t} log f_r + i~_s
    log_w = torch.cumsum(log_f, dim=-1) + m0.unsqueeze(-1)  # (B, H, T): weight of the initial state
    m = torch.maximum(log_D.amax(dim=-1), log_w)  # (B, H, T): the recurrence's m_t (eq. 15 unrolled)
    D = torch.exp(log_D - m.unsqueeze(-1))  # (B, H, T, T), entries <= 1, 0 above the diagonal
    w = torch.exp(log_w - m)  # (B, H, T), <= 1
    scores = (q @ k.transpose(-1, -2)) * D  # (B, H, T, T): C~ = Q K^T . D'
    num = scores @ v + w.unsqueeze(-1) * torch.einsum("bhtk,bhvk->bhtv", q, C0)  # (B, H, T, dv)
    dot = scores.sum(-1) + w * torch.einsum("bhtk,bhk->bht", q, n0)  # (B, H, T): n_t^T q_t
    h = num / torch.maximum(dot.abs(), normaliser_floor(m)).unsqueeze(-1)
    last = D[..., -1, :]  # (B, H, T): weights of every pair in the final memory
    C = torch.einsum("bhs,bhsv,bhsk->bhvk", last, v, k) + w[..., -1, None, None] * C0  # (B, H, dv, dk)
    n = torch.einsum("bhs,bhsk->bhk", last, k) + w[..., -1, None] * n0  # (B, H, dk)
    return h, (C, n, m[..., -1])


def mlstm_chunkwise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i_pre: Tensor,
    f_pre: Tensor,
    *,
    chunk_size: int = 64,
    forget_gate: str = "sigmoid",
    initial_state: MLSTMCarry | None = None,
) -> tuple[Tensor, MLSTMCarry]:
    r"""The parallel form on consecutive chunks of `chunk_size` positions, `(C, n, m)` carried across.

    Equal to `mlstm_parallel` and `mlstm_recurrent` (to rounding), with memory $O(T \cdot C)$ instead of
    $O(T^2)$.

    Args:
        q: `(batch, n_heads, seq_len, d_k)` queries.
        k: `(batch, n_heads, seq_len, d_k)` keys, scaled by $1/\sqrt{d_k}$.
        v: `(batch, n_heads, seq_len, d_v)` values.
        i_pre: `(batch, n_heads, seq_len)` input gate pre-activations.
        f_pre: `(batch, n_heads, seq_len)` forget gate pre-activations.
        chunk_size: positions per chunk, a positive int.
        forget_gate: `"sigmoid"` or `"exp"` (eq. 26).
        initial_state: `(C_0, n_0, m_0)`, or `None` for zeros.

    Returns:
        `(h_tilde, (C_T, n_T, m_T))` as `mlstm_parallel`.

    Raises:
        ValueError: if `chunk_size` is not a positive int.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"mlstm_chunkwise: chunk_size must be a positive int, got {chunk_size!r}")
    state = initial_state
    outs = []
    for lo in range(0, q.shape[2], chunk_size):
        hi = lo + chunk_size
        h, state = mlstm_parallel(
            q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], i_pre[:, :, lo:hi], f_pre[:, :, lo:hi],
            forget_gate=forget_gate, initial_state=state,
        )
        outs.append(h)
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)), state  # type: ignore[return-value]
