r"""The Elman RNN on the CPU with Numba: forward scan, streaming step and a hand-derived BPTT backward.

The input projection of every step, `gx = x W_ih^T + b_ih` `(B, T, H)`, is one large matrix product
done by torch before the time loop (and differentiated by torch's autograd). The kernels only run
the recurrence, from `gx`, `h_0`, `W_hh` and `b_hh`:

    a_t = gx_t + h_{t-1} W_hh^T + b_hh,     h_t = phi(a_t),     y_t = h_t         (t = 1..T)

Backward (BPTT, Werbos 1990). With `L` the loss, `g_t = dL/dh_t` the *total* gradient reaching
`h_t` (from `y_t` and from step t+1) and `delta_t = dL/da_t`, going from t = T down to 1:

    g_T     = dL/dy_T + dL/dh_T                       (the final state is an output too)
    delta_t = g_t * phi'(a_t)       phi' = 1 - h_t^2 (tanh),  [h_t > 0] (relu)
    g_{t-1} = dL/dy_{t-1} + delta_t W_hh                (for t-1 >= 1);   dL/dh_0 = delta_1 W_hh

and then, outside the time loop, as large matrix products:

    dL/dgx_t = delta_t,     dL/dW_hh = sum_t delta_t^T h_{t-1},     dL/db_hh = sum_t delta_t

(torch's autograd carries `dL/dgx` on to `x`, `W_ih` and `b_ih`). The forward pass keeps every
`h_t` (it is the output `y`), which is all the backward pass needs.

Implementation notes:

- Kernels (`_leading_underscore`) are compiled once per dtype (float32, float64) and trust their
  inputs; the public wrappers check them first.
- The recurrent product of a step covers the whole batch: one `np.dot` (BLAS, bound by Numba
  through SciPy). The kernels are serial: `prange` over the batch would add a fork/join per time
  step, for a few microseconds of elementwise work.
- The elementwise loops vectorize (AVX2/AVX-512): `tanh` is `1 - 2 / (exp(2x) + 1)` with an `exp`
  in plain arithmetic (libm's `tanh` and `exp` are scalar calls), and the kernels use IEEE division
  (`error_model="numpy"`: no zero-divisor branch). Values are computed in float64 and stored in the
  arrays' dtype; tanh is exactly +-1 at saturation, and NaN propagates.
- The no-grad `step` is the fused streaming kernel of `seqmem.rnn.numba_stream` on one layer.

References:
    Elman, J. L. (1990). Finding structure in time. Cognitive Science 14(2), eq. (1)-(2).
    Werbos, P. J. (1990). Backpropagation through time: what it does and how to do it.
    Proceedings of the IEEE 78(10).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._numba import JIT, njit

__all__ = ["rnn_scan_numba", "rnn_step_numba"]

_NONLINEARITIES = ("tanh", "relu")


# ====================================================================== scalar activations
_KERNEL = {**JIT, "error_model": "numpy"}
"""`JIT` with IEEE division (x / 0 gives inf, never a `ZeroDivisionError` check): without the check
on every division, LLVM vectorizes the elementwise loops (measured ~6x faster activations)."""

_ACT = {**_KERNEL, "inline": "always"}


@njit(**_ACT)
def _exp40(y):  # pragma: no cover - compiled
    """exp(y) for |y| <= 40 (callers clamp), in plain arithmetic so that loops over it vectorize.

    `y = n ln2 + r`, `|r| <= ln2 / 2`; `exp(r)` by its Taylor polynomial to degree 12 (truncation
    below 2e-16); `2^n` with `|n| <= 58` as the product of two exact powers `2^k` built from
    integer shifts. Relative error ~3e-16 (libm's `exp` is not vectorized: ~3x slower here).
    """
    yc = 0.0 if y != y else y  # NaN: keep the integer part defined (NaN flows through r)
    n = math.floor(yc * 1.4426950408889634 + 0.5)
    r = (y - n * 0.6931471803691238) - n * 1.9082149292705877e-10  # ln2 split in two (Cody-Waite)
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (
        1.0 / 720.0 + r * (1.0 / 5040.0 + r * (1.0 / 40320.0 + r * (1.0 / 362880.0 + r * (
            1.0 / 3628800.0 + r * (1.0 / 39916800.0 + r * (1.0 / 479001600.0))))))))))))
    k = np.int64(n)
    k1 = k >> 1
    k2 = k - k1  # |k1|, |k2| <= 29: 2^(k + 30) fits an int64 exactly
    s1 = np.float64(np.int64(1) << (k1 + 30)) * 9.313225746154785e-10  # 2^k1 (2^-30 exactly)
    s2 = np.float64(np.int64(1) << (k2 + 30)) * 9.313225746154785e-10
    return p * s1 * s2


@njit(**_ACT)
def _tanh(x):  # pragma: no cover - compiled
    """tanh(x) = 1 - 2 / (exp(2x) + 1): exactly +-1 for |x| >= 20 (and +-inf), NaN stays NaN."""
    x = 20.0 if x > 20.0 else x
    x = -20.0 if x < -20.0 else x
    return 1.0 - 2.0 / (_exp40(2.0 * x) + 1.0)


# ====================================================================== kernels
@njit(**_KERNEL)
def _rnn_forward(gx, h0, w_hh, b_hh, relu):  # pragma: no cover - compiled
    """Recurrence of the Elman RNN.

    gx `(B, T, H)` input projections, h0 `(B, H)`, w_hh `(H, H)`, b_hh `(H,)` or `(0,)` for none.
    Returns `(y (B, T, H), h_T (B, H))`.
    """
    B, T, H = gx.shape
    y = np.empty((B, T, H), dtype=gx.dtype)
    h = h0.copy()
    a = np.empty((B, H), dtype=gx.dtype)
    bias = b_hh if b_hh.shape[0] > 0 else np.zeros(H, dtype=gx.dtype)
    w_t = w_hh.T
    for t in range(T):
        np.dot(h, w_t, a)  # (B, H): h_{t-1} W_hh^T
        for b in range(B):
            if relu:
                for j in range(H):
                    s = gx[b, t, j] + a[b, j] + bias[j]
                    v = 0.0 if s < 0.0 else s  # relu, keeping NaN
                    h[b, j] = v
                    y[b, t, j] = v
            else:
                for j in range(H):
                    v = _tanh(gx[b, t, j] + a[b, j] + bias[j])
                    h[b, j] = v
                    y[b, t, j] = v
    return y, h


@njit(**_KERNEL)
def _rnn_backward(gy, ghT, h0, w_hh, y, relu):  # pragma: no cover - compiled
    """BPTT through `_rnn_forward` (equations in the module docstring).

    gy `(B, T, H)` = dL/dy, ghT `(B, H)` = dL/dh_T, h0 `(B, H)`, w_hh `(H, H)`, y `(B, T, H)`.
    Returns `(delta (B, T, H), dL/dh_0 (B, H))`; `delta` is dL/dgx (and dL/d(pre-activation)).
    """
    B, T, H = y.shape
    delta = np.empty((B, T, H), dtype=y.dtype)
    g = ghT.copy()  # gradient reaching h_t from step t+1 (and from h_T at t = T)
    d_t = np.empty((B, H), dtype=y.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if relu:
                for j in range(H):
                    d = gy[b, t, j] + g[b, j]
                    d = d if y[b, t, j] > 0.0 else 0.0
                    d_t[b, j] = d
                    delta[b, t, j] = d
            else:
                for j in range(H):
                    h = y[b, t, j]
                    d = (gy[b, t, j] + g[b, j]) * (1.0 - h * h)
                    d_t[b, j] = d
                    delta[b, t, j] = d
        np.dot(d_t, w_hh, g)  # (B, H): delta_t W_hh
    return delta, g


# ====================================================================== shared wrapper helpers
_DTYPES = (torch.float32, torch.float64)
_EMPTY = {torch.float32: np.empty(0, np.float32), torch.float64: np.empty(0, np.float64)}


def _as_np(t: Tensor) -> np.ndarray:
    """A C-contiguous numpy view (or copy, if not contiguous) of a CPU tensor, detached."""
    return t.detach().contiguous().numpy()


def _needs_grad(*tensors: Any) -> bool:
    """Whether autograd must record an operation on these tensors (non-tensors are skipped)."""
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def _args_ok(x: Any, tensors: tuple[Any, ...], num_gates: int, rank: int) -> bool:
    """The usual case of `_check_recurrent_args`, cheaply: every check passes."""
    if not isinstance(x, Tensor):
        return False
    dt = x.dtype
    if dt not in _DTYPES:
        return False
    for t in tensors:
        if t is not None and (not isinstance(t, Tensor) or t.dtype != dt or not t.is_cpu):
            return False
    w_ih, w_hh, b_ih, b_hh, h = tensors
    if w_ih is None or w_hh is None or (h is None and rank == 2):
        return False
    xs, ws = x.shape, w_hh.shape
    if len(xs) != rank or xs[0] == 0 or xs[-2] == 0 or len(ws) != 2:
        return False
    G = num_gates * ws[1]
    return (
        ws[0] == G and w_ih.shape == (G, xs[-1])
        and (b_ih is None or b_ih.shape == (G,)) and (b_hh is None or b_hh.shape == (G,))
        and (h is None or h.shape == (xs[0], ws[1]))
    )


def _check_recurrent_args(
    where: str,
    x: Any,
    weight_ih: Any,
    weight_hh: Any,
    bias_ih: Any,
    bias_hh: Any,
    h: Any,
    num_gates: int,
    rank: int,
) -> None:
    """Check the arguments of a scan (`rank=3`, `x (B, T, I)`) or a step (`rank=2`, `x (B, I)`).

    Raises:
        TypeError: a non-tensor, a dtype other than float32/float64, or mixed dtypes.
        ValueError: a tensor off the CPU, a wrong rank or shape, an empty batch or sequence.
    """
    if _args_ok(x, (weight_ih, weight_hh, bias_ih, bias_hh, h), num_gates, rank):
        return
    named = {"x" if rank == 3 else "x_t": x, "weight_ih": weight_ih, "weight_hh": weight_hh,
             "bias_ih": bias_ih, "bias_hh": bias_hh, "initial_state" if rank == 3 else "h": h}
    for name, t in named.items():
        if t is None and name.startswith(("bias", "initial")):
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{where}: {name} must be float32 or float64, got {t.dtype}")
        if t.dtype != x.dtype:
            raise TypeError(f"{where}: {name} has dtype {t.dtype} but x has {x.dtype}; use one dtype")
        if t.device.type != "cpu":
            raise ValueError(f"{where}: backend 'numba' runs on the CPU only, got {name} on {t.device}")
    if rank == 3 and (x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0):
        raise ValueError(
            f"{where}: x must have shape (batch, seq_len, input_size) with batch, seq_len >= 1, "
            f"got {tuple(x.shape)}"
        )
    if rank == 2 and (x.dim() != 2 or x.shape[0] == 0):
        raise ValueError(
            f"{where}: x_t must have shape (batch, input_size) with batch >= 1, got {tuple(x.shape)}"
        )
    B, I = x.shape[0], x.shape[-1]
    if weight_hh.dim() != 2 or weight_hh.shape[0] != num_gates * weight_hh.shape[1]:
        raise ValueError(
            f"{where}: weight_hh must have shape ({num_gates} * hidden_size, hidden_size), "
            f"got {tuple(weight_hh.shape)}"
        )
    H = weight_hh.shape[1]
    G = num_gates * H
    expected = {"weight_ih": (G, I), "bias_ih": (G,), "bias_hh": (G,),
                "initial_state" if rank == 3 else "h": (B, H)}
    for name, shape in expected.items():
        t = named[name]
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{where}: {name} must have shape {shape}, got {tuple(t.shape)}")
    raise AssertionError(f"{where}: arguments rejected by the fast check only")  # pragma: no cover


# ====================================================================== autograd
class _RNNRecurrence(torch.autograd.Function):
    """`(gx, h0, W_hh, b_hh) -> (y, h_T)` with the BPTT backward of the module docstring."""

    @staticmethod
    def forward(ctx: Any, gx: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, relu: bool):
        b = _EMPTY[gx.dtype] if b_hh is None else _as_np(b_hh)
        y, hT = _rnn_forward(_as_np(gx), _as_np(h0), _as_np(w_hh), b, relu)
        y, hT = torch.from_numpy(y), torch.from_numpy(hT)
        ctx.relu = relu
        ctx.has_bias = b_hh is not None
        ctx.save_for_backward(h0, w_hh, y)
        return y, hT

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor, ghT: Tensor):
        h0, w_hh, y = ctx.saved_tensors
        delta, dh0 = _rnn_backward(_as_np(gy), _as_np(ghT), _as_np(h0), _as_np(w_hh), _as_np(y), ctx.relu)
        delta = torch.from_numpy(delta)  # (B, T, H)
        B, T, H = delta.shape
        d_w = d_b = None
        if ctx.needs_input_grad[2]:
            h_prev = torch.cat((h0.detach().unsqueeze(1), y[:, :-1]), dim=1)  # (B, T, H): h_{t-1}
            d_w = delta.reshape(B * T, H).T @ h_prev.reshape(B * T, H)  # (H, H)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            d_b = delta.sum(dim=(0, 1))
        return delta, torch.from_numpy(dh0), d_w, d_b, None


# ====================================================================== public wrappers
def rnn_scan_numba(
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The Elman RNN over a sequence, on the CPU with Numba; differentiable (hand-written BPTT).

    Same signature and results as `seqmem.rnn.reference.rnn_scan`:
    $h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})$. The input projection of all steps is
    one torch matrix product; the recurrence is a Numba kernel, and its backward pass is BPTT
    written out by hand (see the module docstring for the equations), so that gradients reach
    `x`, `initial_state` and every parameter.

    Args:
        x: `(batch, seq_len, input_size)` float32 or float64 CPU tensor.
        weight_ih: `(hidden_size, input_size)`.
        weight_hh: `(hidden_size, hidden_size)`.
        bias_ih: `(hidden_size,)` or `None`.
        bias_hh: `(hidden_size,)` or `None`.
        nonlinearity: `"tanh"` or `"relu"`.
        initial_state: `(batch, hidden_size)` `h_0`; zeros if `None`.

    Returns:
        `(y, h_T)`: `y` `(batch, seq_len, hidden_size)` holds every `h_t`, `h_T` `(batch, hidden_size)`
        the last one.

    Raises:
        TypeError: if an argument is not a tensor, not float32/float64, or the dtypes differ.
        ValueError: if a tensor is not on the CPU, a shape does not match, `batch` or `seq_len` is 0,
            or `nonlinearity` is unknown.

    References:
        Elman, J. L. (1990). Finding structure in time. Cognitive Science 14(2), eq. (1)-(2).
        Werbos, P. J. (1990). Backpropagation through time: what it does and how to do it.
        Proceedings of the IEEE 78(10).
    """
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(
            f"rnn_scan_numba: unknown nonlinearity {nonlinearity!r}; expected one of {list(_NONLINEARITIES)}"
        )
    params = (weight_ih, weight_hh, bias_ih, bias_hh)
    _check_recurrent_args("rnn_scan_numba", x, *params, initial_state, 1, rank=3)
    return _rnn_scan(x, *params, nonlinearity == "relu", initial_state)


def _rnn_scan(
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    relu: bool,
    initial_state: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """`rnn_scan_numba` after its checks."""
    h0 = x.new_zeros(x.shape[0], weight_hh.shape[1]) if initial_state is None else initial_state
    gx = F.linear(x, weight_ih, bias_ih)  # (B, T, H)
    if _needs_grad(gx, h0, weight_hh, bias_hh):
        return _RNNRecurrence.apply(gx, h0, weight_hh, bias_hh, relu)
    b = _EMPTY[x.dtype] if bias_hh is None else _as_np(bias_hh)
    y, hT = _rnn_forward(_as_np(gx), _as_np(h0), _as_np(weight_hh), b, relu)
    return torch.from_numpy(y), torch.from_numpy(hT)


def rnn_step_numba(
    x_t: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    r"""One step of the Elman RNN on the CPU with Numba: the streaming fast path.

    $h' = \phi(W_{ih} x_t + b_{ih} + W_{hh} h + b_{hh})$, as `seqmem.rnn.reference.rnn_cell`.
    Without autograd (no input requires grad, or under `torch.no_grad()`), one call of the fused
    streaming kernel (`seqmem.rnn.numba_stream`) does the whole step, reading the parameters in
    place (nothing is cached between calls: writes to them are seen, calls from several threads
    are safe). When autograd must record the step, it runs as `rnn_scan_numba` over one time step,
    so gradients flow.

    Args:
        x_t: `(batch, input_size)` float32 or float64 CPU tensor.
        h: `(batch, hidden_size)` previous hidden state.
        weight_ih: `(hidden_size, input_size)`.
        weight_hh: `(hidden_size, hidden_size)`.
        bias_ih: `(hidden_size,)` or `None`.
        bias_hh: `(hidden_size,)` or `None`.
        nonlinearity: `"tanh"` or `"relu"`.

    Returns:
        `(batch, hidden_size)` the next hidden state.

    Raises:
        TypeError: as `rnn_scan_numba`.
        ValueError: as `rnn_scan_numba`, for `(batch, input_size)` inputs.

    References:
        Elman, J. L. (1990). Finding structure in time. Cognitive Science 14(2), eq. (1)-(2).
    """
    if nonlinearity == "tanh":
        relu = False
    elif nonlinearity == "relu":
        relu = True
    else:
        raise ValueError(
            f"rnn_step_numba: unknown nonlinearity {nonlinearity!r}; expected one of {list(_NONLINEARITIES)}"
        )
    params = (weight_ih, weight_hh, bias_ih, bias_hh)
    _check_recurrent_args("rnn_step_numba", x_t, *params, h, 1, rank=2)
    if _needs_grad(x_t, h, *params):
        return _rnn_scan(x_t.unsqueeze(1), *params, relu, h)[1]
    from ..stream import layer_step
    from .numba_stream import rnn_layer_kernel

    return layer_step(rnn_layer_kernel, (*params, relu), x_t, (h,))[0]
