r"""The LSTM on the CPU with Numba: a forward scan, a streaming step and a hand-derived BPTT backward.

Layout of the work (the same split `torch.nn.LSTM` makes):

1. The input projection of every step, $\tilde x_t = W_{ih} x_t + b_{ih} + b_{hh}$, is one big matrix
   product done by torch outside the time loop (oneDNN is faster at it than anything written here), and
   torch's autograd differentiates it.
2. The recurrence over $(\tilde x_t)_t$ is a Numba kernel; `_LSTMRecurrence` wraps it in a
   `torch.autograd.Function` whose backward is BPTT written out by hand (below).

Forward, per step, with gates in `torch.nn` order `i, f, g, o` and peephole weights
$w_{ci}, w_{cf}, w_{co}$ (zero without peepholes):

    z_t  = x~_t + W_hh h_{t-1}                     (B, 4H): the pre-activations [z^i, z^f, z^g, z^o]
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

and after the loop $\partial L/\partial h_0 = \hat h$, $\partial L/\partial c_0 = \hat c$,
$\partial L/\partial \tilde x_t = dz_t$ (so torch's autograd turns it into the gradients of $x$,
$W_{ih}$ and the biases), $\partial L/\partial W_{hh} = \sum_t dz_t^\top h_{t-1}$ and
$\partial L/\partial b_{hh} = \sum_t dz_t$: these two sums are one matrix product each, done by torch
after the kernel.

Kernel notes (measured on the development machine, a 2-core AMD EPYC with AVX-512):

- $\sigma$ and $\tanh$ are written with $e^{-|x|}$ (and $e^{-2|x|} - 1$ for tanh, so that it stays
  accurate near 0), and that exponential with arithmetic only (`_exp_parts`): a call to libm's `exp` or
  `tanh` keeps LLVM from vectorising the gate loop, while the polynomial vectorises (about 1 ns per
  sigmoid in float32 against 25 ns). It is accurate to about 2 ulp and saturates exactly:
  $\sigma(\pm 10^4) \in \{1, 0\}$, $\tanh(\pm 10^4) = \pm 1$; NaN stays NaN.
- The recurrent product $W_{hh} h$ is written as a sum of rows of $W_{hh}^\top$ (an "axpy" loop that
  LLVM vectorises without reassociating floating-point sums; `fastmath` is never used), four rows of
  $W^\top$ and two sequences of the batch at a time to reuse loads.
- The scan kernels run `prange` over pairs of sequences of the batch (they are independent for the
  whole scan), so there is no synchronisation inside the time loop.
- The gate loops (`_cell_forward`, `_cell_backward`) and the products are separate compiled functions
  that the kernels call, not inlined into them: the same speed, and a third of the compile time.
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
from llvmlite import ir as llvm_ir
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._numba import JIT, PJIT, intrinsic, njit, numba, prange
from ..protocol import LSTMState

__all__ = ["clear_step_cache", "lstm_scan_numba", "lstm_step_numba"]

# `error_model="numpy"` lets the gate loops vectorise (see the module docstring).
_JIT = {**JIT, "error_model": "numpy"}
_PJIT = {**PJIT, "error_model": "numpy"}
_INLINE = {"inline": "always", **_JIT}

_DTYPES = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------------------------------
# Elementwise math (inlined into the cell loops; arithmetic only, so LLVM vectorises those loops)
# ----------------------------------------------------------------------------------------------------
if numba.config.DISABLE_JIT:  # the kernels run as Python: the same numbers, from numpy

    def _pow2_neg(n):
        """`2^-n` for an integer-valued float `0 <= n <= 126`, in the type of `n`."""
        return np.ldexp(type(n)(1.0), -int(n))

else:

    @intrinsic
    def _pow2_neg(typingctx, n):  # pragma: no cover - compiled
        """`2^-n` for an integer-valued float `0 <= n <= 126`, in the type of `n`: the IEEE bits
        `(bias - n) << mantissa_bits` reinterpreted as a float. Exact, and unlike `math.ldexp` (a
        libm call) it vectorises."""
        if not isinstance(n, numba.core.types.Float):
            return None

        def codegen(context, builder, signature, args):
            width, bias, shift = (32, 127, 23) if n.bitwidth == 32 else (64, 1023, 52)
            ity = llvm_ir.IntType(width)
            k = builder.fptosi(args[0], ity)
            bits = builder.shl(builder.sub(llvm_ir.Constant(ity, bias), k), llvm_ir.Constant(ity, shift))
            return builder.bitcast(bits, args[0].type)

        return n(n), codegen


@njit(**_INLINE)
def _exp_parts(a, dt):  # pragma: no cover - compiled
    """`exp(-a) = s (1 + q)` for `0 <= a < 87`: returns `(s, q)`, `s = 2^-n` exact, `|q| < 0.42`.

    `a = n ln2 + r` with `|r| <= ln2 / 2` (ln2 split in two parts, so `r` is exact), `q = exp(-r) - 1`
    by its Taylor polynomial (degree 13 in float64, 7 in float32: truncation below 2e-17 and 6e-9),
    and `2^-n` from its bits (`_pow2_neg`). Any other `a` (large, inf, NaN) is replaced by 87 here;
    the callers patch the result.
    """
    c = dt.type
    aa = a if a < c(87.0) else c(87.0)  # finite, NaN-free
    n = np.floor(aa * c(1.4426950408889634) + c(0.5))
    r = (aa - n * c(0.693145751953125)) - n * c(1.4286068203094172e-06)
    m = -r
    if c(1.0) + c(1e-10) != c(1.0):  # float64 (folded at compile time)
        p = c(1.0 / 6227020800.0)
        p = p * m + c(1.0 / 479001600.0)
        p = p * m + c(1.0 / 39916800.0)
        p = p * m + c(1.0 / 3628800.0)
        p = p * m + c(1.0 / 362880.0)
        p = p * m + c(1.0 / 40320.0)
        p = p * m + c(1.0 / 5040.0)
    else:  # float32
        p = c(1.0 / 5040.0)
    p = p * m + c(1.0 / 720.0)
    p = p * m + c(1.0 / 120.0)
    p = p * m + c(1.0 / 24.0)
    p = p * m + c(1.0 / 6.0)
    p = p * m + c(0.5)
    p = p * m + c(1.0)
    q = p * m
    s = _pow2_neg(n)
    return s, q


@njit(**_INLINE)
def _exp_neg(a, dt):  # pragma: no cover - compiled
    """`exp(-a)` for `a >= 0`, about 1 ulp; 0 for `a >= 87` (below float32's smallest normal), NaN
    for NaN."""
    c = dt.type
    s, q = _exp_parts(a, dt)
    e = s + s * q
    return e if a < c(87.0) else (c(0.0) if a >= c(87.0) else a)


@njit(**_INLINE)
def _expm1_neg(a, dt):  # pragma: no cover - compiled
    """`exp(-a) - 1` for `a >= 0`, accurate also for small `a` (no cancellation); -1 for `a >= 87`."""
    c = dt.type
    s, q = _exp_parts(a, dt)
    e = s * q + (s - c(1.0))
    return e if a < c(87.0) else (c(-1.0) if a >= c(87.0) else a)


@njit(**_INLINE)
def _sigmoid(x, dt):  # pragma: no cover - compiled
    """`1 / (1 + exp(-x))`, without overflow: `e / (1 + e)` with `e = exp(x)` for negative `x`."""
    c = dt.type
    e = _exp_neg(abs(x), dt)
    s = c(1.0) / (c(1.0) + e)
    return s if x >= c(0.0) else e * s


@njit(**_INLINE)
def _tanh(x, dt):  # pragma: no cover - compiled
    """`tanh(x) = -sign(x) d / (2 + d)` with `d = exp(-2|x|) - 1`: accurate near 0, exact +-1 when
    saturated."""
    c = dt.type
    d = _expm1_neg(c(2.0) * abs(x), dt)
    t = c(0.0) - d / (c(2.0) + d)  # (0 - ..., not -...: tanh(0) = +0)
    return t if x >= c(0.0) else -t


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


@njit(**_JIT)
def _gemv_acc2(w, v, u, z, y):  # pragma: no cover - compiled
    """`z += v @ w` and `y += u @ w` together: each row of `w` is loaded once for two vectors."""
    K, N = w.shape
    k = 0
    while k + 4 <= K:
        a0 = v[k]
        a1 = v[k + 1]
        a2 = v[k + 2]
        a3 = v[k + 3]
        b0 = u[k]
        b1 = u[k + 1]
        b2 = u[k + 2]
        b3 = u[k + 3]
        w0 = w[k]
        w1 = w[k + 1]
        w2 = w[k + 2]
        w3 = w[k + 3]
        for n in range(N):
            x0 = w0[n]
            x1 = w1[n]
            x2 = w2[n]
            x3 = w3[n]
            z[n] += x0 * a0 + x1 * a1 + x2 * a2 + x3 * a3
            y[n] += x0 * b0 + x1 * b1 + x2 * b2 + x3 * b3
        k += 4
    while k < K:
        a0 = v[k]
        b0 = u[k]
        w0 = w[k]
        for n in range(N):
            z[n] += w0[n] * a0
            y[n] += w0[n] * b0
        k += 1


# ----------------------------------------------------------------------------------------------------
# One cell, forward and backward (per sequence; all arrays 1-D rows)
# ----------------------------------------------------------------------------------------------------
@njit(**_JIT)
def _cell_forward(z, h, c, peep, dt):  # pragma: no cover - compiled
    """From pre-activations `z` (4H,) and `c = c_{t-1}` to `h_t`, `c_t` (written into `h`, `c`);
    `z` is overwritten by the gate activations `[i, f, g, o]`."""
    H = h.shape[0]
    for j in range(H):
        cp = c[j]
        i = _sigmoid(z[j] + peep[0, j] * cp, dt)
        f = _sigmoid(z[H + j] + peep[1, j] * cp, dt)
        g = _tanh(z[2 * H + j], dt)
        cn = f * cp + i * g
        o = _sigmoid(z[3 * H + j] + peep[2, j] * cn, dt)
        h[j] = o * _tanh(cn, dt)
        c[j] = cn
        z[j] = i
        z[H + j] = f
        z[2 * H + j] = g
        z[3 * H + j] = o


@njit(**_JIT)
def _cell_backward(a, ct, cp, peep, gy, dh, dc, dz, dpeep, dt):  # pragma: no cover - compiled
    """One step of BPTT (equations in the module docstring).

    `a` (4H,) gate activations, `ct`/`cp` (H,) `c_t`/`c_{t-1}`, `gy` (H,) the output gradient; `dh`,
    `dc` (H,) hold the gradients from step t+1 on entry, `dc` the one reaching `c_{t-1}` through the
    cell path on exit (the `W_hh` part of `dh` is added by the caller). Writes `dz` (4H,) and adds the
    peephole gradients to `dpeep` (3, H).
    """
    H = dh.shape[0]
    one = dt.type(1.0)
    for j in range(H):
        i = a[j]
        f = a[H + j]
        g = a[2 * H + j]
        o = a[3 * H + j]
        c1 = ct[j]
        c0 = cp[j]
        tc = _tanh(c1, dt)
        dhj = gy[j] + dh[j]
        dzo = dhj * tc * o * (one - o)
        dcj = dc[j] + dhj * o * (one - tc * tc) + dzo * peep[2, j]
        dzi = dcj * g * i * (one - i)
        dzf = dcj * c0 * f * (one - f)
        dzg = dcj * i * (one - g * g)
        dc[j] = dcj * f + dzi * peep[0, j] + dzf * peep[1, j]
        dpeep[0, j] += dzi * c0
        dpeep[1, j] += dzf * c0
        dpeep[2, j] += dzo * c1
        dz[j] = dzi
        dz[H + j] = dzf
        dz[2 * H + j] = dzg
        dz[3 * H + j] = dzo


# ----------------------------------------------------------------------------------------------------
# Kernels (private: they trust their inputs; the wrappers below check them)
# ----------------------------------------------------------------------------------------------------
@njit(**_PJIT)
def _lstm_forward(gx, h0, c0, whh_t, peep, save, y, h_n, c_n, c_all, acts):  # pragma: no cover - compiled
    """The scan over `gx` (B, T, 4H) from `h0`, `c0` (B, H) with `whh_t = W_hh^T` (H, 4H).

    Writes `y` (B, T, H), the final `h_n`, `c_n` (B, H) and, if `save`, every `c_t` into `c_all`
    (B, T, H) and the gate activations into `acts` (B, T, 4H) for the backward. Sequences `a = b0`
    and `b = b0 + 1` go together; each has its own 1-D work arrays (rows of one 2-D array would
    keep LLVM from vectorising the gate loop).
    """
    B, T, G = gx.shape
    H = G // 4
    dt = gx.dtype
    for blk in prange((B + 1) // 2):
        a = 2 * blk
        b = a + 1
        two = b < B
        # (`.copy()` inside `prange` yields arrays of unknown layout, which do not vectorise)
        ha = np.empty(H, dt)
        ca = np.empty(H, dt)
        hb = np.empty(H, dt)
        cb = np.empty(H, dt)
        za = np.empty(G, dt)
        zb = np.empty(G, dt)
        ha[:] = h0[a]
        ca[:] = c0[a]
        if two:
            hb[:] = h0[b]
            cb[:] = c0[b]
        for t in range(T):
            za[:] = gx[a, t]
            if two:
                zb[:] = gx[b, t]
                _gemv_acc2(whh_t, ha, hb, za, zb)
            else:
                _gemv_acc(whh_t, ha, za)
            _cell_forward(za, ha, ca, peep, dt)
            y[a, t] = ha
            if save:
                c_all[a, t] = ca
                acts[a, t] = za
            if two:
                _cell_forward(zb, hb, cb, peep, dt)
                y[b, t] = hb
                if save:
                    c_all[b, t] = cb
                    acts[b, t] = zb
        h_n[a] = ha
        c_n[a] = ca
        if two:
            h_n[b] = hb
            c_n[b] = cb


@njit(**_PJIT)
def _lstm_backward(gy, gh_n, gc_n, c0, whh, peep, c_all, acts, dz_all, dh0, dc0, dpeep):  # pragma: no cover
    """BPTT through the scan `_lstm_forward` saved (`c_all`, `acts`).

    `gy` (B, T, H), `gh_n`, `gc_n` (B, H): gradients of the outputs. Writes `dz_all` (B, T, 4H) (the
    gradient of the pre-activations, i.e. of `gx`), `dh0`, `dc0` (B, H) and the peephole gradient
    `dpeep` (3, H). `whh` is `W_hh` (4H, H) as stored. Sequences go in pairs as in the forward.
    """
    B, T, G = acts.shape
    H = G // 4
    dt = acts.dtype
    nblk = (B + 1) // 2
    dpeep_blk = np.empty((nblk, 3, H), dt)
    for blk in prange(nblk):
        a = 2 * blk
        b = a + 1
        two = b < B
        dp = np.zeros((3, H), dt)
        dha = np.empty(H, dt)
        dca = np.empty(H, dt)
        dhb = np.empty(H, dt)
        dcb = np.empty(H, dt)
        dza = np.empty(G, dt)
        dzb = np.empty(G, dt)
        dha[:] = gh_n[a]
        dca[:] = gc_n[a]
        if two:
            dhb[:] = gh_n[b]
            dcb[:] = gc_n[b]
        for s in range(T):
            t = T - 1 - s
            cpa = c_all[a, t - 1] if t > 0 else c0[a]
            _cell_backward(acts[a, t], c_all[a, t], cpa, peep, gy[a, t], dha, dca, dza, dp, dt)
            dz_all[a, t] = dza
            dha[:] = 0
            if two:
                cpb = c_all[b, t - 1] if t > 0 else c0[b]
                _cell_backward(acts[b, t], c_all[b, t], cpb, peep, gy[b, t], dhb, dcb, dzb, dp, dt)
                dz_all[b, t] = dzb
                dhb[:] = 0
                _gemv_acc2(whh, dza, dzb, dha, dhb)
            else:
                _gemv_acc(whh, dza, dha)
        dh0[a] = dha
        dc0[a] = dca
        if two:
            dh0[b] = dhb
            dc0[b] = dcb
        dpeep_blk[blk] = dp
    dpeep[:] = 0
    for blk in range(nblk):
        dpeep += dpeep_blk[blk]


# ----------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------
def _np(t: Tensor) -> np.ndarray:
    """A numpy view of `t` (a contiguous copy if it is not contiguous), cut from the graph."""
    return t.detach().contiguous().numpy()


def _zeros_peephole(hidden_size: int, dtype: torch.dtype) -> np.ndarray:
    return np.zeros((3, hidden_size), dtype=np.float32 if dtype == torch.float32 else np.float64)


class _LSTMRecurrence(torch.autograd.Function):
    """The recurrence of the LSTM over pre-computed input projections, with BPTT as its backward.

    Inputs: `gx` (B, T, 4H) (`W_ih x_t + b_ih + b_hh`), `h0`, `c0` (B, H), `weight_hh` (4H, H),
    `weight_peephole` (3, H) or `None`. Outputs: `y` (B, T, H), `h_n`, `c_n` (B, H).
    """

    @staticmethod
    def forward(
        ctx: Any, gx: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, weight_peephole: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        B, T, G = gx.shape
        H = G // 4
        peep = _np(weight_peephole) if weight_peephole is not None else _zeros_peephole(H, gx.dtype)
        gx_np = _np(gx)
        dtype = gx_np.dtype
        y = np.empty((B, T, H), dtype)
        h_n = np.empty((B, H), dtype)
        c_n = np.empty((B, H), dtype)
        c_all = np.empty((B, T, H), dtype)
        acts = np.empty((B, T, G), dtype)
        whh_t = np.ascontiguousarray(_np(weight_hh).T)  # (H, 4H)
        _lstm_forward(gx_np, _np(h0), _np(c0), whh_t, peep, True, y, h_n, c_n, c_all, acts)
        y_t = torch.from_numpy(y)
        ctx.save_for_backward(h0, c0, weight_hh, weight_peephole, y_t)
        ctx.saved_arrays = (peep, c_all, acts)
        return y_t, torch.from_numpy(h_n), torch.from_numpy(c_n)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, gy: Tensor, gh_n: Tensor, gc_n: Tensor
    ) -> tuple[Tensor | None, ...]:
        h0, c0, weight_hh, weight_peephole, y = ctx.saved_tensors
        peep, c_all, acts = ctx.saved_arrays
        B, T, G = acts.shape
        H = G // 4
        dz = np.empty((B, T, G), acts.dtype)
        dh0 = np.empty((B, H), acts.dtype)
        dc0 = np.empty((B, H), acts.dtype)
        dpeep = np.empty((3, H), acts.dtype)
        _lstm_backward(
            _np(gy), _np(gh_n), _np(gc_n), _np(c0), _np(weight_hh), peep, c_all, acts, dz, dh0, dc0, dpeep
        )
        dz_t = torch.from_numpy(dz)
        d_whh = None
        if ctx.needs_input_grad[3]:
            h_prev = torch.cat((h0.detach().unsqueeze(1), y[:, :-1]), dim=1)  # (B, T, H): h_{t-1}
            d_whh = dz_t.reshape(B * T, G).t().mm(h_prev.reshape(B * T, H))  # (4H, H)
        d_peep = torch.from_numpy(dpeep) if weight_peephole is not None and ctx.needs_input_grad[4] else None
        return dz_t, torch.from_numpy(dh0), torch.from_numpy(dc0), d_whh, d_peep


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
    if not isinstance(x, Tensor) or not isinstance(weight_ih, Tensor) or not isinstance(weight_hh, Tensor):
        raise TypeError(f"{where}: x, weight_ih and weight_hh must be torch.Tensors")
    if weight_hh.dim() != 2 or weight_hh.shape[0] != 4 * weight_hh.shape[1]:
        raise ValueError(
            f"{where}: weight_hh must have shape (4 * hidden_size, hidden_size), got {tuple(weight_hh.shape)}"
        )
    H = weight_hh.shape[1]
    if weight_ih.dim() != 2 or weight_ih.shape[0] != 4 * H:
        raise ValueError(
            f"{where}: weight_ih must have shape ({4 * H}, input_size), got {tuple(weight_ih.shape)}"
        )
    I = weight_ih.shape[1]
    want = f"(batch, seq_len, {I})" if x_rank == 3 else f"(batch, {I})"
    if x.dim() != x_rank or x.shape[-1] != I:
        raise ValueError(f"{where}: x must have shape {want}, got {tuple(x.shape)}")
    if x.shape[0] == 0 or (x_rank == 3 and x.shape[1] == 0):
        raise ValueError(f"{where}: x must hold at least one sequence and one step, got {tuple(x.shape)}")
    dtype = weight_hh.dtype
    if dtype not in _DTYPES:
        raise TypeError(f"{where}: backend 'numba' supports float32 and float64, got {dtype}")
    named = [("x", x), ("weight_ih", weight_ih), ("bias_ih", bias_ih), ("bias_hh", bias_hh),
             ("weight_peephole", weight_peephole)]
    if state is not None:
        named += [("state.h", state[0]), ("state.c", state[1])]
    for name, t in named:
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.dtype != dtype:
            raise TypeError(f"{where}: {name} has dtype {t.dtype} but weight_hh has {dtype}")
    for name, t in named + [("weight_hh", weight_hh)]:
        if t is not None and t.device.type != "cpu":
            raise ValueError(f"{where}: backend 'numba' runs on the CPU only, got {name} on {t.device}")
    for name, t in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if t is not None and tuple(t.shape) != (4 * H,):
            raise ValueError(f"{where}: {name} must have shape ({4 * H},), got {tuple(t.shape)}")
    if weight_peephole is not None and tuple(weight_peephole.shape) != (3, H):
        raise ValueError(
            f"{where}: weight_peephole must have shape (3, {H}), got {tuple(weight_peephole.shape)}"
        )
    if state is not None:
        B = x.shape[0]
        for name, t in (("h", state[0]), ("c", state[1])):
            if tuple(t.shape) != (B, H):
                raise ValueError(f"{where}: state.{name} must have shape ({B}, {H}), got {tuple(t.shape)}")


def _combined_bias(bias_ih: Tensor | None, bias_hh: Tensor | None) -> Tensor | None:
    if bias_ih is None:
        return bias_hh
    if bias_hh is None:
        return bias_ih
    return bias_ih + bias_hh


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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

    Same signature and results as the reference `seqmem.lstm.reference.lstm_scan`. The input projection
    of all steps is one torch matrix product; the recurrence runs in a Numba kernel, and its backward
    (used when grad mode is on and an input requires grad) is BPTT written out by hand (equations in
    this module's docstring).

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
    B, T, _ = x.shape
    H = weight_hh.shape[1]
    if initial_state is None:
        h0 = c0 = x.new_zeros(B, H)
    else:
        h0, c0 = initial_state
    gx = F.linear(x, weight_ih, _combined_bias(bias_ih, bias_hh))  # (B, T, 4H)
    if _needs_grad(gx, h0, c0, weight_hh, weight_peephole):
        y, h, c = _LSTMRecurrence.apply(gx, h0, c0, weight_hh, weight_peephole)
        return y, LSTMState(h, c)
    peep = _np(weight_peephole) if weight_peephole is not None else _zeros_peephole(H, x.dtype)
    gx_np = _np(gx)
    dtype = gx_np.dtype
    y = np.empty((B, T, H), dtype)
    h_n = np.empty((B, H), dtype)
    c_n = np.empty((B, H), dtype)
    unused = np.empty((1, 1, 1), dtype)
    whh_t = np.ascontiguousarray(_np(weight_hh).T)  # (H, 4H)
    _lstm_forward(gx_np, _np(h0), _np(c0), whh_t, peep, False, y, h_n, c_n, unused, unused)
    return torch.from_numpy(y), LSTMState(torch.from_numpy(h_n), torch.from_numpy(c_n))


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
