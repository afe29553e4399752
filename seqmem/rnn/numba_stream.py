r"""The Elman RNN's fused streaming kernel: one compiled call per token for a whole stack of RNN layers.

Per layer and token, with the parameters read where they are stored (`W (H, I)` row-major):

    h' = phi((W_ih x + b_ih) + (W_hh h + b_hh)),     phi = tanh or relu,     y = h'

Both products read `h` before `h'` is written, so the new state may overwrite the old one.

References:
    Elman, J. L. (1990). Finding structure in time. Cognitive Science 14(2), eq. (1)-(2).
"""

from __future__ import annotations

from torch import Tensor

from .._kernels import KERNEL, _like, _tanh
from .._numba import njit
from .._stream_kernels import affine, run_stack, view
from .._stream_table import LayerKernel
from ..protocol import RNNState

__all__ = ["rnn_layer_kernel", "rnn_stack"]


@njit(**KERNEL)
def rnn_layer(tab, f, x, y, work):  # pragma: no cover - compiled
    """One Elman layer for one token: `x (B, I)` -> `y (B, H)`.

    Record fields from `f`: `H, relu`, then the addresses of `W_ih, W_hh, b_ih, b_hh` (0: absent),
    `h` read and `h` written.
    """
    H, relu = tab[f], tab[f + 1]
    B = x.shape[0]
    dt = x.dtype
    h_in = view(tab[f + 6], (B, H), dt)
    h_out = view(tab[f + 7], (B, H), dt)
    zx = work[: B * H].reshape((B, H))
    zh = work[B * H : 2 * B * H].reshape((B, H))
    affine(x, tab[f + 2], tab[f + 4], zx)
    affine(h_in, tab[f + 3], tab[f + 5], zh)
    for b in range(B):
        a = zx[b]
        r = zh[b]
        ho = h_out[b]
        yb = y[b]
        if relu != 0:
            for j in range(H):
                s = a[j] + r[j]
                v = _like(s, 0.0) if s < 0.0 else s  # keeps NaN
                ho[j] = v
                yb[j] = v
        else:
            for j in range(H):
                v = _tanh(a[j] + r[j])
                ho[j] = v
                yb[j] = v


@njit(**KERNEL)
def rnn_stack(tab, buf, x_addr, T, y_addr):  # pragma: no cover - compiled
    """`T` tokens through the stack in `tab`: `run_stack` with `rnn_layer`; returns a status."""
    return run_stack(tab, buf, x_addr, T, y_addr, rnn_layer)


def rnn_layer_kernel(
    weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None, relu: bool
) -> LayerKernel:
    """Describe an Elman layer with these (live) parameters to the streaming runtime.

    Args:
        weight_ih: `(H, I)`.
        weight_hh: `(H, H)`.
        bias_ih: `(H,)` or `None`.
        bias_hh: `(H,)` or `None`.
        relu: `True` for the ReLU nonlinearity, `False` for tanh.

    Returns:
        The `LayerKernel`: state `RNNState(h)`, `h` `(batch, H)`.
    """
    H, I = weight_hh.shape[1], weight_ih.shape[1]
    return LayerKernel(
        "rnn", rnn_stack, (weight_ih, weight_hh, bias_ih, bias_hh), (H, int(relu)), I, H,
        ((H,),), RNNState, 2 * H, 0, True,
    )  # fmt: skip
