r"""The Mamba block's fused streaming kernel: one compiled call per token for a whole stack of blocks.

Per block and token (Gu & Dao 2023, Fig. 3 and Algorithm 2), parameters read where they are stored:

    [x_in, z] = in_proj x                                   (B, 2 d_inner), one BLAS product
    u         = silu(conv1d([conv state, x_in]))            causal depthwise convolution, width d_conv
    selective:  [delta_r, B_t, C_t] = x_proj u,   delta = softplus(dt_proj delta_r)
    LTI:        delta = softplus(dt_bias),  B, C parameters
    h'        = exp(delta A) h + (delta B) u,   A = -exp(A_log)         (d_inner, d_state) per sequence
    y         = out_proj((C . h' + D u) * silu(z))

The convolution state rolls by one input, the SSM state is updated at the same index it is read, so
the new state may overwrite the old one.

References:
    Gu, A. & Dao, T. (2023). Mamba: linear-time sequence modeling with selective state spaces.
    arXiv:2312.00752, eq. (2a)-(2b), Algorithm 2, Fig. 3.
"""

from __future__ import annotations

import numpy as np

from .._kernels import KERNEL, _exp, _like, _sigmoid, _softplus
from .._numba import njit
from .._stream_kernels import affine, run_stack, view
from .._stream_table import LayerKernel
from ..protocol import SSMState

__all__ = ["ssm_layer_kernel", "ssm_stack"]


@njit(**KERNEL)
def _scan_update(A_log, delta, u, Bm, h, ea):  # pragma: no cover - compiled
    """`h[d, n] = exp(delta[d] A[d, n]) h[d, n] + (delta[d] B[d, n]) u[d]` in place, `A = -exp(A_log)`;
    `Bm` is `(d_inner, N)` (LTI) or `(1, N)`, shared by the channels (selective). `ea` is `(N,)` scratch.

    One array read and written at the same index, and a few more read: LLVM vectorises the loops
    over `N` (a state read from one buffer and written to another that may be the same would not)."""
    Din, N = h.shape
    shared = Bm.shape[0] == 1
    for d in range(Din):
        dl = delta[d]
        ud = u[d]
        al = A_log[d]
        hd = h[d]
        bd = Bm[0] if shared else Bm[d]
        for n in range(N):
            ea[n] = _exp(dl * -_exp(al[n]))
        for n in range(N):
            hd[n] = ea[n] * hd[n] + (dl * bd[n]) * ud


@njit(**KERNEL)
def _silu(v):  # pragma: no cover - compiled
    """`v = v * sigmoid(v)` in place."""
    for j in range(v.shape[0]):
        v[j] = v[j] * _sigmoid(v[j])


@njit(**KERNEL)
def _skip_and_gate(y, Dv, u, z):  # pragma: no cover - compiled
    """`y = (y + D u) * silu(z)` in place: the skip connection and the gate of the block."""
    for d in range(y.shape[0]):
        y[d] = (y[d] + Dv[d] * u[d]) * (z[d] * _sigmoid(z[d]))


@njit(**KERNEL)
def ssm_layer(tab, f, x, y, work):  # pragma: no cover - compiled
    """One Mamba block (or its LTI ablation) for one token: `x (B, d_model)` -> `y (B, d_model)`.

    Record fields from `f`: `d_inner, d_state, d_conv, dt_rank, selective`, then the addresses of
    `in_proj.weight, in_proj.bias, conv1d.weight, conv1d.bias, x_proj.weight, dt_proj.weight,
    dt_proj.bias, dt_bias, B, C, A_log, D, out_proj.weight, out_proj.bias` (0: absent), the state
    `conv, ssm` read and `conv, ssm` written.
    """
    Din, N, K, R, selective = tab[f], tab[f + 1], tab[f + 2], tab[f + 3], tab[f + 4]
    p = f + 5
    s = p + 14
    B = x.shape[0]
    dt = x.dtype
    o = 0
    xz = work[o : o + B * 2 * Din].reshape((B, 2 * Din))
    o += B * 2 * Din
    u = work[o : o + B * Din].reshape((B, Din))
    o += B * Din
    dbc = work[o : o + B * (R + 2 * N)].reshape((B, R + 2 * N))
    o += B * (R + 2 * N)
    dtr = work[o : o + B * R].reshape((B, R))
    o += B * R
    delta = work[o : o + B * Din].reshape((B, Din))
    o += B * Din
    yv = work[o : o + B * Din].reshape((B, Din))
    o += B * Din
    ea = work[o : o + N]
    bt = work[o + N : o + 2 * N].reshape((1, N))
    ct = work[o + 2 * N : o + 3 * N]
    affine(x, tab[p], tab[p + 1], xz)
    # causal depthwise convolution over [conv state, x_in], then SiLU; the state rolls by one
    cw = view(tab[p + 2], (Din, K), dt)  # conv1d.weight (Din, 1, K)
    has_cb = tab[p + 3] != 0
    cb = view(tab[p + 3] if has_cb else tab[p + 2], (Din,), dt)
    conv_in = view(tab[s], (B, Din, K - 1), dt)
    conv_out = view(tab[s + 2], (B, Din, K - 1), dt)
    for b in range(B):
        xb = xz[b]
        ub = u[b]
        for d in range(Din):
            cd = conv_in[b, d]
            od = conv_out[b, d]
            acc = _like(xb[d], 0.0)
            for k in range(K - 1):
                acc += cd[k] * cw[d, k]
            acc += xb[d] * cw[d, K - 1]
            for k in range(K - 2):  # roll by one (reads ahead of the writes: in place is safe)
                od[k] = cd[k + 1]
            if K > 1:
                od[K - 2] = xb[d]
            ub[d] = acc + cb[d] if has_cb else acc
        _silu(ub)
    # the step sizes and the input/output matrices of this token
    if selective != 0:
        affine(u, tab[p + 4], 0, dbc)
        for b in range(B):
            dtr[b] = dbc[b, :R]
        affine(dtr, tab[p + 5], tab[p + 6], delta)
        for b in range(B):
            db = delta[b]
            for d in range(Din):
                db[d] = _softplus(db[d])
    else:
        dt_bias = view(tab[p + 7], (Din,), dt)
        for b in range(B):
            db = delta[b]
            for d in range(Din):
                db[d] = _softplus(dt_bias[d])
    # the selective scan's step (in place in the new state), C h, the skip connection and the gate
    A_log = view(tab[p + 10], (Din, N), dt)
    Dv = view(tab[p + 11], (Din,), dt)
    h_in = view(tab[s + 1], (B, Din, N), dt)
    h_out = view(tab[s + 3], (B, Din, N), dt)
    for b in range(B):
        h = h_out[b]
        if tab[s + 1] != tab[s + 3]:
            h[:] = h_in[b]
        if selective != 0:
            bt[0] = dbc[b, R : R + N]
            ct[:] = dbc[b, R + N :]
            _scan_update(A_log, delta[b], u[b], bt, h, ea)
            np.dot(h, ct, yv[b])  # (d_inner, N) @ (N,): C_t . h per channel
        else:
            Bm = view(tab[p + 8], (Din, N), dt)
            Cm = view(tab[p + 9], (Din, N), dt)
            _scan_update(A_log, delta[b], u[b], Bm, h, ea)
            yb = yv[b]
            for d in range(Din):
                hd = h[d]
                cd = Cm[d]
                acc = _like(hd[0], 0.0)
                for n in range(N):
                    acc += hd[n] * cd[n]
                yb[d] = acc
        _skip_and_gate(yv[b], Dv, u[b], xz[b, Din:])
    affine(yv, tab[p + 12], tab[p + 13], y)


@njit(**KERNEL)
def ssm_stack(tab, buf, x_addr, T, y_addr):  # pragma: no cover - compiled
    """`T` tokens through the stack in `tab`: `run_stack` with `ssm_layer`; returns a status."""
    return run_stack(tab, buf, x_addr, T, y_addr, ssm_layer)


def ssm_layer_kernel(model: object) -> LayerKernel:
    """Describe a `SelectiveSSM` (its live parameters) to the streaming runtime.

    Args:
        model: the `SelectiveSSM`.

    Returns:
        The `LayerKernel`: state `SSMState(conv, ssm)`, `(batch, d_inner, d_conv - 1)` and
        `(batch, d_inner, d_state)`.
    """
    m = model
    Din, N, K, R = m.d_inner, m.d_state, m.d_conv, m.dt_rank
    sel = m.selective
    params = (
        m.in_proj.weight, m.in_proj.bias, m.conv1d.weight, m.conv1d.bias,
        m.x_proj.weight if sel else None, m.dt_proj.weight if sel else None, m.dt_proj.bias if sel else None,
        None if sel else m.dt_bias, None if sel else m.B, None if sel else m.C,
        m.A_log, m.D, m.out_proj.weight, m.out_proj.bias,
    )  # fmt: skip
    return LayerKernel(
        "ssm", ssm_stack, params, (Din, N, K, R, int(sel)), m.d_model, m.d_model,
        ((Din, K - 1), (Din, N)), SSMState, 6 * Din + 2 * R + 2 * N, 3 * N, False,
    )  # fmt: skip
