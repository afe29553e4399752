r"""The parallel forms: the RG-LRU as an associative scan, local attention as banded blocks.

**The scan.** With $a_t$ and $b_t = \sqrt{1 - a_t^2}\, i_t x_t$ computed for every step at once (they do
not depend on the state: the paper's point, sec. 2.4), eq. (4) is the diagonal linear recurrence
$h_t = a_t h_{t-1} + b_t$. The pairs $(a, b)$ compose associatively,
$(a_1, b_1) \bullet (a_2, b_2) = (a_1 a_2,\ a_2 b_1 + b_2)$, so all prefixes follow from
$\lceil \log_2 T \rceil$ rounds of the doubling scan (Hillis & Steele 1986; Blelloch 1990): round $k$ combines
every position $t$ with position $t - 2^k$. Each round is a few elementwise operations over the whole
`(batch, seq_len, d_rnn)` tensor: $O(T \log T)$ work in $O(\log T)$ dependent steps instead of $T$. The
initial state enters as $b_1 \leftarrow a_1 h_0 + b_1$. Only products of decays in $(0, 1]$ and sums are
formed, never the quotients of a closed form $h_t = A_t (h_0 + \sum_s b_s / A_s)$, which overflow once
$A_t = \prod a$ underflows.

**Local attention.** Query $t$ sees the keys $t - w \le s \le t$ ($w$ = `window`). Cutting the queries into
blocks of $P$ positions, block $j$ needs only the $P + w$ keys that end at its last query, so the
scores are `(blocks, P, P + w)` instead of `(T, T)`: $O(T (P + w))$ time and memory, linear in the
sequence length (Beltagy et al. 2020, sec. 3.1).

References:
    De, S. et al. (2024). Griffin. arXiv:2402.19427, sec. 2.2 (local attention), 2.4 and eq. (4),
    sec. 4.2 (a linear scan on device).
    Blelloch, G. E. (1990). Prefix sums and their applications. CMU-CS-90-190.
    Hillis, W. D. & Steele, G. L. (1986). Data parallel algorithms. CACM 29(12).
    Beltagy, I., Peters, M. E. & Cohan, A. (2020). Longformer: the long-document transformer.
    arXiv:2004.05150.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .reference import C_DEFAULT, rglru_gates

__all__ = ["linear_scan", "local_attention", "rglru_scan"]

_MIN_BLOCK = 16
"""Smallest query block of `local_attention` (tiny windows would otherwise give many tiny matmuls)."""


def linear_scan(a: Tensor, b: Tensor, initial_state: Tensor | None = None) -> Tensor:
    """All states of `h_t = a_t h_{t-1} + b_t` by the doubling scan (module docstring).

    Args:
        a: `(batch, seq_len, d)` decays.
        b: `(batch, seq_len, d)` inputs.
        initial_state: `(batch, d)` $h_0$, zeros if `None`.

    Returns:
        `(batch, seq_len, d)`: $h_1 .. h_T$.
    """
    T = a.shape[1]
    if initial_state is not None:
        b = torch.cat([(a[:, :1] * initial_state[:, None] + b[:, :1]), b[:, 1:]], dim=1)  # fold h_0 into b_1
    shift = 1
    while shift < T:
        # position t absorbs the prefix that ends at t - shift: (a', b') <- (a a'', a b'' + b)
        b = torch.cat([b[:, :shift], torch.addcmul(b[:, shift:], a[:, shift:], b[:, :-shift])], dim=1)
        if 2 * shift < T:  # the decays of the last round are not needed
            a = torch.cat([a[:, :shift], a[:, shift:] * a[:, :-shift]], dim=1)
        shift *= 2
    return b


def rglru_scan(
    x: Tensor,
    gate_a: Tensor,
    gate_x: Tensor,
    Lambda: Tensor,
    c: float = C_DEFAULT,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The RG-LRU over a whole sequence in parallel: gates for every step at once, then `linear_scan`.

    Same arguments and result as `seqmem.griffin.reference.rglru`.

    Args:
        x: `(batch, seq_len, d_rnn)` input.
        gate_a: `(batch, seq_len, d_rnn)` recurrence-gate pre-activations $W_a x_t + b_a$.
        gate_x: `(batch, seq_len, d_rnn)` input-gate pre-activations $W_x x_t + b_x$.
        Lambda: `(d_rnn,)` the recurrence parameter.
        c: the constant of eq. (3).
        initial_state: `(batch, d_rnn)` $h_0$, zeros if `None`.

    Returns:
        `(y, h_T)`: `y` `(batch, seq_len, d_rnn)` and the final state `(batch, d_rnn)`.
    """
    a_t, b_t = rglru_gates(x, gate_a, gate_x, Lambda, c)  # (B, T, D) each
    y = linear_scan(a_t, b_t, initial_state)
    return y, y[:, -1]


def local_attention(q: Tensor, k: Tensor, v: Tensor, window: int, n_cached: Tensor) -> Tensor:
    r"""Sliding-window multi-query attention in banded blocks; equals `reference.local_attention_reference`.

    The `T` queries are the last `T` of the `S = C + T` key positions, `C = window` cached ones first, of
    which the last `n_cached[b]` hold keys in row `b`. Query `t` (key position `C + t`) sees the keys
    `t .. C + t`, those of block `j` (queries `jP .. jP + P - 1`) lie in `jP .. jP + P - 1 + C`.

    Args:
        q: `(batch, n_heads, T, head_dim)` queries (rotary positions applied).
        k: `(batch, C + T, head_dim)` keys of the one key/value head (rotary positions applied).
        v: `(batch, C + T, head_dim)` values.
        window: how many positions before its own each query sees; `C = window`.
        n_cached: `(batch,)` how many of the `C` cached slots hold keys.

    Returns:
        `(batch, n_heads, T, head_dim)`.
    """
    B, H, T, d = q.shape
    C = window
    P = min(T, max(window, _MIN_BLOCK))  # queries per block
    n_blocks = -(-T // P)
    pad = n_blocks * P - T
    q = F.pad(q, (0, 0, 0, pad))  # (B, H, nP, d): padded queries are dropped at the end
    k = F.pad(k, (0, 0, 0, pad))  # (B, C + nP, d): padded keys lie after every real query's window
    v = F.pad(v, (0, 0, 0, pad))
    qb = rearrange(q * (1.0 / math.sqrt(d)), "b h (n p) d -> b h n p d", p=P)  # (B, H, n, P, d), scaled
    kb = k.unfold(1, P + C, P)  # (B, n, d, P + C): the keys of each block
    vb = v.unfold(1, P + C, P)  # (B, n, d, P + C)
    scores = torch.einsum("bhnpd,bndk->bhnpk", qb, kb)  # (B, H, n, P, P + C)
    p = torch.arange(P, device=q.device)[:, None]  # (P, 1) query in its block
    kk = torch.arange(P + C, device=q.device)[None, :]  # (1, P + C) key in its block
    band = (kk >= p) & (kk <= p + C)  # (P, P + C): key position in [query - window, query]
    first = torch.arange(n_blocks, device=q.device) * P  # (n,) key position of each block's first key
    held = (first[None, :, None] + kk[None]) >= (C - n_cached.to(torch.long))[:, None, None]  # (B, n, P + C)
    mask = band[None, None] & held[:, :, None]  # (B, n, P, P + C)
    scores = scores.masked_fill(~mask[:, None], float("-inf"))
    out = torch.einsum("bhnpk,bndk->bhnpd", scores.softmax(dim=-1), vb)  # (B, H, n, P, d)
    return rearrange(out, "b h n p d -> b h (n p) d")[:, :, :T]
