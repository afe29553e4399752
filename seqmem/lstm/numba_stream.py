r"""The LSTM's fused streaming kernel: one compiled call per token for a whole stack of LSTM layers.

Per layer and token, with the parameters read where they are stored (`W (4H, I)` row-major, gates
`i, f, g, o`; no transposed copy that a write through `.data` could leave stale):

    z   = (W_ih x + b_ih) + (W_hh h + b_hh)           two BLAS matrix-vector products (B = 1)
    i   = sigma(z^i + w_ci c),  f = sigma(z^f + w_cf c),  g = tanh(z^g)
    c'  = f c + i g,            o = sigma(z^o + w_co c'),  h' = o tanh(c')

The new state may be written over the old one (a stream updates its buffers in place): both
products read `h` before any `h'` is written, and `c` is read and written at the same index.

`lstm_stack` is the stack kernel of `seqmem._stream_kernels` with `lstm_layer` as its layer;
`lstm_layer_kernel` describes a layer to the runtime (`seqmem.stream`).

References:
    Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8).
    Gers, F. A. & Schmidhuber, J. (2000). Recurrent nets that time and count. IJCNN (peepholes).
"""

from __future__ import annotations

from torch import Tensor

from .._kernels import KERNEL
from .._numba import njit
from .._stream_kernels import affine, run_stack, view
from .._stream_table import LayerKernel
from ..protocol import LSTMState
from .numba_scan import _cell_forward

__all__ = ["lstm_layer_kernel", "lstm_stack"]


@njit(**KERNEL)
def lstm_layer(tab, f, x, y, work):  # pragma: no cover - compiled
    """One LSTM layer for one token: `x (B, I)` -> `y (B, H)`, state at the record's addresses.

    Record fields from `f`: `I, H`, then the addresses of `W_ih, W_hh, b_ih, b_hh, peepholes`
    (0: absent), `h, c` read and `h, c` written.
    """
    H = tab[f + 1]
    w_ih, w_hh, b_ih, b_hh, peep = tab[f + 2], tab[f + 3], tab[f + 4], tab[f + 5], tab[f + 6]
    B = x.shape[0]
    dt = x.dtype
    G = 4 * H
    h_in = view(tab[f + 7], (B, H), dt)
    c_in = view(tab[f + 8], (B, H), dt)
    h_out = view(tab[f + 9], (B, H), dt)
    c_out = view(tab[f + 10], (B, H), dt)
    zx = work[: B * G].reshape((B, G))
    zh = work[B * G : 2 * B * G].reshape((B, G))
    o = 2 * B * G
    pw = work[o : o + 3 * H].reshape((3, H))
    hw = work[o + 3 * H : o + 4 * H]
    cw = work[o + 4 * H : o + 5 * H]
    if peep != 0:
        pw[:] = view(peep, (3, H), dt)
    else:
        pw[:] = 0
    affine(x, w_ih, b_ih, zx)
    affine(h_in, w_hh, b_hh, zh)  # reads all of h before h_out (maybe the same memory) is written
    for b in range(B):
        z = zx[b]
        z += zh[b]
        cw[:] = c_in[b]
        # the gates in a loop over few arrays (LLVM vectorises it; over the state's own rows it would not)
        _cell_forward(z, hw, cw, pw)
        c_out[b] = cw
        h_out[b] = hw
        y[b] = hw


@njit(**KERNEL)
def lstm_stack(tab, buf, x_addr, T, y_addr):  # pragma: no cover - compiled
    """`T` tokens through the stack in `tab`: `run_stack` with `lstm_layer`; returns a status."""
    return run_stack(tab, buf, x_addr, T, y_addr, lstm_layer)


def lstm_layer_kernel(
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    weight_peephole: Tensor | None,
) -> LayerKernel:
    """Describe an LSTM layer with these (live) parameters to the streaming runtime.

    Args:
        weight_ih: `(4H, I)`.
        weight_hh: `(4H, H)`.
        bias_ih: `(4H,)` or `None`.
        bias_hh: `(4H,)` or `None`.
        weight_peephole: `(3, H)` or `None`.

    Returns:
        The `LayerKernel`: state `LSTMState(h, c)`, each `(batch, H)`.
    """
    H, I = weight_hh.shape[1], weight_ih.shape[1]
    return LayerKernel(
        "lstm", lstm_stack, (weight_ih, weight_hh, bias_ih, bias_hh, weight_peephole), (I, H), I, H,
        ((H,), (H,)), LSTMState, 8 * H, 5 * H, True,
    )  # fmt: skip
