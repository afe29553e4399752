r"""The parallel (masked, quadratic) form of linear attention and retention.

Unrolling the recurrence of `seqmem.linear_attention.reference` from a state $S_0$ gives, for the
positions $n = 0 .. T-1$ of a call,

$$S_n = \gamma^{n+1} S_0 + \sum_{m \le n} \gamma^{n-m} k_m v_m^\top, \qquad
o_n^\top = \gamma^{n+1} q_n^\top S_0 + \sum_{m \le n} \gamma^{n-m} (q_n^\top k_m)\, v_m^\top,$$

that is, stacking positions as rows, $O = (Q K^\top \odot D)\, V + \mathrm{diag}(\gamma^{n+1})\, Q S_0$ with
the causal decay mask $D_{nm} = \gamma^{n-m}$ for $n \ge m$ and $0$ otherwise: the parallel form of
retention (Sun et al. 2023, eq. 5), and for $\gamma = 1$ the masked linear attention of Katharopoulos et
al. (2020, eq. 9). The normaliser $z$ obeys the same recurrence with $v_m$ replaced by $1$, so it is
computed by the same products on values with a column of ones appended ($[v_m; 1]$, state $[S; z]$).

Cost $O(T^2 (d_k + d_v))$ per head, like softmax attention; `seqmem.linear_attention.chunk` brings it
to $O(T\, C\, (d_k + d_v) + T d_k d_v)$ with chunks of $C$ positions.

References:
    Sun, Y. et al. (2023). Retentive network: a successor to transformer for large language models.
    arXiv:2307.08621, sec. 2.1, eq. 5 (parallel form with the decay mask D).
    Katharopoulos, A. et al. (2020). Transformers are RNNs. ICML, sec. 3.3 (eq. 9).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .reference import LinearAttentionCarry, _initial

__all__ = ["decay_mask", "linear_attention_parallel"]


def decay_mask(gamma: Tensor | None, n_queries: int, *, dtype: torch.dtype, device: torch.device | str | None = None
               ) -> Tensor:
    r"""The causal decay mask $D_{nm} = \gamma^{n-m}$ for $n \ge m$, $0$ for $n < m$ (Sun et al. 2023, eq. 5).

    The powers are formed as $\exp((n - m) \log\gamma)$ below the diagonal only, so a small $\gamma$ over a
    long sequence underflows to 0 instead of overflowing above it.

    Args:
        gamma: `(n_heads,)` decay per head in `(0, 1]`, or `None` for no decay (the causal mask of ones).
        n_queries: the number of positions `T`.
        dtype: dtype of the mask.
        device: where to build it.

    Returns:
        `(n_heads, T, T)` (`(1, T, T)` when `gamma` is `None`).
    """
    n = torch.arange(n_queries, device=device)
    lag = (n[:, None] - n[None, :]).to(dtype)  # (T, T): n - m
    causal = lag >= 0
    if gamma is None:
        return causal.to(dtype).unsqueeze(0)  # (1, T, T)
    log_gamma = torch.log(gamma.to(dtype))[:, None, None]  # (H, 1, 1)
    powers = torch.exp(lag.clamp(min=0) * log_gamma)  # (H, T, T)
    return torch.where(causal, powers, torch.zeros((), dtype=dtype, device=device))


def _powers(gamma: Tensor | None, exponents: Tensor) -> Tensor | None:
    r"""$\gamma_h^{e}$ for every head and exponent: `(n_heads, len(exponents))`, or `None` without decay."""
    if gamma is None:
        return None
    return torch.exp(exponents.to(gamma.dtype)[None, :] * torch.log(gamma)[:, None])


def _decayed_parallel(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor | None, S0: Tensor) -> tuple[Tensor, Tensor]:
    """The unnormalised parallel form: `o = (Q K^T . D) V + gamma^(n+1) Q S0` and the final state."""
    T = q.shape[2]
    D = decay_mask(gamma, T, dtype=q.dtype, device=q.device)  # (H, T, T) or (1, T, T)
    scores = (q @ k.transpose(-1, -2)) * D  # (B, H, T, T)
    o = scores @ v  # (B, H, T, dv)
    n = torch.arange(T, device=q.device)
    into = _powers(gamma, n + 1)  # (H, T): gamma^(n+1), the weight of S0 at position n
    out = _powers(gamma, T - 1 - n)  # (H, T): gamma^(T-1-m), the weight of k_m v_m^T in S_T
    if into is None:
        o = o + q @ S0  # (B, H, T, dv)
        S = S0 + k.transpose(-1, -2) @ v  # (B, H, dk, dv)
    else:
        o = o + (q * into[:, :, None]) @ S0
        S = gamma[:, None, None] ** T * S0 + (k * out[:, :, None]).transpose(-1, -2) @ v
    return o, S


def _with_normaliser(v: Tensor, state: LinearAttentionCarry) -> tuple[Tensor, Tensor]:
    """Values `[v; 1]` `(B, H, T, dv+1)` and state `[S; z]` `(B, H, dk, dv+1)`: z rides along as one more column."""
    S, z = state
    if z is None:
        return v, S
    ones = v.new_ones(v.shape[:-1] + (1,))
    return torch.cat([v, ones], dim=-1), torch.cat([S, z.unsqueeze(-1)], dim=-1)


def _split_normaliser(o: Tensor, S: Tensor, normalize: bool, eps: float) -> tuple[Tensor, LinearAttentionCarry]:
    """Undo `_with_normaliser`: divide the numerator columns by the last one plus `eps`."""
    if not normalize:
        return o, (S, None)
    return o[..., :-1] / (o[..., -1:] + eps), (S[..., :-1], S[..., -1])


def linear_attention_parallel(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gamma: Tensor | None = None,
    *,
    normalize: bool = True,
    eps: float = 1e-6,
    initial_state: LinearAttentionCarry | None = None,
) -> tuple[Tensor, LinearAttentionCarry]:
    r"""Linear attention or retention over a sequence in the parallel form, $(QK^\top \odot D) V$.

    Equal to `linear_attention_recurrent` with the same arguments (to rounding).

    Args:
        q: `(batch, n_heads, seq_len, d_k)` queries (feature map applied).
        k: `(batch, n_heads, seq_len, d_k)` keys (feature map applied).
        v: `(batch, n_heads, seq_len, d_v)` values.
        gamma: `(n_heads,)` decay per head in `(0, 1]`, or `None` for none.
        normalize: divide by $q_n^\top z_n + \varepsilon$ (linear attention); `False` for retention.
        eps: added to the normaliser.
        initial_state: `(S_0, z_0)`: `S_0` `(batch, n_heads, d_k, d_v)`, `z_0` `(batch, n_heads, d_k)`
            (`None` without normaliser); `None` for zeros.

    Returns:
        `(o, (S_T, z_T))`: `o` `(batch, n_heads, seq_len, d_v)` and the state after the last position.

    Example:
        >>> import torch
        >>> from seqmem.linear_attention.parallel import linear_attention_parallel
        >>> from seqmem.linear_attention.reference import linear_attention_recurrent
        >>> q, k, v = (torch.rand(1, 2, 5, 3, dtype=torch.float64) for _ in range(3))
        >>> gamma = torch.tensor([0.9, 0.5], dtype=torch.float64)
        >>> o, (S, z) = linear_attention_parallel(q, k, v, gamma)
        >>> o_rec, (S_rec, z_rec) = linear_attention_recurrent(q, k, v, gamma)
        >>> torch.allclose(o, o_rec) and torch.allclose(S, S_rec) and torch.allclose(z, z_rec)
        True
    """
    v_aug, S0 = _with_normaliser(v, _initial(q, v, normalize, initial_state))
    o, S = _decayed_parallel(q, k, v_aug, gamma, S0)
    return _split_normaliser(o, S, normalize, eps)
