r"""The GRU on the CPU with Numba: forward scan, streaming step and a hand-derived BPTT backward.

Gates in `torch.nn` order `r, z, n`. The input projection of every step,
`gx = x W_ih^T + b_ih = [gx_r, gx_z, gx_n]` `(B, T, 3H)`, is one large torch matrix product before
the time loop (differentiated by torch's autograd); the kernels run the recurrence from `gx`,
`h_0`, `W_hh = [W_hr; W_hz; W_hn]` and `b_hh = [b_hr, b_hz, b_hn]` (row vectors, `h W^T` products):

    r_t = sigma(gx_r + h_{t-1} W_hr^T + b_hr)
    z_t = sigma(gx_z + h_{t-1} W_hz^T + b_hz)
    q_t = h_{t-1} W_hn^T + b_hn,      n_t = tanh(gx_n + r_t * q_t)           (reset_after=True)
    q_t = r_t * h_{t-1},              n_t = tanh(gx_n + q_t W_hn^T + b_hn)   (reset_after=False)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1},      y_t = h_t

Backward (BPTT, Werbos 1990). With `g_t = dL/dh_t` the total gradient reaching `h_t` (from `y_t`
and from step t+1; `g_T = dL/dy_T + dL/dh_T`), going from t = T down to 1, with `a^r, a^z, a^n`
the gates' pre-activations (`sigma' = s (1 - s)`, `tanh' = 1 - n^2`):

    da^z = g_t * (h_{t-1} - n_t) * z_t (1 - z_t)
    da^n = g_t * (1 - z_t) * (1 - n_t^2)
    reset_after=True:
        da^r = da^n * q_t * r_t (1 - r_t)
        e_t  = [da^r, da^z, da^n * r_t]              (dL/d(h_{t-1} W_hh^T + b_hh))
        g_{t-1} = dL/dy_{t-1} + g_t * z_t + e_t W_hh
    reset_after=False:
        p_t  = da^n W_hn                             (dL/dq_t, q_t = r_t * h_{t-1})
        da^r = p_t * h_{t-1} * r_t (1 - r_t)
        g_{t-1} = dL/dy_{t-1} + g_t * z_t + p_t * r_t + [da^r, da^z] [W_hr; W_hz]

and then, outside the time loop, as large matrix products (`e_t = [da^r, da^z, da^n]` when
reset_after=False; the `n` block's input is `u_t = h_{t-1}` after, `u_t = q_t` before):

    dL/dgx_t = [da^r, da^z, da^n]
    dL/dW_h{r,z} = sum_t da^{r,z}_t^T h_{t-1},    dL/dW_hn = sum_t e^n_t^T u_t,    dL/db_hh = sum_t e_t

(torch's autograd carries `dL/dgx` on to `x`, `W_ih` and `b_ih`; `dL/dh_0 = g_0`). The forward
pass saves `r_t, z_t, n_t, q_t` (and `h_t` is the output), all that the backward pass needs.

Implementation notes (as in `seqmem.rnn.numba_scan`): kernels compiled once per dtype, trusting
their inputs; one BLAS product per step for the whole batch (serial kernels: no `prange`); gate
loops that vectorize, with the kernel toolkit's sigmoid and `tanh` (`seqmem._kernels`: arithmetic
only, saturating exactly, never NaN for finite input) and IEEE division; `saved` holds the four gate
blocks side by side, each written through its own row view.

References:
    Cho, K. et al. (2014). Learning phrase representations using RNN encoder-decoder for statistical
    machine translation. EMNLP, eq. (5)-(8).
    Werbos, P. J. (1990). Backpropagation through time: what it does and how to do it.
    Proceedings of the IEEE 78(10).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._kernels import EMPTY, KERNEL, _check_recurrent_args, _needs_grad, _np, _sigmoid, _tanh
from .._numba import njit
from ..rnn.numba_scan import _params

__all__ = ["gru_scan_numba", "gru_step_numba"]


# ====================================================================== kernels
# In the loops over hidden units every stream (a gate's block of `gx`, of `saved`, ...) goes
# through its own 1-D view, sliced outside the loop: LLVM then vectorizes the loop; with several
# offsets of one array indexed inside it (`a[j]`, `a[H + j]`) it does not (measured 6x slower).


@njit(**KERNEL)
def _gru_gates(gx, t, gh, h, bias, h_new, y, rh, sv, ts, reset_after):  # pragma: no cover - compiled
    """The gates of step `t` for the batch, after the recurrent product `gh`.

    gx `(B, T, 3H)` input projections; h `(B, H)` = h_{t-1}; bias `(3H,)` = b_hh; `[r, z, n, q]`
    go to `sv[:, ts]` `(B, *, 4H)`. reset_after: `gh = h W_hh^T` `(B, 3H)`; h_t goes to `h_new`
    and `y[:, t]`. Else `gh = h [W_hr; W_hz]^T` `(B, 2H)`: only `r`, `z` and `rh = q = r * h` are
    computed here, `_gru_candidate` finishes the step.
    """
    B, H = h.shape
    b_r, b_z, b_n = bias[:H], bias[H : 2 * H], bias[2 * H :]
    for b in range(B):
        x_r, x_z, x_n = gx[b, t, :H], gx[b, t, H : 2 * H], gx[b, t, 2 * H :]
        g_r, g_z = gh[b, :H], gh[b, H : 2 * H]
        s_r, s_z, s_n, s_q = sv[b, ts, :H], sv[b, ts, H : 2 * H], sv[b, ts, 2 * H : 3 * H], sv[b, ts, 3 * H :]
        h_b = h[b]
        if reset_after:
            g_n = gh[b, 2 * H :]
            o, y_b = h_new[b], y[b, t]
            for j in range(H):
                r = _sigmoid(x_r[j] + g_r[j] + b_r[j])
                z = _sigmoid(x_z[j] + g_z[j] + b_z[j])
                q = g_n[j] + b_n[j]
                n = _tanh(x_n[j] + r * q)
                v = (1.0 - z) * n + z * h_b[j]
                o[j] = v
                y_b[j] = v
                s_r[j] = r
                s_z[j] = z
                s_n[j] = n
                s_q[j] = q
        else:
            rh_b = rh[b]
            for j in range(H):
                r = _sigmoid(x_r[j] + g_r[j] + b_r[j])
                z = _sigmoid(x_z[j] + g_z[j] + b_z[j])
                q = r * h_b[j]
                rh_b[j] = q
                s_r[j] = r
                s_z[j] = z
                s_q[j] = q


@njit(**KERNEL)
def _gru_candidate(gx, t, gn, h, bias, h_new, y, sv, ts):  # pragma: no cover - compiled
    """Finish a reset_after=False step: `gn = (r * h) W_hn^T` `(B, H)`; `n` to `sv`, h_t to `h_new`
    and `y[:, t]`."""
    B, H = h.shape
    b_n = bias[2 * H :]
    for b in range(B):
        x_n, g_n, h_b = gx[b, t, 2 * H :], gn[b], h[b]
        s_z, s_n = sv[b, ts, H : 2 * H], sv[b, ts, 2 * H : 3 * H]
        o, y_b = h_new[b], y[b, t]
        for j in range(H):
            n = _tanh(x_n[j] + g_n[j] + b_n[j])
            z = s_z[j]
            v = (1.0 - z) * n + z * h_b[j]
            o[j] = v
            y_b[j] = v
            s_n[j] = n


@njit(**KERNEL)
def _gru_forward(gx, h0, w_hh, b_hh, reset_after, save):  # pragma: no cover - compiled
    """Recurrence of the GRU (module docstring).

    gx `(B, T, 3H)`, h0 `(B, H)`, w_hh `(3H, H)`, b_hh `(3H,)` or `(0,)` for none. Returns
    `(y (B, T, H), h_T (B, H), saved)`, `saved` `(B, T, 4H)` = `[r, z, n, q]` if `save` (else a
    scratch of one step).
    """
    B, T, G = gx.shape
    H = G // 3
    dt = gx.dtype
    y = np.empty((B, T, H), dtype=dt)
    saved = np.empty((B, T if save else 1, 4 * H), dtype=dt)
    bias = b_hh if b_hh.shape[0] > 0 else np.zeros(G, dtype=dt)
    h = h0.copy()
    h_new = np.empty((B, H), dtype=dt)
    rh = np.empty((B, H), dtype=dt)
    gn = np.empty((B, H), dtype=dt)
    gh = np.empty((B, G if reset_after else 2 * H), dtype=dt)
    w_rz_t = w_hh[: 2 * H].T
    w_n_t = w_hh[2 * H :].T
    w_t = w_hh.T
    for t in range(T):
        ts = t if save else 0
        if reset_after:
            np.dot(h, w_t, gh)  # (B, 3H)
            _gru_gates(gx, t, gh, h, bias, h_new, y, rh, saved, ts, True)
        else:
            np.dot(h, w_rz_t, gh)  # (B, 2H)
            _gru_gates(gx, t, gh, h, bias, h_new, y, rh, saved, ts, False)
            np.dot(rh, w_n_t, gn)  # (B, H)
            _gru_candidate(gx, t, gn, h, bias, h_new, y, saved, ts)
        h, h_new = h_new, h
    return y, h, saved


@njit(**KERNEL)
def _gru_backward(gy, ghT, h0, w_hh, y, saved, reset_after):  # pragma: no cover - compiled
    """BPTT through `_gru_forward` (equations in the module docstring).

    gy `(B, T, H)` = dL/dy, ghT `(B, H)` = dL/dh_T, h0 `(B, H)`, w_hh `(3H, H)`, y `(B, T, H)`,
    saved `(B, T, 4H)` from the forward pass. Returns `(d_gx (B, T, 3H), e_n (B, T, H), dL/dh_0)`:
    `d_gx` = dL/dgx, `e_n` the `n` block of `e_t` (`da^n * r`) when reset_after (else empty: it is
    `da^n` itself).
    """
    B, T, H = y.shape
    G = 3 * H
    dt = y.dtype
    d_gx = np.empty((B, T, G), dtype=dt)
    e_n = np.empty((B if reset_after else 0, T, H), dtype=dt)
    g = ghT.copy()  # gradient reaching h_t from step t+1 (and from h_T)
    e = np.empty((B, G if reset_after else 2 * H), dtype=dt)  # rows of e_t, multiplied by W_hh
    dan = np.empty((B, H), dtype=dt)
    p = np.empty((B, H), dtype=dt)
    back = np.empty((B, H), dtype=dt)
    w_rz = w_hh[: 2 * H]
    w_n = w_hh[2 * H :]
    for t in range(T - 1, -1, -1):
        for b in range(B):
            hp = y[b, t - 1] if t > 0 else h0[b]  # h_{t-1}
            gy_b, g_b = gy[b, t], g[b]
            s_r, s_z = saved[b, t, :H], saved[b, t, H : 2 * H]
            s_n, s_q = saved[b, t, 2 * H : 3 * H], saved[b, t, 3 * H :]
            d_r, d_z, d_n = d_gx[b, t, :H], d_gx[b, t, H : 2 * H], d_gx[b, t, 2 * H :]
            e_z = e[b, H : 2 * H]
            if reset_after:
                e_r, e_nb, en_b = e[b, :H], e[b, 2 * H :], e_n[b, t]
                for j in range(H):
                    gt = gy_b[j] + g_b[j]
                    r = s_r[j]
                    z = s_z[j]
                    n = s_n[j]
                    daz = gt * (hp[j] - n) * (z * (1.0 - z))
                    da_n = gt * (1.0 - z) * (1.0 - n * n)
                    dar = da_n * s_q[j] * (r * (1.0 - r))
                    d_r[j] = dar
                    d_z[j] = daz
                    d_n[j] = da_n
                    e_r[j] = dar
                    e_z[j] = daz
                    e_nb[j] = da_n * r
                    en_b[j] = da_n * r
                    g_b[j] = gt * z  # the direct path through z_t * h_{t-1}
            else:
                dan_b = dan[b]
                for j in range(H):
                    gt = gy_b[j] + g_b[j]
                    z = s_z[j]
                    n = s_n[j]
                    daz = gt * (hp[j] - n) * (z * (1.0 - z))
                    da_n = gt * (1.0 - z) * (1.0 - n * n)
                    d_z[j] = daz
                    d_n[j] = da_n
                    e_z[j] = daz
                    dan_b[j] = da_n
                    g_b[j] = gt * z
        if reset_after:
            np.dot(e, w_hh, back)  # (B, H): e_t W_hh
        else:
            np.dot(dan, w_n, p)  # (B, H): p_t = da^n W_hn
            for b in range(B):
                hp = y[b, t - 1] if t > 0 else h0[b]
                s_r, d_r, e_r, p_b, g_b = saved[b, t, :H], d_gx[b, t, :H], e[b, :H], p[b], g[b]
                for j in range(H):
                    r = s_r[j]
                    dar = p_b[j] * hp[j] * (r * (1.0 - r))
                    d_r[j] = dar
                    e_r[j] = dar
                    g_b[j] += p_b[j] * r
            np.dot(e, w_rz, back)  # (B, H): [da^r, da^z] [W_hr; W_hz]
        for b in range(B):
            g_b, back_b = g[b], back[b]
            for j in range(H):
                g_b[j] += back_b[j]
    return d_gx, e_n, g


# ====================================================================== autograd
class _GRURecurrence(torch.autograd.Function):
    """`(gx, h0, W_hh, b_hh) -> (y, h_T)` with the BPTT backward of the module docstring."""

    @staticmethod
    def forward(ctx: Any, gx: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, reset_after: bool):
        b = EMPTY[gx.dtype] if b_hh is None else _np(b_hh)
        y, hT, saved = _gru_forward(_np(gx), _np(h0), _np(w_hh), b, reset_after, True)
        y, hT = torch.from_numpy(y), torch.from_numpy(hT)
        ctx.reset_after = reset_after
        ctx.has_bias = b_hh is not None
        ctx.save_for_backward(h0, w_hh, y, torch.from_numpy(saved))  # saved: (B, T, 4H) r, z, n, q
        return y, hT

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor, ghT: Tensor):
        h0, w_hh, y, gates = ctx.saved_tensors
        d_gx, e_n, dh0 = _gru_backward(
            _np(gy), _np(ghT), _np(h0), _np(w_hh), _np(y), gates.numpy(), ctx.reset_after
        )
        d_gx = torch.from_numpy(d_gx)  # (B, T, 3H)
        B, T, G = d_gx.shape
        H = G // 3
        d_gx2 = d_gx.view(B * T, G)
        e_n2 = torch.from_numpy(e_n).view(B * T, H) if ctx.reset_after else d_gx2[:, 2 * H :]
        d_w = d_b = None
        if ctx.needs_input_grad[2]:
            h_prev = torch.cat((h0.detach().unsqueeze(1), y[:, :-1]), dim=1).view(B * T, H)  # h_{t-1}
            u = h_prev if ctx.reset_after else gates[:, :, 3 * H :].reshape(B * T, H)  # q_t = r_t * h_{t-1}
            d_w = torch.cat((d_gx2[:, : 2 * H].T @ h_prev, e_n2.T @ u), dim=0)  # (3H, H)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            d_b = torch.cat((d_gx2[:, : 2 * H].sum(0), e_n2.sum(0)))  # (3H,)
        return d_gx, torch.from_numpy(dh0), d_w, d_b, None


# ====================================================================== public wrappers
def gru_scan_numba(
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    reset_after: bool = True,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The GRU over a sequence, on the CPU with Numba; differentiable (hand-written BPTT).

    Same signature and results as `seqmem.gru.reference.gru_scan`, in both reset conventions:
    $h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}$ with gates `r, z, n` in `torch.nn` order. The
    input projection of all steps is one torch matrix product; the recurrence is a Numba kernel
    whose backward pass is BPTT written out by hand (equations in the module docstring), so that
    gradients reach `x`, `initial_state` and every parameter.

    Args:
        x: `(batch, seq_len, input_size)` float32 or float64 CPU tensor.
        weight_ih: `(3 * hidden_size, input_size)`, rows `[W_ir; W_iz; W_in]`.
        weight_hh: `(3 * hidden_size, hidden_size)`, rows `[W_hr; W_hz; W_hn]`.
        bias_ih: `(3 * hidden_size,)` or `None`.
        bias_hh: `(3 * hidden_size,)` or `None`.
        reset_after: `True` for the torch/cuDNN form (reset gate applied to `W_hn h + b_hn`),
            `False` for Cho et al. (2014) (reset gate applied to `h` before `W_hn`).
        initial_state: `(batch, hidden_size)` `h_0`; zeros if `None`.

    Returns:
        `(y, h_T)`: `y` `(batch, seq_len, hidden_size)` holds every `h_t`, `h_T` `(batch, hidden_size)`
        the last one.

    Raises:
        TypeError: if an argument is not a tensor, not float32/float64, or the dtypes differ.
        ValueError: if a tensor is not on the CPU, a shape does not match, or `batch` or `seq_len`
            is 0.

    References:
        Cho, K. et al. (2014). Learning phrase representations using RNN encoder-decoder for
        statistical machine translation. EMNLP, eq. (5)-(8).
        Werbos, P. J. (1990). Backpropagation through time: what it does and how to do it.
        Proceedings of the IEEE 78(10).
    """
    params = (weight_ih, weight_hh, bias_ih, bias_hh)
    _check_recurrent_args("gru_scan_numba", x, _params(*params), {"initial_state": initial_state}, 3, rank=3)
    return _gru_scan(x, *params, bool(reset_after), initial_state)


def _gru_scan(
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    reset_after: bool,
    initial_state: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """`gru_scan_numba` after its checks."""
    h0 = x.new_zeros(x.shape[0], weight_hh.shape[1]) if initial_state is None else initial_state
    gx = F.linear(x, weight_ih, bias_ih)  # (B, T, 3H)
    if _needs_grad(gx, h0, weight_hh, bias_hh):
        return _GRURecurrence.apply(gx, h0, weight_hh, bias_hh, reset_after)
    b = EMPTY[x.dtype] if bias_hh is None else _np(bias_hh)
    y, hT, _ = _gru_forward(_np(gx), _np(h0), _np(weight_hh), b, reset_after, False)
    return torch.from_numpy(y), torch.from_numpy(hT)


def gru_step_numba(
    x_t: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    reset_after: bool = True,
) -> Tensor:
    r"""One GRU step on the CPU with Numba: the streaming fast path.

    As `seqmem.gru.reference.gru_cell`. Without autograd (no input requires grad, or under
    `torch.no_grad()`), one call of the fused streaming kernel (`seqmem.gru.numba_stream`) does the
    whole step, reading the parameters in place (nothing is cached between calls: writes to them
    are seen, calls from several threads are safe). When autograd must record the step, it runs
    as `gru_scan_numba` over one time step, so gradients flow.

    Args:
        x_t: `(batch, input_size)` float32 or float64 CPU tensor.
        h: `(batch, hidden_size)` previous hidden state.
        weight_ih: `(3 * hidden_size, input_size)`.
        weight_hh: `(3 * hidden_size, hidden_size)`.
        bias_ih: `(3 * hidden_size,)` or `None`.
        bias_hh: `(3 * hidden_size,)` or `None`.
        reset_after: `True` for the torch/cuDNN form, `False` for Cho et al. (2014).

    Returns:
        `(batch, hidden_size)` the next hidden state.

    Raises:
        TypeError: as `gru_scan_numba`.
        ValueError: as `gru_scan_numba`, for `(batch, input_size)` inputs.

    References:
        Cho, K. et al. (2014). Learning phrase representations using RNN encoder-decoder for
        statistical machine translation. EMNLP, eq. (5)-(8).
    """
    params = (weight_ih, weight_hh, bias_ih, bias_hh)
    _check_recurrent_args("gru_step_numba", x_t, _params(*params), {"h": h}, 3, rank=2)
    if _needs_grad(x_t, h, *params):
        return _gru_scan(x_t.unsqueeze(1), *params, bool(reset_after), h)[1]
    from ..stream import layer_step
    from .numba_stream import gru_layer_kernel

    return layer_step(gru_layer_kernel, (*params, bool(reset_after)), x_t, (h,))[0]
