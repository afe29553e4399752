r"""The selective scan on the CPU with Numba: forward scan, step and a hand-derived backward.

The same diagonal state-space recurrence as `reference.py`, for batch `b`, channel `d`, state `n`,
steps `t = 1..L` (`h_0` the initial state):

    x_t = delta_t A,   Abar_t = exp(x_t),   h_t = Abar_t h_{t-1} + delta_t B_t u_t,
    y_t = sum_n C_t h_t + D u_t                                                        (1)

*Selective*: `B_t, C_t` are `(batch, seq_len, d_state)`, shared by the channels. *LTI*: `B, C` are
`(d_inner, d_state)`, shared by batch and time (`delta` still varies with `t`).

Backward. With `L` the loss, `gy_t = dL/dy_t`, and `g_t = dL/dh_t` the *total* gradient reaching
`h_t` (from `y_t` and from step t+1), going from t = L down to 1 (all products elementwise):

    g_L     = dL/dh_L + C_L gy_L                        (the final state is an output too)
    g_{t-1} = Abar_t g_t + C_{t-1} gy_{t-1},            dL/dh_0 = Abar_1 g_1           (2)

and every parameter collects its share at step t (`q_t = g_t Abar_t h_{t-1}` is `dL/dx_t`):

    dL/du_t     = D gy_t + delta_t sum_n g_t B_t
    dL/ddelta_t = sum_n (q_t A + g_t B_t u_t)
    dL/dA       = sum_{b,t} q_t delta_t
    dL/dB_t     = sum_d g_t delta_t u_t        (LTI: dL/dB = sum_{b,t} g_t delta_t u_t)
    dL/dC_t     = sum_d gy_t h_t               (LTI: dL/dC = sum_{b,t} gy_t h_t)
    dL/dD       = sum_{b,t} gy_t u_t                                                   (3)

Memory. The backward needs `h_{t-1}` at every step. Storing all states is `(batch, seq_len,
d_inner, d_state)` (128 MiB in float32 for 8 x 1024 x 256 x 16), and running the recurrence
backwards from `h_L` (`h_{t-1} = (h_t - delta_t B_t u_t) / Abar_t`) is unsafe: `Abar_t` underflows to 0
for a large `delta_t`, and the division amplifies rounding by `1 / Abar_t` at every step. So the
forward pass keeps one state every `K = ceil(sqrt(seq_len))` steps (checkpoints,
`(batch, L / K, d_state, d_inner)`, 4 MiB in the case above), and the backward pass re-runs each chunk
of `K` steps from its checkpoint into a scratch of `K` states and `K` decays per work item before
sweeping it backwards (Chen et al. 2016; the recomputation of Mamba's hardware-aware scan, Gu & Dao
2023, Sec. 3.3). Extra work: one forward pass; extra memory: `O(batch d_inner d_state sqrt(L))`.

Kernels. Work items are `(batch, block of up to 256 channels)`, run with `prange` (on one thread
when the problem is small: waking threads costs more). Inside an item the innermost loop runs over
the contiguous channel axis (`u`, `delta`, `y` are `(B, L, D)` in memory) with the state kept as
`(d_state, block)`, so the compiler vectorises it (AVX2/AVX-512); along `d_state` (16) every step
would end in a horizontal sum. Three details keep those loops vectorised: channel indices are
unsigned (no negative-index wrap-around test); the arrays are arguments of the `prange` body, which
Numba marks `noalias` when its alias analysis finds no views, so LLVM needs no run-time overlap
checks; and `exp(delta A)`, computed once per `(t, d, n)`, is the kernel toolkit's `_exp`
(`seqmem._kernels`: a branch-free exponential, Cody-Waite reduction by `ln 2` and a Taylor
polynomial, within 2 ulp) instead of libm's scalar `exp`, which alone would cost more than the rest
of the update. Products are fused (`_fma`, the LLVM intrinsic; plain Python under
`NUMBA_DISABLE_JIT=1`). The backward's sums over channels
(selective `dB`, `dC`) are kept in 16 lane-wise partial sums reduced pairwise, so no reassociating
fast-math flag is needed; `dL/dD` is a plain reduction left to torch. The backward pads the channel
axis to a multiple of 16 (a copy only when `d_inner % 16 != 0`).

References:
    Gu, A. & Dao, T. (2023). Mamba: linear-time sequence modeling with selective state spaces.
    arXiv:2312.00752, eq. (2a)-(2b) and (4), Algorithm 2 (S6), Sec. 3.3 (hardware-aware
    scan with recomputation; the kernel here is a serial scan per channel on the CPU).
    Chen, T., Xu, B., Zhang, C. & Guestrin, C. (2016). Training deep nets with sublinear memory
    cost. arXiv:1604.06174.
    Cody, W. J. & Waite, W. (1980). Software Manual for the Elementary Functions (argument
    reduction of exp).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._kernels import KERNEL, PKERNEL, _check_shape, _check_tensors, _exp, _fma, _np
from .._numba import njit, numba, parallel_launch, prange

__all__ = ["selective_scan_numba", "selective_scan_step_numba"]

_LANES = 16
"""Channels per vector lane group: blocks and the padded channel axis are multiples of it."""

_MAX_BLOCK = 256
"""Most channels per work item (the state block `(d_state, block)` stays in L1/L2)."""

_PARALLEL_MIN_WORK = 1 << 17
"""Fewer state updates (batch x seq_len x d_inner x d_state) than this run on one thread: waking
the other threads would cost more than the work (much more on a loaded machine)."""


# ====================================================================== kernels
@njit(**KERNEL)
def _step_kernel(u, dt, A, Bm, Cm, Dv, h, y, h_out):  # pragma: no cover - compiled
    """One step, serial: `h' = exp(dt A) h + dt B u`, `y = C . h' + D u`. `Bm`, `Cm` are
    `(batch, 1, N)` (selective) or `(1, d_inner, N)` (LTI); writes `y (batch, d_inner)`, `h_out`."""
    Bz, Din = u.shape
    N = A.shape[1]
    for b in range(Bz):
        bi = b if Bm.shape[0] > 1 else 0
        for d in range(Din):
            di = d if Bm.shape[1] > 1 else 0
            delta = dt[b, d]
            ud = u[b, d]
            acc = Dv[d] * ud
            for n in range(N):
                hv = _exp(delta * A[d, n]) * h[b, d, n] + delta * Bm[bi, di, n] * ud
                h_out[b, d, n] = hv
                acc += hv * Cm[bi, di, n]
            y[b, d] = acc


@njit(**PKERNEL)
def _scan_forward(
    u, delta, At, Bm, Cm, lti, Dv, h0, y, hT, ckpt, chunk, block, H, R,
):  # pragma: no cover  # fmt: skip
    """Forward scan (1) over every `(batch, channel block)` work item.

    u, delta `(Bz, L, D)`; At `(N, D)` (A transposed); Bm, Cm `(Bz, L, N)` selective or `(1, N, D)`
    LTI (transposed), as `lti` says; Dv `(D,)` (zeros for no skip); h0 `(Bz, D, N)`.
    Writes y `(Bz, L, D)`, hT `(Bz, D, N)` and, if `ckpt` has a time axis, the state before every
    `chunk`-th step into ckpt `(Bz, ceil(L / chunk), N, Dp)`. H `(items, N, block)` is scratch.
    """
    Bz, L, D = u.shape
    N = At.shape[0]
    nblk = (D + block - 1) // block
    save = ckpt.shape[1] > 0
    for item in prange(Bz * nblk):
        b = item // nblk
        d0 = (item - b * nblk) * block
        w = min(block, D - d0)
        d0u = np.uint64(d0)  # unsigned indices: no wrap-around test, so the j loops vectorise
        for n in range(N):
            for j in range(w):
                H[item, n, j] = h0[b, d0u + np.uint64(j), n]
        for t in range(L):
            if save and t % chunk == 0:
                c = t // chunk
                for n in range(N):
                    for j in range(w):
                        ckpt[b, c, n, d0u + np.uint64(j)] = H[item, n, j]
            for j in range(w):
                jj = d0u + np.uint64(j)
                y[b, t, jj] = Dv[jj] * u[b, t, jj]
                R[item, j] = delta[b, t, jj] * u[b, t, jj]
            for n in range(N):
                if lti:
                    for j in range(w):
                        jj = d0u + np.uint64(j)
                        dt = delta[b, t, jj]
                        e = _exp(dt * At[n, jj])
                        hv = _fma(e, H[item, n, j], R[item, j] * Bm[0, n, jj])
                        H[item, n, j] = hv
                        y[b, t, jj] = _fma(Cm[0, n, jj], hv, y[b, t, jj])
                else:
                    bn = Bm[b, t, n]
                    cn = Cm[b, t, n]
                    for j in range(w):
                        jj = d0u + np.uint64(j)
                        dt = delta[b, t, jj]
                        e = _exp(dt * At[n, jj])
                        hv = _fma(e, H[item, n, j], R[item, j] * bn)
                        H[item, n, j] = hv
                        y[b, t, jj] = _fma(cn, hv, y[b, t, jj])
        for n in range(N):
            for j in range(w):
                hT[b, d0u + np.uint64(j), n] = H[item, n, j]


@njit(**PKERNEL)
def _scan_backward(
    u, delta, At, Bm, Cm, lti, Dv, gy, ghT, ckpt, chunk, block,
    du, ddelta, dA, dB, dC, dh0, Hs, Es, G, S, P,
):  # pragma: no cover  # fmt: skip
    """Backward sweep (2)-(3), re-running each chunk of `chunk` steps from its checkpoint.

    Inputs as `_scan_forward`, all with the channel axis padded to `Dp` (a multiple of 16 and of
    `block`'s lane groups), gy `(Bz, L, Dp)`, ghT `(Bz, Dp, N)`, ckpt `(Bz, n_chunks, N, Dp)`.
    Writes du, ddelta `(Bz, L, Dp)`; dA `(Bz, N, Dp)` (per batch row: summed by the caller); dB, dC:
    selective `(n_blocks, Bz, L, N)` per channel block, LTI `(1, Bz, N, Dp)`;
    dh0 `(Bz, Dp, N)`. Scratch per item: Hs `(items, chunk + 1, N, block)` states, Es
    `(items, chunk, N, block)` decays, G `(items, N, block)` the carried gradient `Abar_{t+1} g_{t+1}`,
    S `(items, 2, block)` sums over n, P `(items, 2, 16)` lane partial sums. All outputs and
    scratch start at zero.
    """
    Bz, L, Dp = u.shape
    N = At.shape[0]
    nblk = (Dp + block - 1) // block
    nck = ckpt.shape[1]
    for item in prange(Bz * nblk):
        b = item // nblk
        blk = item - b * nblk
        d0 = blk * block
        w = min(block, Dp - d0)  # a multiple of _LANES
        d0u = np.uint64(d0)
        for n in range(N):
            for j in range(w):
                G[item, n, j] = ghT[b, d0u + np.uint64(j), n]
        for c in range(nck - 1, -1, -1):
            t0 = c * chunk
            t1 = min(L, t0 + chunk)
            # ---- re-run the chunk from its checkpoint: Hs[k + 1] = h_{t0 + k}, Es[k] = Abar_{t0 + k}
            for n in range(N):
                for j in range(w):
                    Hs[item, 0, n, j] = ckpt[b, c, n, d0u + np.uint64(j)]
            for t in range(t0, t1):
                k = t - t0
                for n in range(N):
                    if lti:
                        for j in range(w):
                            jj = d0u + np.uint64(j)
                            dt = delta[b, t, jj]
                            e = _exp(dt * At[n, jj])
                            Es[item, k, n, j] = e
                            Hs[item, k + 1, n, j] = _fma(
                                e, Hs[item, k, n, j], dt * u[b, t, jj] * Bm[0, n, jj]
                            )
                    else:
                        bn = Bm[b, t, n]
                        for j in range(w):
                            jj = d0u + np.uint64(j)
                            dt = delta[b, t, jj]
                            e = _exp(dt * At[n, jj])
                            Es[item, k, n, j] = e
                            Hs[item, k + 1, n, j] = _fma(e, Hs[item, k, n, j], dt * u[b, t, jj] * bn)
            # ---- sweep it backwards
            for t in range(t1 - 1, t0 - 1, -1):
                k = t - t0
                for j in range(w):
                    S[item, 0, j] = 0.0  # sum_n q_t A
                    S[item, 1, j] = 0.0  # sum_n g_t B_t
                for n in range(N):
                    if lti:
                        for j in range(w):
                            jj = d0u + np.uint64(j)
                            gyj = gy[b, t, jj]
                            dt = delta[b, t, jj]
                            g = _fma(gyj, Cm[0, n, jj], G[item, n, j])  # g_t
                            e = Es[item, k, n, j]
                            q = g * e * Hs[item, k, n, j]
                            dA[b, n, jj] = _fma(q, dt, dA[b, n, jj])
                            S[item, 0, j] = _fma(q, At[n, jj], S[item, 0, j])
                            S[item, 1, j] = _fma(g, Bm[0, n, jj], S[item, 1, j])
                            dB[0, b, n, jj] = _fma(g, dt * u[b, t, jj], dB[0, b, n, jj])
                            dC[0, b, n, jj] = _fma(gyj, Hs[item, k + 1, n, j], dC[0, b, n, jj])
                            G[item, n, j] = g * e
                    else:
                        bn = Bm[b, t, n]
                        cn = Cm[b, t, n]
                        for lane in range(_LANES):
                            P[item, 0, lane] = 0.0
                            P[item, 1, lane] = 0.0
                        for j0 in range(0, w, _LANES):
                            j0u = np.uint64(j0)
                            for lane in range(_LANES):
                                j = j0u + np.uint64(lane)
                                jj = d0u + j
                                gyj = gy[b, t, jj]
                                dt = delta[b, t, jj]
                                g = _fma(gyj, cn, G[item, n, j])
                                e = Es[item, k, n, j]
                                q = g * e * Hs[item, k, n, j]
                                dA[b, n, jj] = _fma(q, dt, dA[b, n, jj])
                                S[item, 0, j] = _fma(q, At[n, jj], S[item, 0, j])
                                S[item, 1, j] = _fma(g, bn, S[item, 1, j])
                                P[item, 0, lane] = _fma(g, dt * u[b, t, jj], P[item, 0, lane])
                                P[item, 1, lane] = _fma(gyj, Hs[item, k + 1, n, j], P[item, 1, lane])
                                G[item, n, j] = g * e
                        half = _LANES // 2
                        while half > 0:  # pairwise sum of the lanes
                            for lane in range(half):
                                P[item, 0, lane] += P[item, 0, lane + half]
                                P[item, 1, lane] += P[item, 1, lane + half]
                            half //= 2
                        dB[blk, b, t, n] = P[item, 0, 0]
                        dC[blk, b, t, n] = P[item, 1, 0]
                for j in range(w):
                    jj = d0u + np.uint64(j)
                    ddelta[b, t, jj] = _fma(u[b, t, jj], S[item, 1, j], S[item, 0, j])
                    du[b, t, jj] = _fma(delta[b, t, jj], S[item, 1, j], Dv[jj] * gy[b, t, jj])
        for n in range(N):
            for j in range(w):
                dh0[b, d0u + np.uint64(j), n] = G[item, n, j]


# ====================================================================== host side
def _block_width(batch: int, channels: int) -> int:
    """Channels per work item: up to `_MAX_BLOCK`, fewer when the batch alone leaves threads idle."""
    threads = max(1, numba.get_num_threads())
    blocks = max(-(-channels // _MAX_BLOCK), -(-threads // batch))
    width = -(-channels // blocks)
    return max(_LANES, -(-width // _LANES) * _LANES)


def _launch(kernel, work: int, items: int, *args) -> None:
    """Run `kernel(*args)`, on one thread when `work` (state updates) or `items` is too small to share.

    Launches are serialised between Python threads (`parallel_launch`: numba's workqueue layer aborts the
    process on concurrent parallel launches, single-threaded ones included). A serial twin of the kernels
    would run concurrently, but without the `noalias` arguments of the `prange` body its backward loops
    vectorise worse (measured 2x slower), so one lock it is.
    """
    threads = numba.get_num_threads()
    with parallel_launch():
        if threads == 1 or (work >= _PARALLEL_MIN_WORK and items > 1) or numba.config.DISABLE_JIT:
            kernel(*args)
            return
        numba.set_num_threads(1)  # thread-local: other threads' settings are untouched
        try:
            kernel(*args)
        finally:
            numba.set_num_threads(threads)


def _pad_channels(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """`a` zero-padded along `axis` to `size` (itself when already that size), C-contiguous."""
    if a.shape[axis] == size:
        return np.ascontiguousarray(a)
    shape = list(a.shape)
    shape[axis] = size
    out = np.zeros(shape, dtype=a.dtype)
    index = [slice(None)] * a.ndim
    index[axis] = slice(0, a.shape[axis])
    out[tuple(index)] = a
    return out


def _as_kernel_coefficients(B: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """B, C as the kernels read them: selective `(Bz, L, N)` as is, LTI `(D, N)` -> `(1, N, D)`."""
    if B.ndim == 3:
        return B, C, False
    return np.ascontiguousarray(B.T)[None], np.ascontiguousarray(C.T)[None], True


def _forward(u, delta, A, B, C, D, h0, save: bool):
    """Run `_scan_forward` on tensors; returns `(y, h_T)` tensors and the checkpoints (or None)."""
    Bz, L, Din = u.shape
    N = A.shape[1]
    un, dn = _np(u), _np(delta)
    dtype = un.dtype
    Bk, Ck, lti = _as_kernel_coefficients(_np(B), _np(C))
    At = np.ascontiguousarray(_np(A).T)
    Dv = np.zeros(Din, dtype) if D is None else _np(D)
    h0n = np.zeros((Bz, Din, N), dtype) if h0 is None else _np(h0)
    block = _block_width(Bz, Din)
    chunk = max(1, math.isqrt(L - 1) + 1) if L > 1 else 1  # ceil(sqrt(L))
    Dp = -(-Din // _LANES) * _LANES
    ckpt = np.zeros((Bz, -(-L // chunk) if save else 0, N, Dp), dtype)
    y = np.empty((Bz, L, Din), dtype)
    hT = np.empty((Bz, Din, N), dtype)
    items = Bz * -(-Din // block)
    H = np.empty((items, N, block), dtype)
    R = np.empty((items, block), dtype)
    _launch(
        _scan_forward, Bz * L * Din * N, items,
        un, dn, At, Bk, Ck, lti, Dv, h0n, y, hT, ckpt, chunk, block, H, R,
    )  # fmt: skip
    return torch.from_numpy(y), torch.from_numpy(hT), (ckpt if save else None), chunk


def _backward(u, delta, A, B, C, D, ckpt, chunk, gy, ghT):
    """Run `_scan_backward`; returns the gradients of `(u, delta, A, B, C, D, h_0)` as tensors."""
    Bz, L, Din = u.shape
    N = A.shape[1]
    Dp = ckpt.shape[3]
    dtype = ckpt.dtype
    un = _pad_channels(_np(u), 2, Dp)
    dn = _pad_channels(_np(delta), 2, Dp)
    gyn = _pad_channels(_np(gy), 2, Dp)
    ghn = _pad_channels(_np(ghT), 1, Dp)
    At = _pad_channels(np.ascontiguousarray(_np(A).T), 1, Dp)
    Dv = np.zeros(Dp, dtype) if D is None else _pad_channels(_np(D), 0, Dp)
    Bk, Ck, lti = _as_kernel_coefficients(_np(B), _np(C))
    if lti:
        Bk, Ck = _pad_channels(Bk, 2, Dp), _pad_channels(Ck, 2, Dp)
    block = _block_width(Bz, Dp)
    nblk = -(-Dp // block)
    items = Bz * nblk
    du = np.zeros((Bz, L, Dp), dtype)
    ddelta = np.zeros((Bz, L, Dp), dtype)
    dA = np.zeros((Bz, N, Dp), dtype)
    dh0 = np.zeros((Bz, Dp, N), dtype)
    coef_shape = (1, Bz, N, Dp) if lti else (nblk, Bz, L, N)
    dB = np.zeros(coef_shape, dtype)
    dC = np.zeros(coef_shape, dtype)
    Hs = np.zeros((items, chunk + 1, N, block), dtype)
    Es = np.zeros((items, chunk, N, block), dtype)
    G = np.zeros((items, N, block), dtype)
    S = np.zeros((items, 2, block), dtype)
    P = np.zeros((items, 2, _LANES), dtype)
    _launch(
        _scan_backward, Bz * L * Dp * N, items,
        un, dn, At, Bk, Ck, lti, Dv, gyn, ghn, ckpt, chunk, block,
        du, ddelta, dA, dB, dC, dh0, Hs, Es, G, S, P,
    )  # fmt: skip
    t = torch.from_numpy
    dA_t = t(dA.sum(0)[:, :Din].T.copy())  # (D, N)
    if lti:
        dB_t = t(dB[0].sum(0)[:, :Din].T.copy())  # (D, N)
        dC_t = t(dC[0].sum(0)[:, :Din].T.copy())
    else:
        dB_t = t(dB.sum(0))  # (Bz, L, N)
        dC_t = t(dC.sum(0))
    dD_t = None if D is None else (gy * u).sum((0, 1))  # (D,): a plain reduction, left to torch
    return (
        t(du[:, :, :Din].copy()),
        t(ddelta[:, :, :Din].copy()),
        dA_t,
        dB_t,
        dC_t,
        dD_t,
        t(dh0[:, :Din].copy()),
    )


class _SelectiveScanFn(torch.autograd.Function):
    """`selective_scan_numba` with the hand-derived backward (2)-(3)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, h0):
        y, hT, ckpt, chunk = _forward(u, delta, A, B, C, D, h0, save=True)
        ctx.save_for_backward(u, delta, A, B, C, D)
        ctx.ckpt, ctx.chunk, ctx.has_h0 = ckpt, chunk, h0 is not None
        return y, hT

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, ghT):
        u, delta, A, B, C, D = ctx.saved_tensors
        if gy is None:
            gy = torch.zeros_like(u)
        if ghT is None:
            ghT = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
        du, ddelta, dA, dB, dC, dD, dh0 = _backward(u, delta, A, B, C, D, ctx.ckpt, ctx.chunk, gy, ghT)
        return du, ddelta, dA, dB, dC, dD, (dh0 if ctx.has_h0 else None)


def _check_coefficients(
    where: str, names: str, B: Tensor, C: Tensor, selective: tuple, lti: tuple, sel_text: str
) -> None:
    """B and C must both be selective or both LTI."""
    shapes = (tuple(B.shape), tuple(C.shape))
    if not (shapes == (selective, selective) or shapes == (lti, lti)):
        raise ValueError(
            f"{where}: {names} must both have shape {sel_text} = {selective} (selective) or both "
            f"(d_inner, d_state) = {lti} (LTI), got {shapes[0]} and {shapes[1]}"
        )


def selective_scan_numba(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The selective scan over a whole sequence, compiled with Numba; differentiable.

    Computes the same `(y, h_T)` as `seqmem.ssm.reference.selective_scan`: `h_t = exp(delta_t A) h_{t-1}
    + delta_t B_t u_t`, `y_t = C_t h_t + D u_t`, selective (`B`, `C` per time step) or LTI (`B`, `C`
    fixed). When a gradient is needed, a hand-derived backward (module docstring, eq. (2)-(3))
    re-runs the scan by chunks from `sqrt(seq_len)` checkpoints instead of storing every state.

    Args:
        u: `(batch, seq_len, d_inner)` input, float32 or float64, on the CPU.
        delta: `(batch, seq_len, d_inner)` positive step sizes (softplus already applied).
        A: `(d_inner, d_state)` state matrix, negative real entries.
        B: `(batch, seq_len, d_state)` input matrix (selective), or `(d_inner, d_state)` (LTI).
        C: `(batch, seq_len, d_state)` output matrix (selective), or `(d_inner, d_state)` (LTI); the
            same kind as `B`.
        D: `(d_inner,)` skip connection, or `None` for none.
        initial_state: `(batch, d_inner, d_state)` state `h_0`, zeros if `None`.

    Returns:
        `(y, h_T)`: `y` `(batch, seq_len, d_inner)` and the final state `(batch, d_inner, d_state)`,
        in the dtype of `u`.

    Raises:
        TypeError: if an argument is not a tensor, not float32/float64, or its dtype differs from `u`'s.
        ValueError: if a tensor is not on the CPU, a size is 0, a shape does not match those above,
            or `B` and `C` are not both selective or both LTI.

    References:
        Gu & Dao (2023), Mamba, arXiv:2312.00752, Algorithm 2 and Sec. 3.3 (the hardware-aware scan
        recomputes states in the backward pass; this kernel is a serial scan per channel on the CPU).

    Example:
        >>> import torch
        >>> from seqmem.ssm.numba_scan import selective_scan_numba
        >>> u, delta = torch.randn(2, 5, 4), torch.rand(2, 5, 4)
        >>> A, B, C = -torch.rand(4, 3), torch.randn(2, 5, 3), torch.randn(2, 5, 3)
        >>> y, h = selective_scan_numba(u, delta, A, B, C)
        >>> y.shape, h.shape
        (torch.Size([2, 5, 4]), torch.Size([2, 4, 3]))
    """
    where = "selective_scan_numba"
    if not isinstance(u, Tensor):
        raise TypeError(f"{where}: u must be a torch.Tensor, got {type(u).__name__}")
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "initial_state": initial_state}
    _check_tensors(where, named, "u")
    if u.dim() != 3 or min(u.shape) < 1:
        raise ValueError(
            f"{where}: u must have shape (batch, seq_len, d_inner) with sizes >= 1, got {tuple(u.shape)}"
        )
    Bz, L, Din = u.shape
    if A.dim() != 2 or A.shape[0] != Din or A.shape[1] < 1:
        raise ValueError(
            f"{where}: A must have shape (d_inner, d_state) = ({Din}, d_state), got {tuple(A.shape)}"
        )
    N = A.shape[1]
    _check_shape(where, "delta", delta, (Bz, L, Din), "(batch, seq_len, d_inner)")
    _check_coefficients(where, "B and C", B, C, (Bz, L, N), (Din, N), "(batch, seq_len, d_state)")
    _check_shape(where, "D", D, (Din,), "(d_inner,)")
    _check_shape(where, "initial_state", initial_state, (Bz, Din, N), "(batch, d_inner, d_state)")

    tensors = [t for t in named.values() if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _SelectiveScanFn.apply(u, delta, A, B, C, D, initial_state)
    y, hT, _, _ = _forward(u, delta, A, B, C, D, initial_state, save=False)
    return y, hT


def selective_scan_step_numba(
    u_t: Tensor,
    delta_t: Tensor,
    A: Tensor,
    B_t: Tensor,
    C_t: Tensor,
    D: Tensor | None,
    h: Tensor,
) -> tuple[Tensor, Tensor]:
    """One step of the scan, compiled with Numba (the scan over one time step; differentiable).

    Same result as `seqmem.ssm.reference.selective_scan_step`.

    Args:
        u_t: `(batch, d_inner)` input, float32 or float64, on the CPU.
        delta_t: `(batch, d_inner)` positive step sizes.
        A: `(d_inner, d_state)` state matrix, negative real entries.
        B_t: `(batch, 1, d_state)` selective, or `(d_inner, d_state)` LTI.
        C_t: `(batch, 1, d_state)` selective, or `(d_inner, d_state)` LTI; the same kind as `B_t`.
        D: `(d_inner,)` skip connection, or `None`.
        h: `(batch, d_inner, d_state)` state `h_{t-1}`.

    Returns:
        `(y_t, h_t)`: `y_t` `(batch, d_inner)` and the new state `(batch, d_inner, d_state)`.

    Raises:
        TypeError: as `selective_scan_numba`.
        ValueError: as `selective_scan_numba`, for the step shapes above.

    References:
        Gu & Dao (2023), Mamba, arXiv:2312.00752, eq. (2a)-(2b) and Algorithm 2.
    """
    where = "selective_scan_step_numba"
    if not isinstance(u_t, Tensor):
        raise TypeError(f"{where}: u_t must be a torch.Tensor, got {type(u_t).__name__}")
    named = {"u_t": u_t, "delta_t": delta_t, "A": A, "B_t": B_t, "C_t": C_t, "D": D, "h": h}
    if h is None:
        raise TypeError(f"{where}: h must be a torch.Tensor, got None")
    _check_tensors(where, named, "u_t")
    if u_t.dim() != 2 or min(u_t.shape) < 1:
        raise ValueError(
            f"{where}: u_t must have shape (batch, d_inner) with sizes >= 1, got {tuple(u_t.shape)}"
        )
    Bz, Din = u_t.shape
    if A.dim() != 2 or A.shape[0] != Din or A.shape[1] < 1:
        raise ValueError(
            f"{where}: A must have shape (d_inner, d_state) = ({Din}, d_state), got {tuple(A.shape)}"
        )
    N = A.shape[1]
    _check_shape(where, "delta_t", delta_t, (Bz, Din), "(batch, d_inner)")
    _check_coefficients(where, "B_t and C_t", B_t, C_t, (Bz, 1, N), (Din, N), "(batch, 1, d_state)")
    _check_shape(where, "D", D, (Din,), "(d_inner,)")
    _check_shape(where, "h", h, (Bz, Din, N), "(batch, d_inner, d_state)")
    tensors = [t for t in named.values() if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        y, h_new = selective_scan_numba(u_t.unsqueeze(1), delta_t.unsqueeze(1), A, B_t, C_t, D, h)
        return y[:, 0], h_new
    # streaming inference: a serial kernel (a parallel launch costs more than one step's work)
    un = _np(u_t)
    dtype = un.dtype
    Bn, Cn = _np(B_t), _np(C_t)
    if Bn.ndim == 2:  # LTI (d_inner, d_state) -> (1, d_inner, d_state)
        Bn, Cn = Bn[None], Cn[None]
    Dv = np.zeros(Din, dtype) if D is None else _np(D)
    y = torch.empty(Bz, Din, dtype=u_t.dtype)
    h_new = torch.empty(Bz, Din, N, dtype=u_t.dtype)
    _step_kernel(un, _np(delta_t), _np(A), Bn, Cn, Dv, _np(h), y.numpy(), h_new.numpy())
    return y, h_new
