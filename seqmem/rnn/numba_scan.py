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
- The elementwise loops vectorize (AVX2/AVX-512): `tanh` is the kernel toolkit's (`seqmem._kernels`:
  arithmetic only, in the arrays' precision, exactly +-1 at saturation, NaN kept), and the kernels use
  IEEE division (`error_model="numpy"`: no zero-divisor branch).
- The no-grad `step` is the fused streaming kernel of `seqmem.rnn.numba_stream` on one layer.

References:
    Elman, J. L. (1990). Finding structure in time. Cognitive Science 14(2), eq. (1)-(2).
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

from .._kernels import EMPTY, KERNEL, _check_recurrent_args, _like, _needs_grad, _np, _tanh
from .._numba import njit

__all__ = ["rnn_scan_numba", "rnn_step_numba"]

_NONLINEARITIES = ("tanh", "relu")


# ====================================================================== kernels
@njit(**KERNEL)
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
                    v = _like(s, 0.0) if s < 0.0 else s  # relu, keeping NaN
                    h[b, j] = v
                    y[b, t, j] = v
            else:
                for j in range(H):
                    v = _tanh(gx[b, t, j] + a[b, j] + bias[j])
                    h[b, j] = v
                    y[b, t, j] = v
    return y, h


@njit(**KERNEL)
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
def _params(w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> dict[str, Any]:
    """The parameters of a single-state recurrence (RNN, GRU) by name, for `_check_recurrent_args`."""
    return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": b_hh}


# ====================================================================== autograd
class _RNNRecurrence(torch.autograd.Function):
    """`(gx, h0, W_hh, b_hh) -> (y, h_T)` with the BPTT backward of the module docstring."""

    @staticmethod
    def forward(ctx: Any, gx: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, relu: bool):
        b = EMPTY[gx.dtype] if b_hh is None else _np(b_hh)
        y, hT = _rnn_forward(_np(gx), _np(h0), _np(w_hh), b, relu)
        y, hT = torch.from_numpy(y), torch.from_numpy(hT)
        ctx.relu = relu
        ctx.has_bias = b_hh is not None
        ctx.save_for_backward(h0, w_hh, y)
        return y, hT

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor, ghT: Tensor):
        h0, w_hh, y = ctx.saved_tensors
        delta, dh0 = _rnn_backward(_np(gy), _np(ghT), _np(h0), _np(w_hh), _np(y), ctx.relu)
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
    _check_recurrent_args("rnn_scan_numba", x, _params(*params), {"initial_state": initial_state}, 1, rank=3)
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
    b = EMPTY[x.dtype] if bias_hh is None else _np(bias_hh)
    y, hT = _rnn_forward(_np(gx), _np(h0), _np(weight_hh), b, relu)
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
    _check_recurrent_args("rnn_step_numba", x_t, _params(*params), {"h": h}, 1, rank=2)
    if _needs_grad(x_t, h, *params):
        return _rnn_scan(x_t.unsqueeze(1), *params, relu, h)[1]
    from ..stream import layer_step
    from .numba_stream import rnn_layer_kernel

    return layer_step(rnn_layer_kernel, (*params, relu), x_t, (h,))[0]
