r"""Numba CPU kernels of linear attention and retention: the recurrence and its hand-derived backward pass.

The forward kernel runs, for every (sequence, head) pair in parallel, the recurrence of
`seqmem.linear_attention.reference`,

$$S_t = \gamma S_{t-1} + k_t v_t^\top, \quad z_t = \gamma z_{t-1} + k_t, \quad
o_t = S_t^\top q_t / \delta_t, \quad \delta_t = q_t^\top z_t + \varepsilon$$

($\delta_t = 1$ and no $z$ without normaliser), holding one `(d_k, d_v)` state in registers and cache,
and saves only $\delta_t$ beside the outputs: `O(B H T)` numbers, not the `O(B H T d_k d_v)` of every state.

The backward pass. With $g_t = \partial L / \partial o_t$ and the adjoints $G_t = \partial L / \partial S_t$,
$\zeta_t = \partial L / \partial z_t$ (everything that reaches $S_t$, $z_t$ from step $t$ on), the read-out
gives $\partial L / \partial \mathrm{num}_t = g_t / \delta_t =: a_t$ and
$\partial L / \partial \delta_t = -g_t^\top o_t / \delta_t =: c_t$, so

$$\frac{\partial L}{\partial q_t} = S_t a_t + c_t z_t, \qquad
G_t = \gamma G_{t+1} + q_t a_t^\top, \qquad \zeta_t = \gamma \zeta_{t+1} + c_t q_t,$$

$$\frac{\partial L}{\partial k_t} = G_t v_t + \zeta_t, \qquad \frac{\partial L}{\partial v_t} = G_t^\top k_t,
\qquad \frac{\partial L}{\partial S_0} = \gamma G_1, \qquad \frac{\partial L}{\partial z_0} = \gamma \zeta_1,$$

with $G_{T+1}, \zeta_{T+1}$ the gradients of the final state. $\partial L / \partial q_t$ needs the states
$S_t, z_t$ of the forward pass, the others the adjoints of the reverse pass, so the backward kernel runs
twice over time: forward again (recomputing $S_t$ from $S_0$, which a division by $\gamma$ could not do
stably), then backward. The decays are fixed (not trained): they get no gradient.

`linear_attention_numba` has the signature of `linear_attention_recurrent` and is differentiable
(a `torch.autograd.Function`); `linear_attention_step_numba` that of `linear_attention_step`. The kernels
are parallel over (sequence, head) pairs; their launches go through `seqmem._numba.parallel_launch`, so a
model may be called from several threads at once.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._kernels import EMPTY, KERNEL, NP_DTYPES, PKERNEL, _check_shape, _check_tensors, _like, _needs_grad, _np
from .._numba import njit, parallel_launch, prange
from .reference import LinearAttentionCarry

__all__ = ["linear_attention_numba", "linear_attention_step_numba"]


@njit(**PKERNEL)
def _scan_forward(q, k, v, gamma, S0, z0, normalize, eps, o, den, S, z):  # pragma: no cover - compiled
    """Fill `o (B, H, T, dv)`, `den (B, H, T)`, `S (B, H, dk, dv)`, `z (B, H, dk)` (unused without normaliser)."""
    B, H, T, dk = q.shape
    dv = v.shape[3]
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        g = gamma[h]
        Sb = S[b, h]
        Sb[:, :] = S0[b, h]
        if normalize:
            z[b, h, :] = z0[b, h]
        for t in range(T):
            d = _like(g, 1.0)
            if normalize:
                acc = eps
                for i in range(dk):
                    zi = g * z[b, h, i] + k[b, h, t, i]
                    z[b, h, i] = zi
                    acc += q[b, h, t, i] * zi
                d = acc
            den[b, h, t] = d
            for j in range(dv):
                o[b, h, t, j] = _like(g, 0.0)
            for i in range(dk):
                ki, qi = k[b, h, t, i], q[b, h, t, i]
                for j in range(dv):
                    s = g * Sb[i, j] + ki * v[b, h, t, j]
                    Sb[i, j] = s
                    o[b, h, t, j] += qi * s
            for j in range(dv):
                o[b, h, t, j] /= d


@njit(**KERNEL)
def _readout_adjoint(go_t, o_t, d, a):  # pragma: no cover - compiled
    """For `o_t = num_t / d`: fills `a = dL/dnum_t = go_t / d` `(dv,)` and returns `c = dL/dd = -go_t . o_t / d`."""
    c = _like(d, 0.0)
    for j in range(a.shape[0]):
        a[j] = go_t[j] / d
        c -= go_t[j] * o_t[j]
    return c / d


@njit(**PKERNEL)
def _scan_backward(q, k, v, gamma, S0, z0, normalize, o, den, go, gS, gz, dq, dk_, dv_, dS0, dz0
                   ):  # pragma: no cover - compiled
    """Gradients of `_scan_forward` (see the module's equations): fills `dq, dk_, dv_, dS0, dz0`."""
    B, H, T, dk = q.shape
    dv = v.shape[3]
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        g = gamma[h]
        zero = _like(g, 0.0)
        S = S0[b, h].copy()  # (dk, dv)
        zs = np.zeros(dk, dtype=S.dtype)
        a = np.empty(dv, dtype=S.dtype)
        if normalize:
            zs[:] = z0[b, h]
        # pass 1, forward in time: the states S_t, z_t, and dL/dq_t = S_t a_t + c_t z_t
        for t in range(T):
            c = _readout_adjoint(go[b, h, t], o[b, h, t], den[b, h, t], a)
            for i in range(dk):
                ki = k[b, h, t, i]
                acc = zero
                for j in range(dv):
                    s = g * S[i, j] + ki * v[b, h, t, j]
                    S[i, j] = s
                    acc += s * a[j]
                if normalize:
                    zs[i] = g * zs[i] + ki
                    acc += c * zs[i]
                dq[b, h, t, i] = acc
        # pass 2, backward in time: the adjoints G_t, zeta_t, and dL/dk_t, dL/dv_t
        G = gS[b, h].copy()  # (dk, dv)
        Z = np.zeros(dk, dtype=S.dtype)
        if normalize:
            Z[:] = gz[b, h]
        for t in range(T - 1, -1, -1):
            c = _readout_adjoint(go[b, h, t], o[b, h, t], den[b, h, t], a)
            for j in range(dv):
                dv_[b, h, t, j] = zero
            for i in range(dk):
                qi, ki = q[b, h, t, i], k[b, h, t, i]
                acc = zero
                for j in range(dv):
                    Gij = G[i, j] + qi * a[j]
                    G[i, j] = Gij
                    acc += Gij * v[b, h, t, j]
                    dv_[b, h, t, j] += Gij * ki
                if normalize:
                    Z[i] += c * qi
                    acc += Z[i]
                dk_[b, h, t, i] = acc
            for i in range(dk):
                for j in range(dv):
                    G[i, j] *= g
                Z[i] *= g
        dS0[b, h] = G
        if normalize:
            dz0[b, h] = Z


def _run_forward(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, S0: Tensor, z0: Tensor, normalize: bool,
                 eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`_scan_forward` on tensors: `(o, S_T, z_T, den)` (`z_T` `(B, H, 0)` without normaliser)."""
    B, H, T, dk = q.shape
    dv = v.shape[3]
    np_dtype = NP_DTYPES[q.dtype]
    z0n = _np(z0) if normalize else EMPTY[q.dtype].reshape(1, 1, 0)
    o = np.empty((B, H, T, dv), np_dtype)
    den = np.empty((B, H, T), np_dtype)
    S = np.empty((B, H, dk, dv), np_dtype)
    z = np.zeros((B, H, dk if normalize else 0), np_dtype)
    with parallel_launch():  # numba's workqueue layer aborts on two concurrent parallel launches
        _scan_forward(_np(q), _np(k), _np(v), _np(gamma), _np(S0), z0n, normalize, np_dtype(eps), o, den, S, z)
    return torch.from_numpy(o), torch.from_numpy(S), torch.from_numpy(z), torch.from_numpy(den)


class _LinearAttentionScan(torch.autograd.Function):
    """The numba scan with its hand-derived backward (see the module's docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, gamma, S0, z0, normalize, eps):  # type: ignore[override]
        o, S, z, den = _run_forward(q, k, v, gamma, S0, z0, normalize, eps)
        ctx.save_for_backward(q, k, v, gamma, S0, z0, o, den)
        ctx.normalize = normalize
        ctx.mark_non_differentiable(den)
        return o, S, z, den

    @staticmethod
    def backward(ctx, go, gS, gz, _gden):  # type: ignore[override]
        q, k, v, gamma, S0, z0, o, den = ctx.saved_tensors
        normalize = ctx.normalize
        B, H, T, dk = q.shape
        np_dtype = NP_DTYPES[q.dtype]
        dq, dk_ = np.empty(q.shape, np_dtype), np.empty(k.shape, np_dtype)
        dv_ = np.empty(v.shape, np_dtype)
        dS0 = np.empty(S0.shape, np_dtype)
        dz0 = np.zeros((B, H, dk if normalize else 0), np_dtype)
        zeros_z = EMPTY[q.dtype].reshape(1, 1, 0)
        args = (_np(q), _np(k), _np(v), _np(gamma), _np(S0), _np(z0) if normalize else zeros_z, normalize, _np(o),
                _np(den), _np(go), _np(gS), _np(gz) if normalize else zeros_z)
        with parallel_launch():
            _scan_backward(*args, dq, dk_, dv_, dS0, dz0)
        grads = [torch.from_numpy(t) for t in (dq, dk_, dv_, dS0, dz0)]
        return *grads[:3], None, grads[3], (grads[4] if normalize else None), None, None


def _check(where: str, q: Tensor, k: Tensor, v: Tensor, gamma: Tensor | None, S0: Tensor, z0: Tensor | None) -> None:
    _check_tensors(where, {"q": q, "k": k, "v": v, "gamma": gamma, "S0": S0, "z0": z0}, "q")
    if q.dim() != 4:
        raise ValueError(f"{where}: q must have shape (batch, n_heads, seq_len, d_k), got {tuple(q.shape)}")
    B, H, T, dk = q.shape
    if v.dim() != 4:
        raise ValueError(f"{where}: v must have shape (batch, n_heads, seq_len, d_v), got {tuple(v.shape)}")
    dv = v.shape[3]
    _check_shape(where, "k", k, (B, H, T, dk), "(batch, n_heads, seq_len, d_k)")
    _check_shape(where, "v", v, (B, H, T, dv), "(batch, n_heads, seq_len, d_v)")
    _check_shape(where, "gamma", gamma, (H,), "(n_heads,)")
    _check_shape(where, "S", S0, (B, H, dk, dv), "(batch, n_heads, d_k, d_v)")
    _check_shape(where, "z", z0, (B, H, dk), "(batch, n_heads, d_k)")


def linear_attention_numba(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gamma: Tensor | None = None,
    *,
    normalize: bool = True,
    eps: float = 1e-6,
    initial_state: LinearAttentionCarry | None = None,
) -> tuple[Tensor, LinearAttentionCarry]:
    r"""The recurrence of `linear_attention_recurrent` as a Numba kernel, differentiable.

    Args:
        q: `(batch, n_heads, seq_len, d_k)` queries (feature map applied), float32 or float64, on the CPU.
        k: `(batch, n_heads, seq_len, d_k)` keys (feature map applied).
        v: `(batch, n_heads, seq_len, d_v)` values.
        gamma: `(n_heads,)` decay per head in `(0, 1]`, or `None` for none. Gets no gradient.
        normalize: divide by $q_t^\top z_t + \varepsilon$ (linear attention); `False` for retention.
        eps: added to the normaliser.
        initial_state: `(S_0, z_0)` (`z_0` `None` without normaliser), or `None` for zeros.

    Returns:
        `(o, (S_T, z_T))` as `linear_attention_recurrent`.

    Raises:
        TypeError: for a non-tensor, a dtype other than float32/float64, or mixed dtypes.
        ValueError: for a tensor off the CPU or of the wrong shape.
    """
    B, H, T, dk = q.shape
    if initial_state is None:
        S0 = q.new_zeros(B, H, dk, v.shape[-1])
        z0 = q.new_zeros(B, H, dk) if normalize else None
    else:
        S0, z0 = initial_state[0], (initial_state[1] if normalize else None)
    _check("linear_attention_numba", q, k, v, gamma, S0, z0)
    gamma = q.new_ones(H) if gamma is None else gamma
    z_arg = z0 if normalize else q.new_zeros(0)
    if _needs_grad(q, k, v, S0, z0):
        o, S, z, _ = _LinearAttentionScan.apply(q, k, v, gamma, S0, z_arg, normalize, float(eps))
    else:
        o, S, z, _ = _run_forward(q, k, v, gamma, S0, z_arg, normalize, float(eps))
    return o, (S, z if normalize else None)


def linear_attention_step_numba(
    q_t: Tensor,
    k_t: Tensor,
    v_t: Tensor,
    state: LinearAttentionCarry,
    gamma: Tensor | None = None,
    *,
    eps: float = 1e-6,
) -> tuple[Tensor, LinearAttentionCarry]:
    """One step of `linear_attention_numba`, with the signature of `linear_attention_step`.

    Args:
        q_t: `(batch, n_heads, d_k)` query (feature map applied).
        k_t: `(batch, n_heads, d_k)` key (feature map applied).
        v_t: `(batch, n_heads, d_v)` value.
        state: `(S, z)`, `z` `None` for no normaliser.
        gamma: `(n_heads,)` decays, or `None`.
        eps: added to the normaliser.

    Returns:
        `(o_t, (S_t, z_t))`: `o_t` `(batch, n_heads, d_v)` and the new state.
    """
    o, state = linear_attention_numba(
        q_t.unsqueeze(2), k_t.unsqueeze(2), v_t.unsqueeze(2), gamma, normalize=state[1] is not None, eps=eps,
        initial_state=state,
    )
    return o[:, :, 0], state
