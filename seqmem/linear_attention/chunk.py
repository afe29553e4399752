r"""The chunkwise form of linear attention and retention: parallel inside chunks, recurrent across them.

Split the sequence into chunks of $C$ positions, $Q_{[i]} = Q_{iC : (i+1)C}$ and so on, and let
$R_{i-1}$ be the state entering chunk $i$. Then (Sun et al. 2023, eq. 7)

$$R_i = \gamma^{C} R_{i-1} + K_{[i]}^\top (V_{[i]} \odot \zeta), \qquad \zeta_{j} = \gamma^{C - 1 - j},$$

$$O_{[i]} = \underbrace{(Q_{[i]} K_{[i]}^\top \odot D)\, V_{[i]}}_{\text{inner-chunk}}
+ \underbrace{(Q_{[i]} R_{i-1}) \odot \xi}_{\text{cross-chunk}}, \qquad \xi_{j} = \gamma^{j+1},$$

with $D$ the decay mask of one chunk. The inner-chunk products and the chunks' contributions
$K_{[i]}^\top (V_{[i]} \odot \zeta)$ are computed for all chunks at once; only the $T / C$ state updates
run one after another. Cost $O(T C (d_k + d_v) + T d_k d_v)$ per head, memory $O(T C)$: linear in $T$.
A last chunk shorter than $C$ goes through the parallel form, starting from the state the full chunks
left. The normaliser of linear attention rides along as one more value column, as in the parallel form.

References:
    Sun, Y. et al. (2023). Retentive network: a successor to transformer for large language models.
    arXiv:2307.08621, sec. 2.2 (chunkwise recurrent representation, eq. 7).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from .parallel import _decayed_parallel, _powers, _split_normaliser, _with_normaliser, decay_mask
from .reference import LinearAttentionCarry, _initial

__all__ = ["linear_attention_chunk"]


def _decayed_chunk(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor | None, S0: Tensor, C: int) -> tuple[Tensor, Tensor]:
    """Eq. 7 over the full chunks of `q, k, v` `(B, H, N*C, d)`; returns `o` `(B, H, N*C, dv)` and the state."""
    qc, kc, vc = (rearrange(t, "b h (n c) d -> b h n c d", c=C) for t in (q, k, v))  # (B, H, N, C, d)
    D = decay_mask(gamma, C, dtype=q.dtype, device=q.device)[:, None]  # (H or 1, 1, C, C)
    inner = ((qc @ kc.transpose(-1, -2)) * D) @ vc  # (B, H, N, C, dv)
    j = torch.arange(C, device=q.device)
    zeta = _powers(gamma, C - 1 - j)  # (H, C): gamma^(C-1-j)
    xi = _powers(gamma, j + 1)  # (H, C): gamma^(j+1)
    if zeta is not None:
        kc_out = kc * zeta[:, None, :, None]  # (B, H, N, C, dk)
        qc_in = qc * xi[:, None, :, None]  # (B, H, N, C, dk)
        carry = gamma[:, None, None] ** C  # (H, 1, 1): gamma^C
    else:
        kc_out, qc_in, carry = kc, qc, None
    updates = kc_out.transpose(-1, -2) @ vc  # (B, H, N, dk, dv): K^T (V . zeta) per chunk
    entering = []
    R = S0  # (B, H, dk, dv)
    for i in range(qc.shape[2]):  # T / C steps of a (dk, dv) recurrence
        entering.append(R)
        R = (R if carry is None else carry * R) + updates[:, :, i]
    cross = qc_in @ torch.stack(entering, dim=2)  # (B, H, N, C, dv)
    return rearrange(inner + cross, "b h n c d -> b h (n c) d"), R


def linear_attention_chunk(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gamma: Tensor | None = None,
    *,
    chunk_size: int = 64,
    normalize: bool = True,
    eps: float = 1e-6,
    initial_state: LinearAttentionCarry | None = None,
) -> tuple[Tensor, LinearAttentionCarry]:
    r"""Linear attention or retention over a sequence in the chunkwise form (Sun et al. 2023, eq. 7).

    Equal to `linear_attention_recurrent` and `linear_attention_parallel` with the same arguments (to
    rounding), whatever the chunk size.

    Args:
        q: `(batch, n_heads, seq_len, d_k)` queries (feature map applied).
        k: `(batch, n_heads, seq_len, d_k)` keys (feature map applied).
        v: `(batch, n_heads, seq_len, d_v)` values.
        gamma: `(n_heads,)` decay per head in `(0, 1]`, or `None` for none.
        chunk_size: positions per chunk $C$, a positive int.
        normalize: divide by $q_n^\top z_n + \varepsilon$ (linear attention); `False` for retention.
        eps: added to the normaliser.
        initial_state: `(S_0, z_0)` as `linear_attention_parallel` takes it, or `None` for zeros.

    Returns:
        `(o, (S_T, z_T))`: `o` `(batch, n_heads, seq_len, d_v)` and the state after the last position.

    Raises:
        ValueError: if `chunk_size` is not a positive int.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"linear_attention_chunk: chunk_size must be a positive int, got {chunk_size!r}")
    v_aug, S = _with_normaliser(v, _initial(q, v, normalize, initial_state))
    T = q.shape[2]
    full = T - T % chunk_size  # positions in full chunks
    outs = []
    if full:
        o, S = _decayed_chunk(q[:, :, :full], k[:, :, :full], v_aug[:, :, :full], gamma, S, chunk_size)
        outs.append(o)
    if full < T:
        o, S = _decayed_parallel(q[:, :, full:], k[:, :, full:], v_aug[:, :, full:], gamma, S)
        outs.append(o)
    o = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return _split_normaliser(o, S, normalize, eps)
