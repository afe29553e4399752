"""Numba pieces every fused streaming kernel shares: memory views, the stages, the stack loop.

Import this module only from `numba_stream.py` files (it imports numba). A family's stack kernel
(`seqmem/<family>/numba_stream.py`) is `run_stack` with the family's layer function,

    for t in range(T):
        cur = stack_input(tab, buf, x_addr, t)             # embedding row / linear map / copy -> act[cur]
        for l in range(tab[T_L]):
            o = tab[T_LAYERS + l]
            x, y = layer_io(tab, o, buf, cur)              # pre-norm into act[2] if asked
            <family>_layer(tab, o + R_FIELDS, x, y, scratch(tab, buf))
            cur = layer_done(tab, o, buf, cur)             # residual, swap
        stack_output(tab, buf, cur, y_addr, t)             # LayerNorm, head -> y[:, t]

over one flat buffer `buf` of the stream's dtype, `[act0 | act1 | act2 | scratch]` with each
activation `B * T_WIDTH` numbers. Matrix-vector products go to BLAS (`np.dot`, SciPy's OpenBLAS):
on the parameters as they are stored, `(out, in)` row-major, BLAS is as fast as a transposed copy
with a hand-written loop (measured: 1.0 us for a 256 x 64 float32 product either way), and there is
no copy to go stale.

Under `NUMBA_DISABLE_JIT=1` the views are built with ctypes, so the same code runs as Python.
"""

from __future__ import annotations

import ctypes
import math
import struct

import numpy as np

from ._kernels import KERNEL
from ._numba import intrinsic, njit, numba
from ._stream_table import (
    BAD_TOKEN,
    IN_LINEAR,
    IN_TOKENS,
    R_FIELDS,
    R_IN,
    R_NORM_B,
    R_NORM_EPS,
    R_NORM_W,
    R_OUT,
    R_PRENORM,
    R_RESIDUAL,
    T_B,
    T_HEAD,
    T_HEAD_B,
    T_HEAD_W,
    T_IN_B,
    T_IN_KIND,
    T_IN_OUT,
    T_IN_SIZE,
    T_IN_W,
    T_L,
    T_LAYERS,
    T_NORM,
    T_NORM_B,
    T_NORM_EPS,
    T_NORM_W,
    T_OUT,
    T_WIDTH,
    T_X_SB,
    T_X_ST,
    T_Y_SB,
    T_Y_ST,
)

if numba.config.DISABLE_JIT:  # plain Python: views through ctypes

    def view(addr, shape, dt):
        """The memory at `addr` as a C-contiguous array of `shape` and dtype `dt` (no copy)."""
        dt = np.dtype(dt)
        shape = tuple(int(s) for s in shape)
        n = math.prod(shape)
        if n == 0:
            return np.empty(shape, dt)
        raw = (ctypes.c_char * (n * dt.itemsize)).from_address(int(addr))
        return np.frombuffer(raw, dtype=dt, count=n).reshape(shape)

    def bits_to_float(bits):
        """The float64 whose IEEE bits are the int64 `bits`."""
        return struct.unpack("<d", struct.pack("<q", int(bits)))[0]

else:

    @intrinsic
    def _pointer(typingctx, addr):  # pragma: no cover - compiled
        """An integer address (`Tensor.data_ptr()`) as a `void*`."""
        if not isinstance(addr, numba.core.types.Integer):
            return None

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], numba.core.cgutils.voidptr_t)

        return numba.core.types.voidptr(addr), codegen

    @intrinsic
    def _bitcast_f64(typingctx, bits):  # pragma: no cover - compiled
        """An int64's bits reinterpreted as a float64."""
        if not isinstance(bits, numba.core.types.Integer):
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(numba.core.types.float64))

        return numba.core.types.float64(bits), codegen

    @njit(**KERNEL)
    def view(addr, shape, dt):  # pragma: no cover - compiled
        """The memory at `addr` as a C-contiguous array of `shape` and dtype `dt` (no copy)."""
        return numba.carray(_pointer(addr), shape, dt)

    @njit(**KERNEL)
    def bits_to_float(bits):  # pragma: no cover - compiled
        """The float64 whose IEEE bits are the int64 `bits`."""
        return _bitcast_f64(bits)


# ====================================================================== small pieces
@njit(**KERNEL)
def affine(x, w_addr, b_addr, y):  # pragma: no cover - compiled
    """`y = x W^T + b` for rows `x (B, K)`, `W (N, K)` at `w_addr` as stored, `b (N,)` at `b_addr`
    (0: none), `y (B, N)`: one BLAS matrix-vector product per call for `B = 1`, a matrix product else."""
    B, K = x.shape
    N = y.shape[1]
    W = view(w_addr, (N, K), y.dtype)
    if B == 1:
        np.dot(W, x[0], y[0])
    else:
        np.dot(x, W.T, y)
    if b_addr != 0:
        bias = view(b_addr, (N,), y.dtype)
        for b in range(B):
            yb = y[b]
            for j in range(N):
                yb[j] += bias[j]


@njit(**KERNEL)
def layer_norm(x, w_addr, b_addr, eps_bits, y):  # pragma: no cover - compiled
    """`y = (x - mean) / sqrt(var + eps) * w + b` over the last axis of `x (B, K)` (biased variance,
    as `nn.LayerNorm`); sums in float64. `w_addr`, `b_addr` 0: no affine weight or bias."""
    B, K = x.shape
    eps = bits_to_float(eps_bits)
    dt = y.dtype
    for b in range(B):
        xb = x[b]
        yb = y[b]
        s = 0.0
        for j in range(K):
            s += np.float64(xb[j])
        mean = s / K
        v = 0.0
        for j in range(K):
            d = np.float64(xb[j]) - mean
            v += d * d
        inv = 1.0 / math.sqrt(v / K + eps)
        for j in range(K):
            yb[j] = (np.float64(xb[j]) - mean) * inv
    if w_addr != 0:
        w = view(w_addr, (K,), dt)
        for b in range(B):
            yb = y[b]
            for j in range(K):
                yb[j] *= w[j]
    if b_addr != 0:
        bias = view(b_addr, (K,), dt)
        for b in range(B):
            yb = y[b]
            for j in range(K):
                yb[j] += bias[j]


@njit(**KERNEL)
def activation(tab, buf, k, width):  # pragma: no cover - compiled
    """Activation buffer `k` (0, 1, 2) as `(B, width)`."""
    B = tab[T_B]
    size = B * tab[T_WIDTH]
    return buf[k * size : k * size + B * width].reshape((B, width))


@njit(**KERNEL)
def scratch(tab, buf):  # pragma: no cover - compiled
    """The scratch after the three activation buffers."""
    return buf[3 * tab[T_B] * tab[T_WIDTH] :]


# ====================================================================== the stages
@njit(**KERNEL)
def check_tokens(tab, x_addr, T):  # pragma: no cover - compiled
    """`BAD_TOKEN` if a token id of the `T` steps is outside `[0, vocab)`, else 0 (no-op for features)."""
    if tab[T_IN_KIND] != IN_TOKENS:
        return 0
    B = tab[T_B]
    sb, st, vocab = tab[T_X_SB], tab[T_X_ST], tab[T_IN_SIZE]
    ids = view(x_addr, ((B - 1) * sb + (T - 1) * st + 1,), np.int64)
    for t in range(T):
        for b in range(B):
            i = ids[b * sb + t * st]
            if i < 0 or i >= vocab:
                return BAD_TOKEN
    return 0


@njit(**KERNEL)
def stack_input(tab, buf, x_addr, t):  # pragma: no cover - compiled
    """The input stage for step `t`: the embedding row, `W x + b`, or the features, into act 0."""
    B, kind, F, sb, st = tab[T_B], tab[T_IN_KIND], tab[T_IN_SIZE], tab[T_X_SB], tab[T_X_ST]
    width = tab[T_IN_OUT]
    dt = buf.dtype
    act = activation(tab, buf, 0, width)
    if kind == IN_TOKENS:
        ids = view(x_addr, ((B - 1) * sb + t * st + 1,), np.int64)
        E = view(tab[T_IN_W], (F, width), dt)
        for b in range(B):
            act[b] = E[ids[b * sb + t * st]]
        return 0
    xs = view(x_addr, ((B - 1) * sb + t * st + F,), dt)
    if kind == IN_LINEAR:
        rows = activation(tab, buf, 2, F)
        for b in range(B):
            rows[b] = xs[b * sb + t * st : b * sb + t * st + F]
        affine(rows, tab[T_IN_W], tab[T_IN_B], act)
    else:
        for b in range(B):
            act[b] = xs[b * sb + t * st : b * sb + t * st + F]
    return 0


@njit(**KERNEL)
def layer_io(tab, o, buf, cur):  # pragma: no cover - compiled
    """The input `(B, in)` of the layer whose record is at `o` (act `cur`, or its LayerNorm in
    act 2) and where it writes its output `(B, out)` (the other activation)."""
    n_in, n_out = tab[o + R_IN], tab[o + R_OUT]
    x = activation(tab, buf, cur, n_in)
    if tab[o + R_PRENORM] != 0:
        normed = activation(tab, buf, 2, n_in)
        layer_norm(x, tab[o + R_NORM_W], tab[o + R_NORM_B], tab[o + R_NORM_EPS], normed)
        x = normed
    return x, activation(tab, buf, 1 - cur, n_out)


@njit(**KERNEL)
def layer_done(tab, o, buf, cur):  # pragma: no cover - compiled
    """Add the residual if the record asks for it; the layer's output becomes the current activation."""
    if tab[o + R_RESIDUAL] != 0:
        n = tab[o + R_OUT]
        x = activation(tab, buf, cur, n)
        y = activation(tab, buf, 1 - cur, n)
        for b in range(x.shape[0]):
            yb = y[b]
            xb = x[b]
            for j in range(n):
                yb[j] += xb[j]
    return 1 - cur


@njit(**KERNEL)
def stack_output(tab, buf, cur, y_addr, t):  # pragma: no cover - compiled
    """The output stage for step `t`: LayerNorm and head (each if present) of act `cur`, written to
    row `t` of the output at `y_addr`."""
    B, O, sb, st, L = tab[T_B], tab[T_OUT], tab[T_Y_SB], tab[T_Y_ST], tab[T_L]
    width = tab[T_IN_OUT] if L == 0 else tab[tab[T_LAYERS + L - 1] + R_OUT]
    h = activation(tab, buf, cur, width)
    if tab[T_NORM] != 0:
        normed = activation(tab, buf, 1 - cur, width)
        layer_norm(h, tab[T_NORM_W], tab[T_NORM_B], tab[T_NORM_EPS], normed)
        h = normed
    if tab[T_HEAD] != 0:
        out = activation(tab, buf, 2, O)
        affine(h, tab[T_HEAD_W], tab[T_HEAD_B], out)
        h = out
    ys = view(y_addr, ((B - 1) * sb + t * st + O,), buf.dtype)
    for b in range(B):
        ys[b * sb + t * st : b * sb + t * st + O] = h[b]


@njit(**KERNEL, inline="always")
def run_stack(tab, buf, x_addr, T, y_addr, layer):  # pragma: no cover - compiled
    """`T` tokens through the stack in `tab`; `layer(tab, fields, x, y, scratch)` is the family's
    layer. Inlined into each family's stack kernel (`<family>_stack`), where `layer` is a constant:
    passed as a run-time argument, the function object's address would keep Numba from caching it.

    Returns:
        0, or `BAD_TOKEN` (checked for every step before anything is updated).
    """
    status = check_tokens(tab, x_addr, T)
    if status != 0:
        return status
    work = scratch(tab, buf)
    for t in range(T):
        cur = stack_input(tab, buf, x_addr, t)
        for l in range(tab[T_L]):
            o = tab[T_LAYERS + l]
            x, y = layer_io(tab, o, buf, cur)
            layer(tab, o + R_FIELDS, x, y, work)
            cur = layer_done(tab, o, buf, cur)
        stack_output(tab, buf, cur, y_addr, t)
    return 0
