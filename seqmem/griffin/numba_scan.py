r"""The RG-LRU on the CPU with Numba: forward scan, streaming step and a hand-derived backward.

One fused kernel runs the whole of eq. (1)-(4) per element `(b, t, d)` (De et al. 2024, sec. 2.4), from
the gates' pre-activations `ga = W_a x + b_a`, `gx = W_x x + b_x` (matrix products left to torch), the
input `x`, the parameter $\Lambda$ and `h_0`:

    r = sigmoid(ga),  i = sigmoid(gx),  la = log a = -softplus(-Lambda),  l = c r la   (= log a_t)
    a_t = exp(l),  m = sqrt(1 - a_t^2) = sqrt(-expm1(2 l)),  u = i x,  h_t = a_t h_{t-1} + m u     (1)

and `y_t = h_t`. Torch would run this as about a dozen elementwise passes over `(batch, seq_len, d_rnn)`
plus the scan; here it is one pass, with the toolkit's vectorisable `_sigmoid`, `_exp`, `_expm1_neg`
(`seqmem._kernels`) and LLVM's `sqrt`.

Backward. With `g_t = dL/dh_t` the *total* gradient reaching `h_t` (from `y_t` and from step t+1),
going from t = T down to 1 (all products elementwise):

    g_T = dL/dy_T + dL/dh_T,   g_{t-1} = dL/dy_{t-1} + a_t g_t,   dL/dh_0 = a_1 g_1                (2)

and at every step, by the chain rule through eq. (1) (`dm/dl = -a_t^2 / m`, `dl/dr = c la`,
`sigmoid' = s (1 - s)`):

    dL/dx_t  = g_t m i
    dL/dgx_t = g_t m x i (1 - i)
    dL/dl_t  = g_t h_{t-1} a_t - g_t u (a_t^2 / m)
    dL/dga_t = dL/dl_t c la r (1 - r)
    dL/dla   = sum_{b,t} dL/dl_t c r,      dL/dLambda = dL/dla sigmoid(-Lambda)                   (3)

(`d la / d Lambda = sigmoid(-Lambda) = 1 - a`). The forward output `y` holds every `h_t`, which is all
the backward pass needs besides the inputs: the gates are recomputed, nothing else is stored.

The one singular point: `m = 0` exactly when `l = 0`, i.e. when `r` underflows to 0 (a pre-activation
below about -745 in float64, -104 in float32) or `la = 0` ($\Lambda$ beyond about 745). There
`dm/dl = -inf`, but the gradient it feeds is finite: `dL/dga` and `dL/dla` carry a factor `r` or `la`
that vanishes faster (`m ~ sqrt(2 c r |la|)`), and their limit is 0, which the kernel uses (`a_t^2 / m`
is taken as 0 where `m = 0`). Autograd through the torch forms gives NaN at that point instead.

Work items are the sequences of the batch, run with `prange`. Inside one the time loop is serial and
the channel loop innermost (contiguous in memory) and vectorised (AVX2/AVX-512), which needs three
things: the running state and the gradient carried down the sweep live in scratch arrays apart from
the outputs (a loop that reads `y[t - 1]` and writes `y[t]` of one array is not vectorised: 10-40x
slower), the channel index runs from 0 (an offset index brings back numba's negative-index test,
which blocked vectorisation of the float64 backward), and there are no views of the outputs. So the
channels of a sequence are not split between threads: a batch of one runs on one thread. Small scans
(under 65,536 elements) run a serial twin of the kernel: waking threads would cost more. The no-grad
step is a serial kernel.

References:
    De, S. et al. (2024). Griffin: mixing gated linear recurrences with local attention for efficient
    language models. arXiv:2402.19427, sec. 2.4, eq. (1)-(4) and Appendix A (log space).
    Werbos, P. J. (1990). Backpropagation through time: what it does and how to do it. Proc. IEEE 78(10).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._kernels import (
    KERNEL,
    NP_DTYPES,
    PKERNEL,
    _check_shape,
    _check_tensors,
    _exp,
    _expm1_neg,
    _like,
    _needs_grad,
    _np,
    _sigmoid,
    _softplus,
)
from .._numba import njit, numba, parallel_launch, prange
from .reference import C_DEFAULT

__all__ = ["rglru_numba", "rglru_step_numba"]

_INLINE = {**KERNEL, "inline": "always"}
"""Flags of the per-element gates and the per-sequence loops: inlined in Numba's IR into the kernels. Left to
LLVM's inliner instead (as the toolkit's scalar functions are), the kernels ran 9x slower (float32 forward,
B=8 T=128 D=85: 2.2 ms against 0.24 ms): the loops over channels were no longer vectorised."""

_PARALLEL_MIN_WORK = 1 << 16
"""Fewer elements (batch x seq_len x d_rnn) than this run on one thread."""


# ====================================================================== kernels
@njit(**_INLINE)
def _gates(ga, gx, la, c):  # pragma: no cover - compiled
    """`(r, i, a_t, m)` of eq. (1) for one element."""
    r = _sigmoid(ga)
    i = _sigmoid(gx)
    lt = c * r * la
    a_t = _exp(lt)
    m = np.sqrt(-_expm1_neg(lt + lt))
    return r, i, a_t, m


@njit(**KERNEL)
def _log_a(Lambda):  # pragma: no cover - compiled
    """`log a = -softplus(-Lambda)` per channel, `(D,)`."""
    out = np.empty_like(Lambda)
    for d in range(Lambda.shape[0]):
        out[d] = -_softplus(-Lambda[d])
    return out


@njit(**_INLINE)
def _forward_row(b, x, ga, gx, la, c, h0, y, H):  # pragma: no cover - compiled
    """Eq. (1) over sequence `b`: x, ga, gx `(B, T, D)`, la `(D,)` = log a, h0 `(B, D)`; writes y[b] (every
    h_t). H `(B, D)` is scratch: the running state."""
    T, D = x.shape[1], x.shape[2]
    for d in range(D):
        H[b, d] = h0[b, d]
    for t in range(T):
        for d in range(D):
            r, i, a_t, m = _gates(ga[b, t, d], gx[b, t, d], la[d], c)
            hv = a_t * H[b, d] + m * (i * x[b, t, d])
            H[b, d] = hv
            y[b, t, d] = hv


@njit(**_INLINE)
def _backward_row(b, x, ga, gx, la, c, h0, y, gy, ghT, dx, dga, dgx, dla, dh0, G, S):  # pragma: no cover
    """Eq. (2)-(3) over sequence `b`, from t = T down to 1.

    Inputs as `_forward_row` plus y `(B, T, D)`, gy `(B, T, D)` = dL/dy, ghT `(B, D)` = dL/dh_T. Writes
    dx, dga, dgx `(B, T, D)`, dla `(B, D)` (per sequence: summed by the caller) and dh0 `(B, D)`. Scratch
    `(B, D)`: G carries `a_{t+1} g_{t+1}` down the sweep, S sums dL/dla.
    """
    T, D = x.shape[1], x.shape[2]
    zero, one = _like(c, 0.0), _like(c, 1.0)
    for d in range(D):
        G[b, d] = ghT[b, d]
        S[b, d] = zero
    for t in range(T - 1, -1, -1):
        h_prev = y[b, t - 1] if t > 0 else h0[b]  # (D,)
        for d in range(D):
            g = gy[b, t, d] + G[b, d]
            r, i, a_t, m = _gates(ga[b, t, d], gx[b, t, d], la[d], c)
            xv = x[b, t, d]
            du = g * m  # dL/du
            dx[b, t, d] = du * i
            dgx[b, t, d] = du * xv * ((one - i) * i)
            q = a_t * a_t / m if m > zero else zero  # -dm/dl, its limit 0 at m = 0
            dl = g * h_prev[d] * a_t - g * (i * xv) * q  # dL/dl_t
            dga[b, t, d] = dl * c * la[d] * ((one - r) * r)
            S[b, d] += dl * c * r
            G[b, d] = a_t * g
    for d in range(D):
        dla[b, d] = S[b, d]
        dh0[b, d] = G[b, d]


@njit(**KERNEL)
def _forward_serial(x, ga, gx, la, c, h0, y, H):  # pragma: no cover - compiled
    """`_forward_row` over the batch on one thread."""
    for b in range(x.shape[0]):
        _forward_row(b, x, ga, gx, la, c, h0, y, H)


@njit(**PKERNEL)
def _forward_parallel(x, ga, gx, la, c, h0, y, H):  # pragma: no cover - compiled
    """`_forward_row` over the batch, one sequence per work item."""
    for b in prange(x.shape[0]):
        _forward_row(b, x, ga, gx, la, c, h0, y, H)


@njit(**KERNEL)
def _backward_serial(x, ga, gx, la, c, h0, y, gy, ghT, dx, dga, dgx, dla, dh0, G, S):  # pragma: no cover
    """`_backward_row` over the batch on one thread."""
    for b in range(x.shape[0]):
        _backward_row(b, x, ga, gx, la, c, h0, y, gy, ghT, dx, dga, dgx, dla, dh0, G, S)


@njit(**PKERNEL)
def _backward_parallel(x, ga, gx, la, c, h0, y, gy, ghT, dx, dga, dgx, dla, dh0, G, S):  # pragma: no cover
    """`_backward_row` over the batch, one sequence per work item."""
    for b in prange(x.shape[0]):
        _backward_row(b, x, ga, gx, la, c, h0, y, gy, ghT, dx, dga, dgx, dla, dh0, G, S)


@njit(**KERNEL)
def _rglru_step(x, ga, gx, Lambda, c, h, out):  # pragma: no cover - compiled
    """One step of eq. (1), serial: x, ga, gx, h `(B, D)`, Lambda `(D,)`; writes out `(B, D)` = h_t."""
    B, D = x.shape
    for d in range(D):
        la = -_softplus(-Lambda[d])
        for b in range(B):
            r, i, a_t, m = _gates(ga[b, d], gx[b, d], la, c)
            out[b, d] = a_t * h[b, d] + m * (i * x[b, d])


# ====================================================================== host side
def _launch(serial: Any, parallel: Any, *args: Any) -> None:
    """Run the parallel kernel when the batch and the work are large enough to share, else the serial one:
    waking threads costs more than a small scan (much more on a loaded machine). Parallel launches are
    serialised between Python threads (`parallel_launch`: numba's workqueue layer aborts the process on
    concurrent ones); the serial twins run concurrently."""
    x = args[0]
    if x.shape[0] > 1 and x.size >= _PARALLEL_MIN_WORK and numba.get_num_threads() > 1:
        with parallel_launch():
            parallel(*args)
    else:
        serial(*args)


def _forward(x: Tensor, ga: Tensor, gx: Tensor, Lambda: Tensor, c: float, h0: Tensor) -> Tensor:
    """Run the forward kernel (serial or parallel); returns `y` `(B, T, D)`."""
    B, T, D = x.shape
    y = torch.empty(B, T, D, dtype=x.dtype)
    dtype = NP_DTYPES[x.dtype]
    H = np.empty((B, D), dtype)
    args = (_np(x), _np(ga), _np(gx), _log_a(_np(Lambda)), dtype(c), _np(h0), y.numpy(), H)
    _launch(_forward_serial, _forward_parallel, *args)
    return y


class _RGLRUFunction(torch.autograd.Function):
    """`(x, gate_a, gate_x, Lambda, h0) -> (y, h_T)` with the backward (2)-(3) of the module docstring."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, ga: Tensor, gx: Tensor, Lambda: Tensor, h0: Tensor, c: float):
        y = _forward(x, ga, gx, Lambda, c, h0)
        ctx.c = c
        ctx.save_for_backward(x, ga, gx, Lambda, h0, y)
        return y, y[:, -1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor | None, ghT: Tensor | None):
        x, ga, gx, Lambda, h0, y = ctx.saved_tensors
        B, T, D = x.shape
        gy = torch.zeros_like(x) if gy is None else gy
        ghT = x.new_zeros(B, D) if ghT is None else ghT
        dx, dga, dgx = (torch.empty(B, T, D, dtype=x.dtype) for _ in range(3))
        dla, dh0 = torch.empty(B, D, dtype=x.dtype), torch.empty(B, D, dtype=x.dtype)
        dtype = NP_DTYPES[x.dtype]
        G, S = np.empty((B, D), dtype), np.empty((B, D), dtype)
        _launch(
            _backward_serial, _backward_parallel,
            _np(x), _np(ga), _np(gx), _log_a(_np(Lambda)), dtype(ctx.c), _np(h0), _np(y), _np(gy), _np(ghT),
            dx.numpy(), dga.numpy(), dgx.numpy(), dla.numpy(), dh0.numpy(), G, S,
        )  # fmt: skip
        d_lambda = dla.sum(0) * torch.sigmoid(-Lambda.detach())  # d log a / d Lambda = sigmoid(-Lambda)
        return dx, dga, dgx, d_lambda, dh0, None


def _check(where: str, x: Any, gate_a: Any, gate_x: Any, Lambda: Any, c: Any, h: Any, rank: int) -> None:
    """Types, dtypes, devices and shapes of a scan (`rank=3`) or a step (`rank=2`)."""
    xname = "x" if rank == 3 else "x_t"
    suffix = "" if rank == 3 else "_t"
    hname = "initial_state" if rank == 3 else "h"
    for name, t in ((xname, x), ("Lambda", Lambda), *(((hname, h),) if rank == 2 else ())):
        if t is None:
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got None")
    named = {xname: x, f"gate_a{suffix}": gate_a, f"gate_x{suffix}": gate_x, "Lambda": Lambda, hname: h}
    _check_tensors(where, named, xname)
    axes = "(batch, seq_len, d_rnn)" if rank == 3 else "(batch, d_rnn)"
    if x.dim() != rank or min(x.shape) < 1:
        raise ValueError(f"{where}: {xname} must have shape {axes} with sizes >= 1, got {tuple(x.shape)}")
    for name in (f"gate_a{suffix}", f"gate_x{suffix}"):
        _check_shape(where, name, named[name], tuple(x.shape), axes)
    _check_shape(where, "Lambda", Lambda, (x.shape[-1],), "(d_rnn,)")
    _check_shape(where, hname, h, (x.shape[0], x.shape[-1]), "(batch, d_rnn)")
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not (math.isfinite(c) and c > 0):
        raise ValueError(f"{where}: c must be a positive finite number, got {c!r}")


def rglru_numba(
    x: Tensor,
    gate_a: Tensor,
    gate_x: Tensor,
    Lambda: Tensor,
    c: float = C_DEFAULT,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The RG-LRU over a whole sequence, compiled with Numba; differentiable (hand-derived backward).

    Computes what `seqmem.griffin.reference.rglru` computes, eq. (1)-(4): $r_t = \sigma(\text{gate\_a})$,
    $i_t = \sigma(\text{gate\_x})$, $a_t = \sigma(\Lambda)^{c r_t}$ (in log space),
    $h_t = a_t h_{t-1} + \sqrt{1 - a_t^2}\, i_t x_t$, in one fused kernel. When a gradient is needed,
    the backward of the module docstring (eq. 2-3) gives the gradients of `x`, `gate_a`, `gate_x`,
    `Lambda` and `initial_state`.

    Args:
        x: `(batch, seq_len, d_rnn)` input, float32 or float64, on the CPU.
        gate_a: `(batch, seq_len, d_rnn)` recurrence-gate pre-activations $W_a x_t + b_a$.
        gate_x: `(batch, seq_len, d_rnn)` input-gate pre-activations $W_x x_t + b_x$.
        Lambda: `(d_rnn,)` the recurrence parameter, $a = \sigma(\Lambda)$.
        c: the constant of eq. (3), positive (8 in the paper).
        initial_state: `(batch, d_rnn)` $h_0$, zeros if `None`.

    Returns:
        `(y, h_T)`: `y` `(batch, seq_len, d_rnn)` (every $h_t$) and the final state `(batch, d_rnn)`.

    Raises:
        TypeError: if an argument is not a tensor, not float32/float64, or its dtype differs from `x`'s.
        ValueError: if a tensor is not on the CPU, a size is 0, a shape does not match those above, or
            `c` is not a positive finite number.

    References:
        De, S. et al. (2024). Griffin. arXiv:2402.19427, sec. 2.4, eq. (1)-(4), Appendix A.

    Example:
        >>> import torch
        >>> from seqmem.griffin.numba_scan import rglru_numba
        >>> x, ga, gx = torch.randn(3, 2, 5, 4).unbind(0)
        >>> y, h = rglru_numba(x, ga, gx, torch.full((4,), 4.0))
        >>> y.shape, h.shape
        (torch.Size([2, 5, 4]), torch.Size([2, 4]))
    """
    _check("rglru_numba", x, gate_a, gate_x, Lambda, c, initial_state, rank=3)
    c = float(c)
    h0 = x.new_zeros(x.shape[0], x.shape[2]) if initial_state is None else initial_state
    if _needs_grad(x, gate_a, gate_x, Lambda, initial_state):
        return _RGLRUFunction.apply(x, gate_a, gate_x, Lambda, h0, c)
    y = _forward(x, gate_a, gate_x, Lambda, c, h0)
    return y, y[:, -1].clone()


def rglru_step_numba(
    x_t: Tensor, gate_a_t: Tensor, gate_x_t: Tensor, Lambda: Tensor, c: float, h: Tensor
) -> tuple[Tensor, Tensor]:
    """One step of the RG-LRU, compiled with Numba (the streaming form; differentiable).

    Same result as `seqmem.griffin.reference.rglru_step`. Without autograd, one serial kernel does the
    step; when autograd must record it, it runs as `rglru_numba` over one time step.

    Args:
        x_t: `(batch, d_rnn)` input, float32 or float64, on the CPU.
        gate_a_t: `(batch, d_rnn)` recurrence-gate pre-activation.
        gate_x_t: `(batch, d_rnn)` input-gate pre-activation.
        Lambda: `(d_rnn,)` the recurrence parameter.
        c: the constant of eq. (3).
        h: `(batch, d_rnn)` state $h_{t-1}$.

    Returns:
        `(y_t, h_t)`, both `(batch, d_rnn)`: the output is the new state (the same tensor).

    Raises:
        TypeError: as `rglru_numba`.
        ValueError: as `rglru_numba`, for the step shapes above.

    References:
        De, S. et al. (2024). Griffin. arXiv:2402.19427, sec. 2.4, eq. (1)-(4).
    """
    _check("rglru_step_numba", x_t, gate_a_t, gate_x_t, Lambda, c, h, rank=2)
    if _needs_grad(x_t, gate_a_t, gate_x_t, Lambda, h):
        y, _ = _RGLRUFunction.apply(x_t[:, None], gate_a_t[:, None], gate_x_t[:, None], Lambda, h, float(c))
        return y[:, 0], y[:, 0]
    out = torch.empty_like(x_t, memory_format=torch.contiguous_format)
    cv = NP_DTYPES[x_t.dtype](c)
    _rglru_step(_np(x_t), _np(gate_a_t), _np(gate_x_t), _np(Lambda), cv, _np(h), out.numpy())
    return out, out
