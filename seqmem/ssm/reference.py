r"""The selective scan as a readable PyTorch loop: the oracle the other backends are checked against.

A diagonal state-space model, discretised with step $\Delta_t$ (zero-order hold for $A$, the Euler
rule for $B$, as Mamba does), run over time for every channel $d$ and state index $n$:

$$\bar A_t = \exp(\Delta_t A), \quad \bar B_t = \Delta_t B_t, \quad
h_t = \bar A_t \odot h_{t-1} + \bar B_t \, u_t, \quad y_t = C_t \cdot h_t + D\, u_t .$$

*Selective* (S6): $\Delta_t, B_t, C_t$ depend on the input, so the system is time-varying.
*LTI* (S4D-like ablation): $\Delta, B, C$ are fixed, the system is linear and time-invariant, and the
scan equals a causal convolution with the kernel $K_k = \sum_n C_n \bar A_n^k \bar B_n$
(`lti_kernel`, `causal_conv`): the parallel form of the same model.

References:
    Gu, A. & Dao, T. (2023). Mamba: linear-time sequence modeling with selective state spaces.
    arXiv:2312.00752, eq. (2a)-(2b), (4) and Algorithm 2.
    Gu, A., Gupta, A., Goel, K. & Ré, C. (2022). On the parameterization and initialization of diagonal
    state space models (S4D). NeurIPS, eq. (4)-(5).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["causal_conv", "lti_kernel", "selective_scan", "selective_scan_step"]


def _at(param: Tensor, t: int) -> Tensor:
    """`B` or `C` at step t: `(batch, d_state)` broadcast over channels, or the LTI `(d_inner, d_state)`."""
    return param[:, t].unsqueeze(1) if param.dim() == 3 else param


def selective_scan_step(
    u_t: Tensor,
    delta_t: Tensor,
    A: Tensor,
    B_t: Tensor,
    C_t: Tensor,
    D: Tensor | None,
    h: Tensor,
) -> tuple[Tensor, Tensor]:
    """One step of the scan.

    Args:
        u_t: `(batch, d_inner)` input.
        delta_t: `(batch, d_inner)` positive step sizes.
        A: `(d_inner, d_state)` state matrix (diagonal per channel, negative real).
        B_t: `(batch, 1, d_state)` selective, or `(d_inner, d_state)` LTI.
        C_t: `(batch, 1, d_state)` selective, or `(d_inner, d_state)` LTI.
        D: `(d_inner,)` skip connection, or `None`.
        h: `(batch, d_inner, d_state)` state $h_{t-1}$.

    Returns:
        `(y_t, h_t)`: `y_t` `(batch, d_inner)` and the new state `(batch, d_inner, d_state)`.
    """
    dt = delta_t.unsqueeze(-1)  # (B, D, 1)
    h = torch.exp(dt * A) * h + dt * B_t * u_t.unsqueeze(-1)  # (B, D, N)
    y = (h * C_t).sum(-1)  # (B, D)
    if D is not None:
        y = y + D * u_t
    return y, h


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The scan over a whole sequence, one step at a time.

    Args:
        u: `(batch, seq_len, d_inner)` input.
        delta: `(batch, seq_len, d_inner)` positive step sizes (softplus already applied).
        A: `(d_inner, d_state)` state matrix, negative real entries.
        B: `(batch, seq_len, d_state)` input matrix (selective), or `(d_inner, d_state)` (LTI).
        C: `(batch, seq_len, d_state)` output matrix (selective), or `(d_inner, d_state)` (LTI).
        D: `(d_inner,)` skip connection, or `None`.
        initial_state: `(batch, d_inner, d_state)` $h_0$, zeros if `None`.

    Returns:
        `(y, h_T)`: `y` `(batch, seq_len, d_inner)` and the final state `(batch, d_inner, d_state)`.
    """
    Bsz, T, Din = u.shape
    N = A.shape[1]
    h = u.new_zeros(Bsz, Din, N) if initial_state is None else initial_state
    ys = []
    for t in range(T):
        y_t, h = selective_scan_step(u[:, t], delta[:, t], A, _at(B, t), _at(C, t), D, h)
        ys.append(y_t)
    return torch.stack(ys, dim=1), h


def lti_kernel(delta: Tensor, A: Tensor, B: Tensor, C: Tensor, seq_len: int) -> Tensor:
    r"""The convolution kernel of the LTI scan: $K_k = \sum_n C_n \exp(k \Delta A_n) \Delta B_n$.

    Args:
        delta: `(d_inner,)` positive step sizes.
        A: `(d_inner, d_state)` state matrix.
        B: `(d_inner, d_state)` input matrix.
        C: `(d_inner, d_state)` output matrix.
        seq_len: number of taps `L`.

    Returns:
        `(d_inner, seq_len)` kernel, tap `k` weighting the input `k` steps back.
    """
    k = torch.arange(seq_len, device=A.device, dtype=A.dtype)  # (L,)
    dA = delta.unsqueeze(-1) * A  # (D, N)
    powers = torch.exp(dA.unsqueeze(-1) * k)  # (D, N, L)
    return torch.einsum("dn,dnl->dl", C * delta.unsqueeze(-1) * B, powers)


def causal_conv(u: Tensor, kernel: Tensor) -> Tensor:
    """Causal depthwise convolution `y_t = sum_{k<=t} kernel[:, k] * u_{t-k}` (the LTI parallel form).

    Args:
        u: `(batch, seq_len, d_inner)`.
        kernel: `(d_inner, seq_len)` from `lti_kernel`.

    Returns:
        `(batch, seq_len, d_inner)`.
    """
    T = u.shape[1]
    y = torch.zeros_like(u)
    for k in range(T):
        y[:, k:] += kernel[:, k] * u[:, : T - k]
    return y
