r"""Causal attention and rotary position embeddings as plain functions.

The pieces the `CausalTransformer` is built from, kept apart so they can be tested on their own:

    angles   theta_i = base^(-2(i-1)/d),  i = 1 .. d/2           (Su et al. 2021, sec. 3.2.2)
    rotary   R_m x = x * cos(m theta) + rot(x) * sin(m theta)       (Su et al. 2021, eq. 34)
             with rot(x) = (-x_2, x_1, -x_4, x_3, ...): each pair (x_{2i-1}, x_{2i}) turned by m theta_i
    attend   softmax(Q K^T / sqrt(d) + M) V,  M_ij = 0 if key j is not after query i, else -inf
                                                                     (Vaswani et al. 2017, eq. 1)

Because a rotation by `m theta` followed by the transpose of one by `n theta` is a rotation by
`(n - m) theta`, the score `<R_m q, R_n k> = <q, R_{n-m} k>` depends on the positions only through their
offset: that is what lets a key be rotated once, stored in the cache, and reused by every later query.

`causal_attention` uses `torch.nn.functional.scaled_dot_product_attention` (and keeps a non-finite key or
value away from the queries before it); `attention_reference` writes eq. 1 out query by query with an
explicit softmax and is the oracle the tests compare it with.

References:
    Vaswani, A. et al. (2017). Attention is all you need. NeurIPS (eq. 1).
    Su, J. et al. (2021). RoFormer: enhanced transformer with rotary position embedding.
    arXiv:2104.09864 (sec. 3.2.2 and eq. 34).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

__all__ = ["apply_rotary", "attention_reference", "causal_attention", "causal_mask", "rotary_cos_sin"]


def rotary_cos_sin(
    positions: Tensor,
    head_dim: int,
    base: float = 10000.0,
    *,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The cosines and sines of the rotary angles $m \theta_i$ for the given absolute positions.

    The angles are formed in float64 (float32 on devices without it, such as MPS) and only then cast
    to `dtype`, so that a float32 model keeps accurate angles at large positions.

    Args:
        positions: `(T,)` absolute positions $m$ (any integer or float dtype); their device is used.
        head_dim: size $d$ of one head, even.
        base: the base of the geometric frequencies, $\theta_i = \text{base}^{-2(i-1)/d}$.
        dtype: dtype of the result; defaults to the default float dtype.

    Returns:
        `(cos, sin)`, each `(T, head_dim // 2)`: entry `[t, i]` is $\cos(m_t \theta_i)$, $\sin(m_t \theta_i)$.

    Raises:
        ValueError: if `head_dim` is not a positive even number or `positions` is not 1-D.
    """
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
    if positions.dim() != 1:
        raise ValueError(f"positions must have shape (T,), got {tuple(positions.shape)}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    exact = torch.float32 if positions.device.type == "mps" else torch.float64
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=exact) / head_dim
    inv_freq = base ** (-exponents)  # (hs/2,)  theta_i
    angles = positions.to(exact)[:, None] * inv_freq[None, :]  # (T, hs/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    r"""Rotate each pair of features $(x_{2i-1}, x_{2i})$ by the angle $m \theta_i$ (RoFormer eq. 34).

    Args:
        x: `(..., T, head_dim)` queries or keys, e.g. `(batch, n_heads, T, head_dim)`.
        cos: `(T, head_dim // 2)` from `rotary_cos_sin`.
        sin: `(T, head_dim // 2)` from `rotary_cos_sin`.

    Returns:
        A tensor shaped like `x`: $R_m x$ for the position $m$ of each row.
    """
    pairs = rearrange(x, "... t (i two) -> ... t i two", two=2)  # (..., T, hs/2, 2)
    x1, x2 = pairs.unbind(-1)  # (..., T, hs/2) each
    rotated = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)  # (..., T, hs/2, 2)
    return rearrange(rotated, "... t i two -> ... t (i two)")  # (..., T, hs)


def causal_mask(n_queries: int, n_keys: int, device: torch.device | str | None = None) -> Tensor:
    """Which keys each query may see when the queries are the last `n_queries` of `n_keys` positions.

    Args:
        n_queries: number of queries `T`.
        n_keys: number of keys `S >= T` (the cached positions plus the new ones).
        device: where to build the mask.

    Returns:
        `(T, S)` bool, `True` where query `i` (absolute position `S - T + i`) may attend to key `j`,
        i.e. where `j <= S - T + i`.
    """
    full = torch.ones(n_queries, n_keys, dtype=torch.bool, device=device)
    return full.tril(diagonal=n_keys - n_queries)  # (T, S)


def _sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """`causal_attention` for finite keys and values: one call of the fused kernel (no check)."""
    T, S = q.shape[-2], k.shape[-2]
    if T == 1:  # a single query at the last position sees every key
        return F.scaled_dot_product_attention(q, k, v)
    if S == T:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, S, device=q.device))


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    r"""Causal scaled dot-product attention of new queries over cached plus new keys (eq. 1).

    The `T` queries sit at the last `T` of the `S` key positions: query `i` sees keys `0 .. S - T + i`.
    With no cache (`S == T`) this is the usual causal mask (`is_causal=True`); otherwise an explicit
    `(T, S)` boolean mask is passed. Scale $1/\sqrt{d}$.

    Non-finite keys and values follow eq. 1 literally: a query never sees what comes after it, and a
    query that sees a NaN or an infinity gets what eq. 1 gives (NaN for a NaN score). The fused kernel
    alone would not do this: it weights hidden positions by a probability of 0, and
    $0 \times \mathrm{NaN} = \mathrm{NaN}$, so a NaN at position $t$ would reach every earlier query;
    and it returns 0, not NaN, for a query whose scores are all NaN. So one sum over `k` and `v` checks
    that they are finite (the fast path); when they are not, the queries before the first non-finite
    position attend, with the kernel, over the keys before it, and the later ones are computed by
    `attention_reference`. A single query (`T == 1`, the streaming step) sees every key, so nothing
    is hidden from it and the kernel runs unchecked. `forward` then equals the `step` loop for
    non-finite inputs too: in the model a non-finite input makes its own position's residual stream
    non-finite, whatever the attention returns there.

    Args:
        q: `(batch, n_heads, T, head_dim)` queries.
        k: `(batch, n_heads, S, head_dim)` keys, `S >= T`.
        v: `(batch, n_heads, S, head_dim)` values.

    Returns:
        `(batch, n_heads, T, head_dim)` the attention output.
    """
    T, S = q.shape[-2], k.shape[-2]
    if T == 1 or bool((k.detach().sum() + v.detach().sum()).isfinite()):  # a sum is finite only if every term is
        return _sdpa(q, k, v)
    finite = k.detach().isfinite().all(-1) & v.detach().isfinite().all(-1)  # (B, nh, S)
    bad = (~finite).flatten(0, -2).any(0).nonzero()  # (n_bad, 1) positions holding a non-finite entry
    first = int(bad[0]) if bad.numel() else S  # S: the sum overflowed, every entry is finite
    n_before = min(max(first - (S - T), 0), T)  # queries that see no non-finite entry
    if n_before == T:
        return _sdpa(q, k, v)
    after = attention_reference(q[..., n_before:, :], k, v)  # (B, nh, T - n_before, hs)
    if n_before == 0:
        return after
    before = _sdpa(q[..., :n_before, :], k[..., :first, :], v[..., :first, :])  # (B, nh, n_before, hs)
    return torch.cat((before, after), dim=-2)  # (B, nh, T, hs)


def attention_reference(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    r"""Eq. 1 written out, query by query: the oracle for `causal_attention`.

    Query `i` (absolute position `p = S - T + i`) computes $\mathrm{softmax}(q_i K_{\le p}^\top/\sqrt{d})
    V_{\le p}$ over the keys it may see and nothing else: the mask $M$ of eq. 1 taken literally, so a key
    after the query is not in the sum at all (not multiplied by a zero weight), whatever it holds.

    Args:
        q: `(batch, n_heads, T, head_dim)` queries.
        k: `(batch, n_heads, S, head_dim)` keys, `S >= T`.
        v: `(batch, n_heads, S, head_dim)` values.

    Returns:
        `(batch, n_heads, T, head_dim)`, as `causal_attention`.
    """
    T, S, d = q.shape[-2], k.shape[-2], q.shape[-1]
    outputs = []
    for i in range(T):
        end = S - T + i + 1  # keys 0 .. p
        scores = q[..., i : i + 1, :] @ k[..., :end, :].transpose(-2, -1) / math.sqrt(d)  # (B, nh, 1, p+1)
        outputs.append(scores.softmax(dim=-1) @ v[..., :end, :])  # (B, nh, 1, hs)
    return torch.cat(outputs, dim=-2)  # (B, nh, T, hs)
