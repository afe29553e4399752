r"""The GRU's fused streaming kernel: one compiled call per token for a whole stack of GRU layers.

Per layer and token, gates `r, z, n` as `torch.nn`, parameters read where they are stored:

    a = W_ih x + b_ih                                       (B, 3H), one BLAS product
    reset_after=True:   q = W_hh h + b_hh                   (B, 3H)
        r = sigma(a^r + q^r),  z = sigma(a^z + q^z),  n = tanh(a^n + r q^n)
    reset_after=False:  q = W_h{r,z} h + b_h{r,z}           (B, 2H)
        r = sigma(a^r + q^r),  z = sigma(a^z + q^z),  n = tanh(a^n + W_hn (r h) + b_hn)
    h' = (1 - z) n + z h,    y = h'

Every read of `h` precedes the write of `h'` at the same index, so the new state may overwrite the
old one.

References:
    Cho, K. et al. (2014). Learning phrase representations using RNN encoder-decoder for statistical
    machine translation. EMNLP, eq. (5)-(8).
"""

from __future__ import annotations

from torch import Tensor

from .._kernels import KERNEL, _like, _sigmoid, _tanh
from .._numba import njit
from .._stream_kernels import affine, run_stack, view
from .._stream_table import LayerKernel
from ..protocol import GRUState

__all__ = ["gru_layer_kernel", "gru_stack"]


@njit(**KERNEL)
def gru_layer(tab, f, x, y, work):  # pragma: no cover - compiled
    """One GRU layer for one token: `x (B, I)` -> `y (B, H)`.

    Record fields from `f`: `H, reset_after`, then the addresses of `W_ih, W_hh, b_ih, b_hh`
    (0: absent), `h` read and `h` written.
    """
    H, reset_after = tab[f], tab[f + 1]
    w_hh, b_hh = tab[f + 3], tab[f + 5]
    B = x.shape[0]
    dt = x.dtype
    size = x.itemsize
    h_in = view(tab[f + 6], (B, H), dt)
    h_out = view(tab[f + 7], (B, H), dt)
    G = 3 * H
    a = work[: B * G].reshape((B, G))
    n_q = G if reset_after != 0 else 2 * H
    q = work[B * G : B * (G + n_q)].reshape((B, n_q))
    rh = work[B * (G + n_q) : B * (G + n_q + H)].reshape((B, H))
    gn = work[B * (G + n_q + H) : B * (G + n_q + 2 * H)].reshape((B, H))
    affine(x, tab[f + 2], tab[f + 4], a)
    affine(h_in, w_hh, b_hh, q)  # reset_after=False: the first 2H rows of W_hh and b_hh
    for b in range(B):
        ab = a[b]
        qb = q[b]
        hb = h_in[b]
        rb = rh[b]
        for j in range(H):
            r = _sigmoid(ab[j] + qb[j])
            z = _sigmoid(ab[H + j] + qb[H + j])
            rb[j] = r
            ab[H + j] = z  # z kept for the update below
            if reset_after != 0:
                ab[2 * H + j] += r * qb[2 * H + j]
            else:
                rb[j] = r * hb[j]
    if reset_after == 0:
        affine(rh, w_hh + 2 * H * H * size, 0 if b_hh == 0 else b_hh + 2 * H * size, gn)
        for b in range(B):
            ab = a[b]
            gb = gn[b]
            for j in range(H):
                ab[2 * H + j] += gb[j]
    for b in range(B):
        ab = a[b]
        hb = h_in[b]
        ho = h_out[b]
        yb = y[b]
        for j in range(H):
            z = ab[H + j]
            n = _tanh(ab[2 * H + j])
            hn = (_like(z, 1.0) - z) * n + z * hb[j]
            ho[j] = hn
            yb[j] = hn


@njit(**KERNEL)
def gru_stack(tab, buf, x_addr, T, y_addr):  # pragma: no cover - compiled
    """`T` tokens through the stack in `tab`: `run_stack` with `gru_layer`; returns a status."""
    return run_stack(tab, buf, x_addr, T, y_addr, gru_layer)


def gru_layer_kernel(
    weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None, reset_after: bool
) -> LayerKernel:
    """Describe a GRU layer with these (live) parameters to the streaming runtime.

    Args:
        weight_ih: `(3H, I)`.
        weight_hh: `(3H, H)`.
        bias_ih: `(3H,)` or `None`.
        bias_hh: `(3H,)` or `None`.
        reset_after: `True` for the torch/cuDNN form, `False` for Cho et al. (2014).

    Returns:
        The `LayerKernel`: state `GRUState(h)`, `h` `(batch, H)`.
    """
    H, I = weight_hh.shape[1], weight_ih.shape[1]
    return LayerKernel(
        "gru", gru_stack, (weight_ih, weight_hh, bias_ih, bias_hh), (H, int(reset_after)), I, H,
        ((H,),), GRUState, 8 * H, 0, True,
    )  # fmt: skip
