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

- $\sigma$ and $\tanh$ are the kernel toolkit's (`seqmem._kernels`): arithmetic only, in the
  arrays' precision, so that LLVM vectorises the gate loop (about 1 ns per sigmoid in float32 against
  25 ns for libm's scalar `exp`); within about 2 ulp, exact when saturated ($\sigma(\pm 10^4) \in
  \{1, 0\}$, $\tanh(\pm 10^4) = \pm 1$), NaN kept.
- The recurrent product $W_{hh} h$ is written as a sum of rows of $W_{hh}^\top$ (an "axpy" loop that
  LLVM vectorises without reassociating floating-point sums; `fastmath` is never used), four rows of
  $W^\top$ and two sequences of the batch at a time to reuse loads.
- The scan kernels run `prange` over pairs of sequences of the batch (they are independent for the
  whole scan), so there is no synchronisation inside the time loop.
- The gate loops (`_cell_forward`, `_cell_backward`) and the products are separate compiled functions
  that the kernels call, not inlined into them: the same speed, and a third of the compile time.
- `error_model="numpy"`: a division by zero gives inf/NaN as numpy does; Python's error model adds a
  zero check to every division, which also blocks vectorisation.
- The streaming step (`lstm_step_numba` without autograd) is dominated by Python overhead, so it reads
  the tensors at their addresses (`_lstm_step_at`) instead of converting them to numpy, and keeps the
  transposed weights it needs between calls (`_StepPlan`).

References:
    Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8).
    Gers, F. A. & Schmidhuber, J. (2000). Recurrent nets that time and count. IJCNN (peepholes).
    Werbos, P. J. (1990). Backpropagation through time: what it does and how to do it. Proc. IEEE 78(10).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._kernels import KERNEL as _JIT
from .._kernels import NP_DTYPES as _NP_DTYPES
from .._kernels import PKERNEL as _PJIT
from .._kernels import _check_recurrent_args, _needs_grad, _np, _sigmoid, _tanh
from .._numba import intrinsic, njit, numba, prange
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
        tc = _tanh(c1)
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
            _cell_forward(za, ha, ca, peep)
            y[a, t] = ha
            if save:
                c_all[a, t] = ca
                acts[a, t] = za
            if two:
                _cell_forward(zb, hb, cb, peep)
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


@njit(**_JIT)
def _lstm_step(x, h, c, wih_t, whh_t, bias, peep, h_out, c_out):  # pragma: no cover - compiled
    """One step for a batch: `x` (B, I), `h`, `c` (B, H), `wih_t = W_ih^T` (I, 4H), `whh_t = W_hh^T`
    (H, 4H), `bias = b_ih + b_hh` (4H,), `peep` (3, H). Writes `h_out`, `c_out` (B, H)."""
    B, H = h.shape
    dt = h.dtype
    G = 4 * H
    ha = np.empty(H, dt)
    ca = np.empty(H, dt)
    za = np.empty(G, dt)
    hb = np.empty(H, dt)
    cb = np.empty(H, dt)
    zb = np.empty(G, dt)
    for a in range(0, B, 2):
        b = a + 1
        za[:] = bias
        ca[:] = c[a]
        if b < B:
            zb[:] = bias
            cb[:] = c[b]
            _gemv_acc2(wih_t, x[a], x[b], za, zb)
            _gemv_acc2(whh_t, h[a], h[b], za, zb)
            _cell_forward(zb, hb, cb, peep)
            h_out[b] = hb
            c_out[b] = cb
        else:
            _gemv_acc(wih_t, x[a], za)
            _gemv_acc(whh_t, h[a], za)
        _cell_forward(za, ha, ca, peep)
        h_out[a] = ha
        c_out[a] = ca


@intrinsic
def _address_as_pointer(typingctx, address):  # pragma: no cover - compiled
    """An integer address (`Tensor.data_ptr()`) as a `void*`, for `numba.carray`."""
    if not isinstance(address, numba.core.types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], numba.core.cgutils.voidptr_t)

    return numba.core.types.voidptr(address), codegen


@njit(**_JIT)
def _lstm_step_at(px, ph, pc, ph_out, pc_out, B, I, H, packed):  # pragma: no cover - compiled
    """`_lstm_step` on tensors given by the addresses of their (contiguous, CPU) data, so that the
    streaming path needs no `Tensor.numpy()` (about 0.7 us each). `packed` holds
    `[W_ih^T | W_hh^T | b_ih + b_hh | peepholes]` flattened (see `_StepPlan`)."""
    dt = packed.dtype
    G = 4 * H
    x = numba.carray(_address_as_pointer(px), (B, I), dt)
    h = numba.carray(_address_as_pointer(ph), (B, H), dt)
    c = numba.carray(_address_as_pointer(pc), (B, H), dt)
    h_out = numba.carray(_address_as_pointer(ph_out), (B, H), dt)
    c_out = numba.carray(_address_as_pointer(pc_out), (B, H), dt)
    o1 = I * G
    o2 = o1 + H * G
    o3 = o2 + G
    _lstm_step(x, h, c, packed[:o1].reshape(I, G), packed[o1:o2].reshape(H, G), packed[o2:o3],
               packed[o3:o3 + 3 * H].reshape(3, H), h_out, c_out)


# ----------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------
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


class _StepPlan:
    """What the streaming step needs from a set of parameters, built once and rebuilt on change.

    `packed` is `[W_ih^T | W_hh^T | b_ih + b_hh | peepholes]` flattened (the transposes make the
    matrix-vector products vectorise). The plan keeps the parameters' version counters and data
    addresses, and is rebuilt when one differs: every in-place op bumps a version (optimiser steps,
    `copy_`, `load_state_dict`), and `param.data = ...` changes an address. Writes through
    `param.data.<op>_()` bypass both: after those, call `clear_step_cache()`.

    It also remembers its last output state, whose tensors it made, so the next step need not check
    them again.
    """

    __slots__ = (
        "others", "stamp", "packed", "arrays", "dtype", "input_size", "hidden_size",
        "last", "pool", "pool_batch",
    )  # fmt: skip

    def __init__(self, params: tuple[Tensor | None, ...]) -> None:
        weight_ih, weight_hh, bias_ih, bias_hh, weight_peephole = params
        self.others = (weight_ih, bias_ih, bias_hh, weight_peephole)  # identity checks (kept alive)
        self.stamp = _stamp(params)
        I, H = weight_ih.shape[1], weight_hh.shape[1]
        self.dtype = weight_hh.dtype
        self.input_size = I
        self.hidden_size = H
        with torch.no_grad():
            bias = _combined_bias(bias_ih, bias_hh)
            peep = _zeros_peephole(H, self.dtype) if weight_peephole is None else _np(weight_peephole)
            parts = [
                _np(weight_ih).T.ravel(),  # (I, 4H)
                _np(weight_hh).T.ravel(),  # (H, 4H)
                np.zeros(4 * H, _NP_DTYPES[self.dtype]) if bias is None else _np(bias),  # (4H,)
                peep.ravel(),  # (3, H)
            ]
        self.packed = np.concatenate(parts)
        o1, o2, o3 = I * 4 * H, (I + H) * 4 * H, (I + H + 1) * 4 * H
        p = self.packed
        self.arrays = (p[:o1].reshape(I, 4 * H), p[o1:o2].reshape(H, 4 * H), p[o2:o3], p[o3:].reshape(3, H))
        self.last: tuple[Any, ...] = (None, None, 0, 0)
        self.pool: list[tuple[Tensor, int]] = []
        self.pool_batch = 0

    def new_states(self, B: int) -> tuple[Tensor, int, Tensor, int]:
        """Two fresh `(B, H)` tensors and their data addresses.

        Tensors are made in chunks: one `unbind` of an `(n, B, H)` tensor costs far less than `n`
        allocations. A chunk's memory stays alive while any of its tensors does, so chunks are small
        (at most 64 KiB, or two states).
        """
        pool = self.pool
        if not pool or self.pool_batch != B:
            H, dtype = self.hidden_size, self.dtype
            nbytes = B * H * (4 if dtype == torch.float32 else 8)
            n = max(2, min(64, 65536 // nbytes)) // 2 * 2
            chunk = torch.empty(n, B, H, dtype=dtype)
            base = chunk.data_ptr()
            pool = self.pool = [(t, base + i * nbytes) for i, t in enumerate(chunk.unbind(0))]
            self.pool_batch = B
        h, ph = pool.pop()
        c, pc = pool.pop()
        return h, ph, c, pc


def _stamp(params: tuple[Tensor | None, ...]) -> tuple[int, ...] | object:
    """The versions and data addresses of the parameters (a fresh object, equal to nothing, for
    inference tensors, which have no version counter)."""
    weight_ih, weight_hh, bias_ih, bias_hh, weight_peephole = params
    try:
        return (
            weight_ih._version, weight_ih.data_ptr(), weight_hh._version, weight_hh.data_ptr(),
            -1 if bias_ih is None else bias_ih._version, -1 if bias_ih is None else bias_ih.data_ptr(),
            -1 if bias_hh is None else bias_hh._version, -1 if bias_hh is None else bias_hh.data_ptr(),
            -1 if weight_peephole is None else weight_peephole._version,
            -1 if weight_peephole is None else weight_peephole.data_ptr(),
        )  # fmt: skip
    except RuntimeError:
        return object()


_STEP_PLANS: dict[int, _StepPlan] = {}  # id(weight_hh) -> plan; an entry leaves when weight_hh dies


def clear_step_cache() -> None:
    """Forget the prepared weights of `lstm_step_numba` (needed only after writes through
    `param.data`, which torch does not count as modifications)."""
    _STEP_PLANS.clear()


def _step_plan(params: tuple[Tensor | None, ...]) -> _StepPlan:
    """The plan for these (already checked) parameters, built if missing or stale."""
    weight_hh = params[1]
    key = id(weight_hh)
    plan = _STEP_PLANS.get(key)
    if plan is None or plan.others != (params[0], *params[2:]) or plan.stamp != _stamp(params):
        if plan is None:
            weakref.finalize(weight_hh, _STEP_PLANS.pop, key, None)
        plan = _STEP_PLANS[key] = _StepPlan(params)
    return plan


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

    Without autograd (grad mode off, or no input requiring grad) this is a lean path for streaming
    inference: one Numba call on weights prepared once per parameter set (transposed and packed;
    rebuilt when a parameter changes, see `clear_step_cache`), reading the tensors' memory in place.
    With autograd it runs `lstm_scan_numba` on a sequence of one step, so the result is differentiable.

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
    h, c = state
    params = (weight_ih, weight_hh, bias_ih, bias_hh, weight_peephole)
    if torch.is_grad_enabled() and _needs_grad(x_t, h, c, *params):
        # differentiable: the scan's autograd Function on a sequence of one step
        _check_args("lstm_step_numba", x_t, 2, *params, state)
        return lstm_scan_numba(x_t.unsqueeze(1), *params, initial_state=state)[1]
    # The fast path: the parameters are checked by identity and version against the plan, the
    # tensors by a few attribute reads (or by identity, for the state the plan made last).
    plan = _STEP_PLANS.get(id(weight_hh))
    if (
        _FAST_STEP
        and plan is not None
        and plan.others[0] is weight_ih
        and plan.others[1] is bias_ih
        and plan.others[2] is bias_hh
        and plan.others[3] is weight_peephole
        and plan.stamp == _stamp(params)
    ):
        dtype, I, H = plan.dtype, plan.input_size, plan.hidden_size
        B = x_t.shape[0] if isinstance(x_t, Tensor) and x_t.dim() == 2 else 0
        if B and _plain(x_t, dtype, (B, I)):
            last_h, last_c, ph, pc = plan.last
            if h is not last_h or c is not last_c:
                shape = (B, H)
                ok = all(_plain(t, dtype, shape) for t in state)
                ph, pc = (h.data_ptr(), c.data_ptr()) if ok else (0, 0)
            if ph:
                h_out, ph_out, c_out, pc_out = plan.new_states(B)
                _lstm_step_at(x_t.data_ptr(), ph, pc, ph_out, pc_out, B, I, H, plan.packed)
                plan.last = (h_out, c_out, ph_out, pc_out)
                return LSTMState(h_out, c_out)
    # the general path: full checks (with clear errors), any memory layout
    _check_args("lstm_step_numba", x_t, 2, *params, state)
    wih_t, whh_t, bias, peep = _step_plan(params).arrays
    h_out = np.empty(tuple(h.shape), whh_t.dtype)
    c_out = np.empty(tuple(h.shape), whh_t.dtype)
    _lstm_step(_np(x_t), _np(h), _np(c), wih_t, whh_t, bias, peep, h_out, c_out)
    return LSTMState(torch.from_numpy(h_out), torch.from_numpy(c_out))


def _plain(t: Tensor, dtype: torch.dtype, shape: tuple[int, int]) -> bool:
    """Whether the kernel can read `t` at its address: a contiguous CPU tensor of that dtype and shape."""
    return t.dtype is dtype and t.is_cpu and t.is_contiguous() and t.shape == shape


_FAST_STEP = not numba.config.DISABLE_JIT  # the address path needs compiled code
