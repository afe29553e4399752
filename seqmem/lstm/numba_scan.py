r"""The LSTM on the CPU with Numba: a forward scan, a streaming step and a hand-derived BPTT backward.

Layout of the work. The whole time loop runs in one Numba kernel (`_lstm_forward`), wrapped in a
`torch.autograd.Function` (`_LSTMScan`) whose backward is BPTT written out by hand (below). Per step,
the pre-activations of the whole batch are one BLAS matrix product,
$z_t = [W_{hh} \mid W_{ih} \mid b]\,[h_{t-1}; x_t; 1]$ with $b = b_{ih} + b_{hh}$, so the input
projection rides along with the recurrent product (for a batch of one, the input projections of all
steps are one large product instead, and each step adds $W_{hh} h_{t-1}$).

Forward, per step, with gates in `torch.nn` order `i, f, g, o` and peephole weights
$w_{ci}, w_{cf}, w_{co}$ (zero without peepholes):

    z_t  = W_ih x_t + b + W_hh h_{t-1}              (4H): the pre-activations [z^i, z^f, z^g, z^o]
    i_t  = sigma(z^i_t + w_ci * c_{t-1})
    f_t  = sigma(z^f_t + w_cf * c_{t-1})
    g_t  = tanh(z^g_t)
    c_t  = f_t * c_{t-1} + i_t * g_t
    o_t  = sigma(z^o_t + w_co * c_t)
    h_t  = o_t * tanh(c_t)

Backward (BPTT; Werbos 1990). Given the loss gradients $\bar y_t = \partial L/\partial y_t$ and
$\bar h_T, \bar c_T$ of the final state, walk $t = T-1, \dots, 0$ carrying $\hat h, \hat c$ (the
gradient reaching $h_t, c_t$ from step $t+1$; at the start $\hat h = \bar h_T$, $\hat c = \bar c_T$):

    dh     = y_bar_t + h_hat
    dz^o   = dh * tanh(c_t) * o_t (1 - o_t)
    dc     = c_hat + dh * o_t (1 - tanh(c_t)^2) + dz^o * w_co
    dz^i   = dc * g_t * i_t (1 - i_t)
    dz^f   = dc * c_{t-1} * f_t (1 - f_t)
    dz^g   = dc * i_t * (1 - g_t^2)
    c_hat  <- dc * f_t + dz^i * w_ci + dz^f * w_cf           (the gradient reaching c_{t-1})
    h_hat  <- W_hh^T dz_t,   dz_t = [dz^i, dz^f, dz^g, dz^o]  (the gradient reaching h_{t-1})
    dw_ci += sum_b dz^i * c_{t-1};  dw_cf += sum_b dz^f * c_{t-1};  dw_co += sum_b dz^o * c_t

and after the loop $\partial L/\partial h_0 = \hat h$, $\partial L/\partial c_0 = \hat c$. The kernel
computes $\hat h \leftarrow W_{hh}^\top dz_t$ per step, one BLAS product for the batch, and keeps every
$dz_t$ (batch-first); the gradients of the inputs and weights are then one matrix product each over all
steps and sequences, done by torch: $\partial L/\partial x_t = W_{ih}^\top dz_t$,
$\partial L/\partial W_{hh} = \sum_t dz_t h_{t-1}^\top$, $\partial L/\partial W_{ih} = \sum_t dz_t x_t^\top$,
$\partial L/\partial b = \sum_t dz_t$ (measured faster than adding $W_{ih}^\top dz_t$ to the per-step
product: a large product and no transposes).

Kernel notes (measured on the development machine, a 2-core AMD EPYC (Zen 4) with AVX-512):

- Feature-major state. The kernels keep $h^\top, c^\top$ as (H, B) and $z_t$ as (4H, B): the product
  $W z$ with the batch as BLAS's small dimension is its fast shape (91 GFLOP/s at 4H = 512, B = 32, against
  70 for $h W^\top$, on one core whose large-matrix peak is about 100), and each gate's block of $z_t$ is
  one contiguous run of $H \cdot B$ values, so the cells of a step are one vectorised loop
  (`_gates_forward`, `_gates_backward`; the peephole-free loop has no peephole terms at all). Inputs and
  outputs stay batch-first; the kernel transposes $x_t$ and $h_t$ (H * B values a step).
- $\sigma$ and $\tanh$ are the kernel toolkit's (`seqmem._kernels`): arithmetic only, in the arrays'
  precision, so that LLVM vectorises the cell loop (about 0.4 ns per sigmoid in float32 against 25 ns
  for libm's scalar `exp`); within about 2 ulp, exact when saturated ($\sigma(\pm 10^4) \in \{1, 0\}$,
  $\tanh(\pm 10^4) = \pm 1$), NaN kept.
- The kernels are serial (no `prange`): a step's work is one product and one loop, too little to share
  between threads without a synchronisation per step, and serial kernels can run in several Python
  threads at once (`nogil`). BLAS may use its own threads (`seqmem._threads` sets their number).
- `error_model="numpy"`: a division by zero gives inf/NaN as numpy does; Python's error model adds a
  zero check to every division, which also blocks vectorisation.
- The streaming step (`lstm_step_numba` without autograd) is the fused streaming kernel of
  `seqmem.lstm.numba_stream` on one layer: it reads the parameters in place, caches nothing.

References:
    Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8).
    Gers, F. A. & Schmidhuber, J. (2000). Recurrent nets that time and count. IJCNN (peepholes).
    Werbos, P. J. (1990). Backpropagation through time: what it does and how to do it. Proc. IEEE 78(10).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._kernels import KERNEL as _JIT
from .._kernels import _check_recurrent_args, _empty, _like, _needs_grad, _np, _sigmoid, _tanh
from .._numba import njit
from ..protocol import LSTMState

__all__ = ["clear_step_cache", "lstm_scan_numba", "lstm_step_numba"]

# ----------------------------------------------------------------------------------------------------
# Matrix-vector products z += v @ W (W row-major (K, N): a sum of K rows, vectorised along N)
# ----------------------------------------------------------------------------------------------------
@njit(**_JIT)
def _gemv_acc(w, v, z):  # pragma: no cover - compiled
    """`z += v @ w` for one vector `v` (K,), `w` (K, N), `z` (N,)."""
    K, N = w.shape
    k = 0
    while k + 4 <= K:
        a0 = v[k]
        a1 = v[k + 1]
        a2 = v[k + 2]
        a3 = v[k + 3]
        w0 = w[k]
        w1 = w[k + 1]
        w2 = w[k + 2]
        w3 = w[k + 3]
        for n in range(N):
            z[n] += w0[n] * a0 + w1[n] * a1 + w2[n] * a2 + w3[n] * a3
        k += 4
    while k < K:
        a0 = v[k]
        w0 = w[k]
        for n in range(N):
            z[n] += w0[n] * a0
        k += 1


# ----------------------------------------------------------------------------------------------------
# One cell, forward and backward (per sequence; all arrays 1-D rows)
# ----------------------------------------------------------------------------------------------------
@njit(**_JIT)
def _cell_forward(z, h, c, peep):  # pragma: no cover - compiled
    """From pre-activations `z` (4H,) and `c = c_{t-1}` to `h_t`, `c_t` (written into `h`, `c`);
    `z` is overwritten by the gate activations `[i, f, g, o]`."""
    H = h.shape[0]
    for j in range(H):
        cp = c[j]
        i = _sigmoid(z[j] + peep[0, j] * cp)
        f = _sigmoid(z[H + j] + peep[1, j] * cp)
        g = _tanh(z[2 * H + j])
        cn = f * cp + i * g
        o = _sigmoid(z[3 * H + j] + peep[2, j] * cn)
        h[j] = o * _tanh(cn)
        c[j] = cn
        z[j] = i
        z[H + j] = f
        z[2 * H + j] = g
        z[3 * H + j] = o


@njit(**{**_JIT, "inline": "always"})
def _cell(zi, zf, zg, zo, cp, wi, wf, wo, peephole):  # pragma: no cover - compiled
    """One unit of the cell: `(i, f, g, o, c_t, h_t)` from the pre-activations and `c_{t-1}`, with the
    peephole terms if `peephole` (a constant where it is inlined, so the other branch folds away; `wi`, `wf`,
    `wo` are then ignored, but must have the type of `cp`)."""
    if peephole:
        zi = zi + wi * cp
        zf = zf + wf * cp
    i = _sigmoid(zi)
    f = _sigmoid(zf)
    g = _tanh(zg)
    cn = f * cp + i * g
    if peephole:
        zo = zo + wo * cn
    o = _sigmoid(zo)
    return i, f, g, o, cn, o * _tanh(cn)


@njit(**_JIT)
def _gates_forward(z, peep, h, c):  # pragma: no cover - compiled
    """The cells of one step, feature-major: every argument is a `(rows, B)` block flattened, so that one
    loop over `H * B` contiguous values runs vectorised (AVX2/AVX-512).

    `z` (4H * B) holds the pre-activations on entry and the gate activations `[i, f, g, o]` on exit,
    `peep` (3H * B) the peephole weights broadcast over the batch (empty: no peepholes), `c` (H * B)
    `c_{t-1}` on entry and `c_t` on exit; `h_t` goes to `h` (H * B).
    """
    n = h.shape[0]
    zi, zf, zg, zo = z[:n], z[n : 2 * n], z[2 * n : 3 * n], z[3 * n :]
    if peep.shape[0] == 0:
        for k in range(n):
            zi[k], zf[k], zg[k], zo[k], c[k], h[k] = _cell(zi[k], zf[k], zg[k], zo[k], c[k], c[k], c[k], c[k], False)
    else:
        wi, wf, wo = peep[:n], peep[n : 2 * n], peep[2 * n :]
        for k in range(n):
            zi[k], zf[k], zg[k], zo[k], c[k], h[k] = _cell(zi[k], zf[k], zg[k], zo[k], c[k], wi[k], wf[k], wo[k], True)


@njit(**{**_JIT, "inline": "always"})
def _cell_grad(i, f, g, o, ct, cp, gy, dh, dc, wi, wf, wo, peephole):  # pragma: no cover - compiled
    """One unit of BPTT through the cell (module docstring): `(dz^i, dz^f, dz^g, dz^o, dc_{t-1})` from the
    gate activations, `c_t`, `c_{t-1}`, the output gradient and the gradients reaching `h_t`, `c_t`."""
    one = _like(i, 1.0)
    tc = _tanh(ct)
    dhk = gy + dh
    dzo = dhk * tc * (o * (one - o))
    dck = dc + dhk * o * (one - tc * tc)
    if peephole:
        dck = dck + dzo * wo
    dzi = dck * g * (i * (one - i))
    dzf = dck * cp * (f * (one - f))
    dzg = dck * i * (one - g * g)
    dcp = dck * f
    if peephole:
        dcp = dcp + dzi * wi + dzf * wf
    return dzi, dzf, dzg, dzo, dcp


@njit(**_JIT)
def _gates_backward(a, ct, cp, peep, gy, dh, dc, dz, dpeep):  # pragma: no cover - compiled
    """One BPTT step through the cells, feature-major and flattened as in `_gates_forward`.

    `a` (4H * B) gate activations, `ct`, `cp` (H * B) `c_t` and `c_{t-1}`, `gy` (H * B) the output
    gradient; `dh`, `dc` (H * B) hold the gradients reaching `h_t`, `c_t` from step t+1 on entry, and `dc`
    the one reaching `c_{t-1}` through the cell on exit (the `W_hh` part of the gradient reaching `h_{t-1}`
    is the caller's). Writes `dz` (4H * B), the gradient of the pre-activations, and, with peepholes, adds
    their gradients (per batch column) to `dpeep` (3H * B).
    """
    n = dh.shape[0]
    ai, af, ag, ao = a[:n], a[n : 2 * n], a[2 * n : 3 * n], a[3 * n :]
    di, df, dg, do = dz[:n], dz[n : 2 * n], dz[2 * n : 3 * n], dz[3 * n :]
    if peep.shape[0] == 0:
        for k in range(n):
            di[k], df[k], dg[k], do[k], dc[k] = _cell_grad(
                ai[k], af[k], ag[k], ao[k], ct[k], cp[k], gy[k], dh[k], dc[k], ct[k], ct[k], ct[k], False
            )
        return
    wi, wf, wo = peep[:n], peep[n : 2 * n], peep[2 * n :]
    pi, pf, po = dpeep[:n], dpeep[n : 2 * n], dpeep[2 * n :]
    for k in range(n):
        di[k], df[k], dg[k], do[k], dc[k] = _cell_grad(
            ai[k], af[k], ag[k], ao[k], ct[k], cp[k], gy[k], dh[k], dc[k], wi[k], wf[k], wo[k], True
        )
        pi[k] += di[k] * cp[k]  # dw_ci += dz^i c_{t-1}, dw_cf += dz^f c_{t-1}, dw_co += dz^o c_t
        pf[k] += df[k] * cp[k]
        po[k] += do[k] * ct[k]


@njit(**_JIT)
def _matmul(w, w_t, a, out):  # pragma: no cover - compiled
    """`out = w @ a` for `w` (M, K), `a` (K, B), `out` (M, B), all C-contiguous; `w_t` is `w.T` made
    contiguous. BLAS for a batch; for B = 1 a sum of rows of `w_t` (`_gemv_acc`): a BLAS call costs more
    than the product there."""
    if a.shape[1] == 1:
        o = out.ravel()
        o[:] = 0.0
        _gemv_acc(w_t, a.ravel(), o)
    else:
        np.dot(w, a, out)


@njit(**_JIT)
def _transpose_into(src, dst):  # pragma: no cover - compiled
    """`dst = src.T` for `src` (M, N), `dst` (N, M), going along the rows of `src`: for a `src` whose rows
    lie far apart in memory (a time step of a batch-first array) and a small `dst`."""
    M, N = src.shape
    for i in range(M):
        row = src[i]
        for j in range(N):
            dst[j, i] = row[j]


@njit(**_JIT)
def _transpose_onto(src, dst):  # pragma: no cover - compiled
    """`dst = src.T` as `_transpose_into`, going along the rows of `dst` (far apart in memory)."""
    M, N = dst.shape
    for i in range(M):
        row = dst[i]
        for j in range(N):
            row[j] = src[j, i]


# ----------------------------------------------------------------------------------------------------
# Kernels (private: they trust their inputs; the wrappers below check them)
# ----------------------------------------------------------------------------------------------------
@njit(**_JIT)
def _lstm_forward(x, w, w_t, gx, peep, h0, c0, y, h_n, c_n, acts, cs):  # pragma: no cover - compiled
    """The scan over `x` (B, T, I) from `h0`, `c0` (B, H); writes `y` (B, T, H) and the final `h_n`, `c_n`.

    Feature-major: the state is kept as `h^T`, `c^T` (H, B) and each step is one BLAS product for the
    whole batch, `z_t = [W_hh | W_ih | b] [h_{t-1}; x_t; 1]` (4H, B) (`w` (4H, H + I + 1), the operand
    `s` (H + I + 1, B) holds `h^T` in its first rows, where the cells write it), followed by one
    vectorised loop over the `H * B` cells. For B = 1 the input projections come precomputed instead,
    `gx` (T, 4H) (one large product), with `w` = `W_hh` (4H, H) and `w_t` its transpose (H, 4H); `gx` is
    (0, 0) otherwise. `peep` (3H, B) holds the peephole weights broadcast over the batch, or is empty.

    If `acts` (T, 4H, B) and `cs` (T, H, B) have a time axis, the gate activations and `c_t` of every
    step are saved there for the backward.
    """
    B, T, I = x.shape
    G, K = w.shape
    H = G // 4
    dt = x.dtype
    s = np.empty((K, B), dt)
    cT = np.empty((H, B), dt)
    z = np.empty((G, B), dt)
    hT = s[:H]
    _transpose_into(h0, hT)
    _transpose_into(c0, cT)
    if K > H:
        s[H + I] = 1.0
    hf, cf, pf = hT.ravel(), cT.ravel(), peep.ravel()
    save = acts.shape[0] > 0
    for t in range(T):
        zt = acts[t] if save else z  # the gate activations are what the backward keeps
        zf = zt.ravel()
        if gx.shape[0] == 0:
            _transpose_into(x[:, t], s[H : H + I])
            np.dot(w, s, zt)  # (4H, B): [W_hh | W_ih | b] [h_{t-1}; x_t; 1]
        else:
            zf[:] = gx[t]
            _gemv_acc(w_t, hf, zf)  # B = 1: z += W_hh h_{t-1}
        _gates_forward(zf, pf, hf, cf)
        _transpose_onto(hT, y[:, t])
        if save:
            cs[t] = cT
    _transpose_into(hT, h_n)
    _transpose_into(cT, c_n)


@njit(**_JIT)
def _lstm_backward(gy, gh_n, gc_n, c0, w, w_t, peep, acts, cs, dz_all, dh0, dc0, dpeep):  # pragma: no cover
    """BPTT through the scan `_lstm_forward` saved (`acts`, `cs`), feature-major as it.

    `gy` (B, T, H), `gh_n`, `gc_n` (B, H): gradients of the outputs; `c0` (B, H); `w` = `W_hh^T` (H, 4H)
    and `w_t` = `W_hh` (4H, H); `peep` (3H, B) or empty. Per step: the cells, then one BLAS product
    `W_hh^T dz_t` (H, B) for the whole batch.

    Writes `dz_all` (B, T, 4H) (the gradient of the pre-activations, batch-first like the input, so that
    the gradients of `x` and of the weights are plain matrix products of it), `dh0`, `dc0` (B, H) and, with
    peepholes, their gradient per batch column into `dpeep` (3H, B).
    """
    B, T, H = gy.shape
    G = 4 * H
    dt = gy.dtype
    dhT = np.empty((H, B), dt)
    dcT = np.empty((H, B), dt)
    gyT = np.empty((H, B), dt)
    c0T = np.empty((H, B), dt)
    dz = np.empty((G, B), dt)
    _transpose_into(gh_n, dhT)
    _transpose_into(gc_n, dcT)
    _transpose_into(c0, c0T)
    dhf, dcf, gyf, dzf, pf, dpf = dhT.ravel(), dcT.ravel(), gyT.ravel(), dz.ravel(), peep.ravel(), dpeep.ravel()
    dpf[:] = 0.0
    for t in range(T - 1, -1, -1):
        _transpose_into(gy[:, t], gyT)
        cp = cs[t - 1].ravel() if t > 0 else c0T.ravel()
        _gates_backward(acts[t].ravel(), cs[t].ravel(), cp, pf, gyf, dhf, dcf, dzf, dpf)
        _transpose_onto(dz, dz_all[:, t])
        _matmul(w, w_t, dz, dhT)  # (H, B): W_hh^T dz_t, the gradient reaching h_{t-1}
    _transpose_into(dhT, dh0)
    _transpose_into(dcT, dc0)


# ----------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------
def _zeros_peephole(hidden_size: int, dtype: torch.dtype) -> np.ndarray:
    return np.zeros((3, hidden_size), dtype=np.float32 if dtype == torch.float32 else np.float64)


def _broadcast(t: Tensor | None, rows: int, batch: int, dtype: np.dtype) -> np.ndarray:
    """`t` flattened to `rows` values, repeated over the batch: `(rows, batch)`; `(0, batch)` for `None`."""
    if t is None:
        return np.empty((0, batch), dtype)
    out = np.empty((rows, batch), dtype)
    out[:] = _np(t).reshape(rows, 1)
    return out


def _forward(
    x: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor | None, peephole: Tensor | None, h0: Tensor, c0: Tensor,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor, tuple[np.ndarray, ...]]:
    """Run `_lstm_forward` on tensors: `(y, h_n, c_n, (acts, cs))` (the saved arrays are empty unless `save`)."""
    B, T, I = x.shape
    G, H = w_hh.shape
    xn = _np(x)
    dtype = xn.dtype
    with torch.no_grad():
        if B == 1:  # the input projections of all steps in one product; per step only W_hh h (a sum of rows)
            gx = F.linear(x[0], w_ih, bias).numpy()  # (T, 4H)
            w = _np(w_hh)
        else:
            gx = np.empty((0, 0), dtype)
            b = bias if bias is not None else w_hh.new_zeros(G)
            w = torch.cat((w_hh, w_ih, b.unsqueeze(1)), dim=1).numpy()  # (4H, H + I + 1): [W_hh | W_ih | b]
    y, h_n, c_n = _empty((B, T, H), x.dtype), _empty((B, H), x.dtype), _empty((B, H), x.dtype)
    acts = _empty((T if save else 0, G, B), x.dtype).numpy()
    cs = _empty((T if save else 0, H, B), x.dtype).numpy()
    w_t = np.ascontiguousarray(w.T) if B == 1 else w[:0]
    _lstm_forward(
        xn, w, w_t, gx, _broadcast(peephole, 3 * H, B, dtype), _np(h0), _np(c0), y.numpy(), h_n.numpy(),
        c_n.numpy(), acts, cs,
    )  # fmt: skip
    return y, h_n, c_n, (acts, cs)


class _LSTMScan(torch.autograd.Function):
    """The LSTM over a sequence with BPTT as its backward.

    Inputs: `x` (B, T, I), `weight_ih` (4H, I), `weight_hh` (4H, H), `bias` (4H,) (`b_ih + b_hh`) or
    `None`, `weight_peephole` (3, H) or `None`, `h0`, `c0` (B, H). Outputs: `y` (B, T, H), `h_n`, `c_n`
    (B, H). The backward kernel gives the gradients of the pre-activations, `dz` (B, T, 4H), and of the
    initial state; those of `x` and the weights are one matrix product each, done by torch after it.
    """

    @staticmethod
    def forward(ctx: Any, x, weight_ih, weight_hh, bias, weight_peephole, h0, c0):
        y, h_n, c_n, saved = _forward(x, weight_ih, weight_hh, bias, weight_peephole, h0, c0, save=True)
        ctx.save_for_backward(x, weight_ih, weight_hh, weight_peephole, h0, c0, y)
        ctx.saved_arrays = saved
        ctx.has_bias = bias is not None
        return y, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor, gh_n: Tensor, gc_n: Tensor) -> tuple[Tensor | None, ...]:
        x, weight_ih, weight_hh, weight_peephole, h0, c0, y = ctx.saved_tensors
        acts, cs = ctx.saved_arrays
        B, T, I = x.shape
        G, H = weight_hh.shape
        dtype = acts.dtype
        w_hh = _np(weight_hh)
        dz, dh0, dc0 = _empty((B, T, G), x.dtype), _empty((B, H), x.dtype), _empty((B, H), x.dtype)
        dpeep = np.empty((3 * H if weight_peephole is not None else 0, B), dtype)
        _lstm_backward(
            _np(gy), _np(gh_n), _np(gc_n), _np(c0), np.ascontiguousarray(w_hh.T), w_hh,
            _broadcast(weight_peephole, 3 * H, B, dtype), acts, cs, dz.numpy(), dh0.numpy(), dc0.numpy(), dpeep,
        )  # fmt: skip
        dz2 = dz.view(B * T, G)
        need = ctx.needs_input_grad
        dx = (dz2 @ weight_ih.detach()).view(B, T, I) if need[0] else None
        d_wih = dz2.t() @ x.detach().reshape(B * T, I) if need[1] else None
        d_whh = None
        if need[2]:
            h_prev = torch.cat((h0.detach().unsqueeze(1), y[:, :-1]), dim=1)  # (B, T, H): h_{t-1}
            d_whh = dz2.t() @ h_prev.reshape(B * T, H)  # (4H, H)
        d_bias = dz2.sum(0) if ctx.has_bias and need[3] else None
        d_peep = torch.from_numpy(dpeep.reshape(3, H, B).sum(-1)) if weight_peephole is not None and need[4] else None
        return dx, d_wih, d_whh, d_bias, d_peep, dh0, dc0


# ----------------------------------------------------------------------------------------------------
# Checks shared by the wrappers
# ----------------------------------------------------------------------------------------------------
def _check_args(
    where: str,
    x: Tensor,
    x_rank: int,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    weight_peephole: Tensor | None,
    state: Any,
) -> None:
    """Raise `TypeError`/`ValueError` unless the tensors fit together (see the wrappers' Raises)."""
    params = {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias_ih": bias_ih, "bias_hh": bias_hh,
              "weight_peephole": weight_peephole}
    name = "initial_state" if x_rank == 3 else "state"
    h, c = (None, None) if state is None else state
    _check_recurrent_args(where, x, params, {f"{name}.h": h, f"{name}.c": c}, 4, x_rank)


def _combined_bias(bias_ih: Tensor | None, bias_hh: Tensor | None) -> Tensor | None:
    if bias_ih is None:
        return bias_hh
    if bias_hh is None:
        return bias_ih
    return bias_ih + bias_hh


# ----------------------------------------------------------------------------------------------------
# Public wrappers
# ----------------------------------------------------------------------------------------------------
def lstm_scan_numba(
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    weight_peephole: Tensor | None = None,
    initial_state: LSTMState | None = None,
) -> tuple[Tensor, LSTMState]:
    r"""The LSTM over a sequence on the CPU, with Numba kernels; differentiable (hand-written BPTT).

    Same signature and results as the reference `seqmem.lstm.reference.lstm_scan`. The time loop runs in
    a Numba kernel, one BLAS product per step for the whole batch (input and recurrent projections
    together), and its backward (used when grad mode is on and an input requires grad) is BPTT written
    out by hand (equations in this module's docstring).

    Args:
        x: `(batch, seq_len, input_size)` float32 or float64 tensor on the CPU.
        weight_ih: `(4 * hidden_size, input_size)`, gate rows in order `i, f, g, o`.
        weight_hh: `(4 * hidden_size, hidden_size)`.
        bias_ih: `(4 * hidden_size,)` or `None`.
        bias_hh: `(4 * hidden_size,)` or `None`.
        weight_peephole: `(3, hidden_size)` peephole weights `w_ci, w_cf, w_co`, or `None` for none.
        initial_state: `LSTMState(h_0, c_0)`, each `(batch, hidden_size)`; zeros if `None`.

    Returns:
        `(y, state)`: `y` `(batch, seq_len, hidden_size)` holds every `h_t`; `state` is the final
        `LSTMState(h, c)`, each `(batch, hidden_size)`.

    Raises:
        TypeError: if a tensor is not float32/float64 or the dtypes differ.
        ValueError: if a shape does not fit, `x` is empty, or a tensor is not on the CPU.

    References:
        Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8),
        1735-1780 (the cell; forget gate as in Gers et al. 2000).
        Gers, F. A. & Schmidhuber, J. (2000). Recurrent nets that time and count. IJCNN (peepholes).
        Werbos, P. J. (1990). Backpropagation through time: what it does and how to do it.
        Proceedings of the IEEE 78(10), 1550-1560.

    Example:
        >>> import torch
        >>> from seqmem.lstm.numba_scan import lstm_scan_numba
        >>> w_ih, w_hh = torch.randn(32, 3), torch.randn(32, 8)
        >>> y, (h, c) = lstm_scan_numba(torch.randn(2, 5, 3), w_ih, w_hh)
        >>> y.shape, c.shape
        (torch.Size([2, 5, 8]), torch.Size([2, 8]))
    """
    params = (weight_ih, weight_hh, bias_ih, bias_hh, weight_peephole)
    _check_args("lstm_scan_numba", x, 3, *params, initial_state)
    B = x.shape[0]
    H = weight_hh.shape[1]
    if initial_state is None:
        h0 = c0 = x.new_zeros(B, H)
    else:
        h0, c0 = initial_state
    bias = _combined_bias(bias_ih, bias_hh)
    args = (x, weight_ih, weight_hh, bias, weight_peephole, h0, c0)
    if _needs_grad(*args):
        y, h, c = _LSTMScan.apply(*args)
    else:
        y, h, c, _ = _forward(*args, save=False)
    return y, LSTMState(h, c)


def clear_step_cache() -> None:
    """Kept for compatibility: `lstm_step_numba` caches nothing any more (it reads the parameters in
    place), so writes through `param.data` are seen without this call."""


def lstm_step_numba(
    x_t: Tensor,
    state: LSTMState,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    weight_peephole: Tensor | None = None,
) -> LSTMState:
    r"""One LSTM step on the CPU with Numba: the streaming form of `lstm_scan_numba`.

    Without autograd (grad mode off, or no input requiring grad) this is one call of the fused
    streaming kernel (`seqmem.lstm.numba_stream`), which reads the parameters where they are stored:
    nothing is prepared or cached between calls, so every write to a parameter is seen, and calls
    from several threads are safe. The new state is a pair of fresh tensors. With autograd it runs
    `lstm_scan_numba` on a sequence of one step, so the result is differentiable.

    Args:
        x_t: `(batch, input_size)` float32 or float64 tensor on the CPU.
        state: `LSTMState(h, c)`, each `(batch, hidden_size)`: the state after the previous step.
        weight_ih: `(4 * hidden_size, input_size)`, gate rows in order `i, f, g, o`.
        weight_hh: `(4 * hidden_size, hidden_size)`.
        bias_ih: `(4 * hidden_size,)` or `None`.
        bias_hh: `(4 * hidden_size,)` or `None`.
        weight_peephole: `(3, hidden_size)` peephole weights `w_ci, w_cf, w_co`, or `None`.

    Returns:
        The next `LSTMState(h, c)`, each `(batch, hidden_size)`; `h` is the step's output.

    Raises:
        TypeError: if a tensor is not float32/float64 or the dtypes differ.
        ValueError: if a shape does not fit or a tensor is not on the CPU.

    References:
        Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8).
        Gers, F. A. & Schmidhuber, J. (2000). Recurrent nets that time and count. IJCNN (peepholes).
        Werbos, P. J. (1990). Backpropagation through time. Proceedings of the IEEE 78(10).

    Example:
        >>> import torch
        >>> from seqmem.protocol import LSTMState
        >>> from seqmem.lstm.numba_scan import lstm_step_numba
        >>> w_ih, w_hh = torch.randn(32, 3), torch.randn(32, 8)
        >>> state = LSTMState(torch.zeros(2, 8), torch.zeros(2, 8))
        >>> with torch.no_grad():
        ...     state = lstm_step_numba(torch.randn(2, 3), state, w_ih, w_hh)
        >>> state.h.shape
        torch.Size([2, 8])
    """
    params = (weight_ih, weight_hh, bias_ih, bias_hh, weight_peephole)
    _check_args("lstm_step_numba", x_t, 2, *params, state)
    h, c = state
    if _needs_grad(x_t, h, c, *params):  # differentiable: the scan's autograd Function, one step
        return lstm_scan_numba(x_t.unsqueeze(1), *params, initial_state=state)[1]
    from ..stream import layer_step
    from .numba_stream import lstm_layer_kernel

    return layer_step(lstm_layer_kernel, params, x_t, state)[1]
