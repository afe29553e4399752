r"""Linear attention and retention as a readable recurrent loop: the oracle the other forms are checked against.

Causal attention with a similarity that factorises, $\mathrm{sim}(q, k) = \phi(q)^\top \phi(k)$, needs no
attention matrix: the sums over the past that it divides are running sums, a recurrence with a matrix
state (Katharopoulos et al. 2020, sec. 3.3-3.4). With the feature map already applied to the queries
and keys ($q_t = \phi(\cdot)$, $k_t = \phi(\cdot)$), and an optional per-head decay $\gamma \in (0, 1]$
(retention, Sun et al. 2023, eq. 1 and 6), each head runs

$$S_t = \gamma\, S_{t-1} + k_t v_t^\top, \qquad z_t = \gamma\, z_{t-1} + k_t,$$

$$o_t = \frac{S_t^\top q_t}{q_t^\top z_t + \varepsilon} \quad\text{(normalised linear attention)}, \qquad
o_t = S_t^\top q_t \quad\text{(retention: no normaliser)}.$$

$S_t$ is `(d_k, d_v)`, $z_t$ is `(d_k,)`. Without decay ($\gamma = 1$) this is exactly the causal linear
attention of Katharopoulos et al. (2020), eq. 9 written as the RNN of sec. 3.4 (eqs. 16-20).

Every function here takes the heads on their own axis: `q, k` `(batch, n_heads, seq_len, d_k)`,
`v` `(batch, n_heads, seq_len, d_v)`, and the state as a pair `(S, z)` with `z = None` when there is no
normaliser. The parallel form (`seqmem.linear_attention.parallel`) and the chunkwise form
(`seqmem.linear_attention.chunk`) take the same arguments and return the same thing.

References:
    Katharopoulos, A., Vyas, A., Pappas, N. & Fleuret, F. (2020). Transformers are RNNs: fast
    autoregressive transformers with linear attention. ICML, sec. 3.2 (eq. 7, the feature map
    elu(x) + 1), sec. 3.3 (causal masking) and sec. 3.4 (the RNN form, eqs. 16-20).
    Sun, Y. et al. (2023). Retentive network: a successor to transformer for large language models.
    arXiv:2307.08621, sec. 2.1 (eq. 1 and the recurrent form, eq. 6).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["elu_feature_map", "linear_attention_recurrent", "linear_attention_step"]

LinearAttentionCarry = tuple[Tensor, Tensor | None]
"""The state of one layer's heads: `(S (batch, n_heads, d_k, d_v), z (batch, n_heads, d_k) or None)`."""


def elu_feature_map(x: Tensor) -> Tensor:
    r"""The feature map $\phi(x) = \mathrm{elu}(x) + 1$ (Katharopoulos et al. 2020, eq. 7): positive, so
    the normaliser $\phi(q)^\top z$ of linear attention never vanishes, and the identity's slope for $x > 0$.

    Computed as $e^x$ for $x \le 0$ and $x + 1$ above, not as `elu(x) + 1`: $(e^x - 1) + 1$ cancels, and in
    float32 it is exactly 0 from $x \approx -17$ on, where $e^x$ stays positive down to $x \approx -103$.

    Args:
        x: any tensor (queries or keys).

    Returns:
        A tensor shaped like `x`, every entry in $[0, \infty)$ (0 only where $e^x$ underflows).
    """
    return torch.where(x > 0, x + 1.0, torch.exp(x.clamp(max=0.0)))  # the clamp keeps exp finite in the unused branch


def linear_attention_step(
    q_t: Tensor,
    k_t: Tensor,
    v_t: Tensor,
    state: LinearAttentionCarry,
    gamma: Tensor | None = None,
    *,
    eps: float = 1e-6,
) -> tuple[Tensor, LinearAttentionCarry]:
    r"""One step of the recurrence: $S_t = \gamma S_{t-1} + k_t v_t^\top$, then the read-out.

    Args:
        q_t: `(batch, n_heads, d_k)` query $q_t$ (feature map applied).
        k_t: `(batch, n_heads, d_k)` key $k_t$ (feature map applied).
        v_t: `(batch, n_heads, d_v)` value $v_t$.
        state: `(S, z)`: `S` `(batch, n_heads, d_k, d_v)` and `z` `(batch, n_heads, d_k)`, or `z = None`
            for no normaliser (retention).
        gamma: `(n_heads,)` decay per head in `(0, 1]`, or `None` for none ($\gamma = 1$).
        eps: added to the normaliser $q_t^\top z_t$ (ignored without one).

    Returns:
        `(o_t, (S_t, z_t))`: `o_t` `(batch, n_heads, d_v)` and the new state.
    """
    S, z = state
    if gamma is not None:
        S = gamma[:, None, None] * S  # (B, H, dk, dv)
        z = None if z is None else gamma[:, None] * z  # (B, H, dk)
    S = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # (B, H, dk, dv): + k_t v_t^T
    o_t = torch.einsum("bhk,bhkv->bhv", q_t, S)  # (B, H, dv): S_t^T q_t
    if z is not None:
        z = z + k_t  # (B, H, dk)
        o_t = o_t / ((q_t * z).sum(-1, keepdim=True) + eps)  # (B, H, dv)
    return o_t, (S, z)


def linear_attention_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gamma: Tensor | None = None,
    *,
    normalize: bool = True,
    eps: float = 1e-6,
    initial_state: LinearAttentionCarry | None = None,
) -> tuple[Tensor, LinearAttentionCarry]:
    r"""The recurrence over a whole sequence, one step at a time.

    Args:
        q: `(batch, n_heads, seq_len, d_k)` queries (feature map applied).
        k: `(batch, n_heads, seq_len, d_k)` keys (feature map applied).
        v: `(batch, n_heads, seq_len, d_v)` values.
        gamma: `(n_heads,)` decay per head in `(0, 1]`, or `None` for none.
        normalize: divide by $q_t^\top z_t + \varepsilon$ (linear attention); `False` for retention.
        eps: added to the normaliser.
        initial_state: `(S_0, z_0)` as `linear_attention_step` takes it (`z_0` `None` without
            normaliser), or `None` for zeros.

    Returns:
        `(o, (S_T, z_T))`: `o` `(batch, n_heads, seq_len, d_v)` and the state after the last step.
    """
    state = _initial(q, v, normalize, initial_state)
    outs = []
    for t in range(q.shape[2]):
        o_t, state = linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], state, gamma, eps=eps)
        outs.append(o_t)
    return torch.stack(outs, dim=2), state


def _initial(q: Tensor, v: Tensor, normalize: bool, state: LinearAttentionCarry | None) -> LinearAttentionCarry:
    """Zeros of the right shapes when `state` is `None`; else `state`, with `z` dropped without normaliser."""
    B, H, _, dk = q.shape
    if state is None:
        S = q.new_zeros(B, H, dk, v.shape[-1])
        return S, (q.new_zeros(B, H, dk) if normalize else None)
    S, z = state
    return S, (z if normalize else None)
