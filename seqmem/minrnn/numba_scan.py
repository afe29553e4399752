r"""minGRU and minLSTM on the CPU with Numba: the sequential scan, the step and a hand-derived BPTT backward.

The kernels run the recurrences of `reference.py` from the gate pre-activations `gates = Linear(x)`
(one torch matrix product before the time loop, differentiated by torch's autograd), elementwise per
hidden unit, $h_t = a_t h_{t-1} + b_t$:

    minGRU   gates = [k_z | k_h]:          z = sigma(k_z),  a_t = 1 - z = sigma(-k_z),  b_t = z g(k_h)
    minLSTM  gates = [k_i | k_f | k_h]:    a_t = f' = f / (f + i),  b_t = i' g(k_h),  i' = 1 - f'
    g(x) = x + 1/2 (x >= 0),  sigma(x) (x < 0);     g'(x) = 1 (x >= 0),  sigma(x) (1 - sigma(x)) (x < 0)

minLSTM's normalised gates without overflow or 0/0 (both sigmoids may underflow): with
`p = -k_f`, `q = -k_i` (so `f = 1 / (1 + e^p)`, `i = 1 / (1 + e^q)`) and `m = max(p, q, 0)`,

    f' = (1 + e^q) / (2 + e^p + e^q) = (e^-m + e^(q-m)) / D,   i' = (e^-m + e^(p-m)) / D,
    D  = 2 e^-m + e^(p-m) + e^(q-m)  >= 1                                                        (6)

Backward (BPTT, Werbos 1990). With `G_t = dL/dh_t` the total gradient reaching `h_t` (from the output
`y_t = h_t` and from step t+1; `G_T = dL/dy_T + dL/dh_T`), from t = T down to 1, `c_t = g(k^h_t)`:

    minGRU:   dL/dk^z_t = G_t (c_t - h_{t-1}) z_t (1 - z_t)
              dL/dk^h_t = G_t z_t g'(k^h_t)
              G_{t-1}   = dL/dy_{t-1} + G_t (1 - z_t)
    minLSTM:  with u_t = log(f_t / i_t), so f' = sigma(u), i' = sigma(-u), du/dk^f = 1 - f, du/dk^i = -(1 - i):
              r_t       = G_t (h_{t-1} - c_t) f'_t i'_t                     (dL/du_t)
              dL/dk^f_t = r_t (1 - f_t),   dL/dk^i_t = -r_t (1 - i_t)
              dL/dk^h_t = G_t i'_t g'(k^h_t)
              G_{t-1}   = dL/dy_{t-1} + G_t f'_t                                                  (7)

and `dL/dh_0 = G_0`. The backward needs `h_{t-1}`, which is the output `y_{t-1}` (saved), and the
gates, recomputed from `gates`: nothing else is stored. `1 - z` and `1 - f` are `sigma(-k)`, exact
where the gate rounds to 1.

Kernels. Work items are `(batch, block of up to 256 hidden units)`, run with `prange` (on one thread
when the work is small); each item runs its units through every step, the inner loop over the
contiguous units with the toolkit's vectorisable `_exp`/`_sigmoid` (`seqmem._kernels`). The step
kernel is serial. The same kernels serve both models (`lstm` selects the cell per row).

References:
    Feng, L., Tung, F., Ahmed, M. O., Bengio, Y. & Hajimirsadeghi, H. (2024). Were RNNs all we needed?
    arXiv:2410.01201, Sec. 3.1 (minGRU), 3.2 (minLSTM), appendix (g, positive states).
    Werbos, P. J. (1990). Backpropagation through time: what it does and how to do it.
    Proceedings of the IEEE 78(10).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._kernels import KERNEL, PKERNEL, _check_shape, _check_tensors, _exp, _like, _needs_grad, _np, _sigmoid
from .._numba import njit, numba, prange
from ..ssm.numba_scan import _launch

__all__ = ["mingru_scan_numba", "mingru_step_numba", "minlstm_scan_numba", "minlstm_step_numba"]

_MAX_BLOCK = 256
"""Most hidden units per work item."""


# ====================================================================== elementwise cells
@njit(**KERNEL)
def _sigmoid_pair(x):  # pragma: no cover - compiled
    """`(sigma(x), sigma(-x))` from one exponential, each exact where the other rounds to 1."""
    e = _exp(-abs(x))
    r = _like(x, 1.0) / (_like(x, 1.0) + e)
    return (r, e * r) if x >= _like(x, 0.0) else (e * r, r)


@njit(**KERNEL)
def _g(x):  # pragma: no cover - compiled
    """`(g(x), g'(x))`: `x + 1/2` and 1 for `x >= 0`, `sigma(x)` and `sigma(x) (1 - sigma(x))` below."""
    s = _sigmoid(x)
    if x >= _like(x, 0.0):
        return x + _like(x, 0.5), _like(x, 1.0)
    return s, s * (_like(x, 1.0) - s)


@njit(**KERNEL)
def _normalised_gates(k_i, k_f):  # pragma: no cover - compiled
    """minLSTM's `(f', i')` by (6): no overflow, no 0/0, `f' + i' = 1` up to rounding."""
    p, q = -k_f, -k_i
    m = p if p > q else q
    m = m if m > _like(m, 0.0) else _like(m, 0.0)
    em, ep, eq = _exp(-m), _exp(p - m), _exp(q - m)
    d = em + em + ep + eq
    return (em + eq) / d, (em + ep) / d


@njit(**KERNEL)
def _row_forward(k, H, j0, j1, hp, out, lstm):  # pragma: no cover - compiled
    """One step for units `j0:j1`: `k` `(G*H,)` the step's pre-activations, `hp` `h_{t-1}`, `out` `h_t`."""
    if lstm:
        for j in range(j0, j1):
            f_n, i_n = _normalised_gates(k[j], k[H + j])
            c, _ = _g(k[2 * H + j])
            out[j] = f_n * hp[j] + i_n * c
    else:
        for j in range(j0, j1):
            z, zc = _sigmoid_pair(k[j])
            c, _ = _g(k[H + j])
            out[j] = zc * hp[j] + z * c


@njit(**KERNEL)
def _work_item(item, H, block):  # pragma: no cover - compiled
    """Work item `item` of `(batch, blocks of `block` units)`: its batch row `b` and units `j0:j1`."""
    nblk = (H + block - 1) // block
    b = item // nblk
    j0 = (item - b * nblk) * block
    return b, j0, min(j0 + block, H)


# ====================================================================== kernels
@njit(**PKERNEL)
def _forward(gates, h0, y, block, lstm):  # pragma: no cover - compiled
    """`gates` `(B, T, G*H)`, `h0` `(B, H)` -> `y` `(B, T, H)` (every `h_t`), by work items of `block` units."""
    B, T, H = y.shape
    for item in prange(B * ((H + block - 1) // block)):
        b, j0, j1 = _work_item(item, H, block)
        for t in range(T):
            hp = y[b, t - 1] if t > 0 else h0[b]
            _row_forward(gates[b, t], H, j0, j1, hp, y[b, t], lstm)


@njit(**KERNEL)
def _step(gates, h, out, lstm):  # pragma: no cover - compiled
    """One step, serial: `gates` `(B, G*H)`, `h` `(B, H)` -> `out` `(B, H)`."""
    B, H = h.shape
    for b in range(B):
        _row_forward(gates[b], H, 0, H, h[b], out[b], lstm)


@njit(**PKERNEL)
def _backward(gates, h0, y, gy, ghT, dgates, dh0, block, lstm):  # pragma: no cover - compiled
    """BPTT (7): writes `dgates` `(B, T, G*H)` = dL/dgates and `dh0` `(B, H)` = dL/dh_0."""
    B, T, H = y.shape
    for item in prange(B * ((H + block - 1) // block)):
        b, j0, j1 = _work_item(item, H, block)
        G = dh0[b]  # the running G_t of these units lives in dh0[b, j0:j1]
        for j in range(j0, j1):
            G[j] = ghT[b, j]
        for t in range(T - 1, -1, -1):
            hp = y[b, t - 1] if t > 0 else h0[b]
            k, dk, gy_t = gates[b, t], dgates[b, t], gy[b, t]
            if lstm:
                for j in range(j0, j1):
                    Gt = G[j] + gy_t[j]
                    k_i, k_f = k[j], k[H + j]
                    f_n, i_n = _normalised_gates(k_i, k_f)
                    c, dc = _g(k[2 * H + j])
                    r = Gt * (hp[j] - c) * (f_n * i_n)
                    dk[j] = -r * _sigmoid(-k_i)
                    dk[H + j] = r * _sigmoid(-k_f)
                    dk[2 * H + j] = Gt * i_n * dc
                    G[j] = Gt * f_n
            else:
                for j in range(j0, j1):
                    Gt = G[j] + gy_t[j]
                    z, zc = _sigmoid_pair(k[j])
                    c, dc = _g(k[H + j])
                    dk[j] = Gt * (c - hp[j]) * (z * zc)
                    dk[H + j] = Gt * z * dc
                    G[j] = Gt * zc


# ====================================================================== wrappers
def _block(batch: int, hidden: int) -> int:
    """Units per work item: all of them up to `_MAX_BLOCK`, split further when the batch is small."""
    threads = max(1, numba.get_num_threads())
    blocks = max(-(-hidden // _MAX_BLOCK), min(-(-threads // batch), -(-hidden // 16)))
    return -(-hidden // blocks)


def _run_forward(gates: Tensor, h0: Tensor, lstm: bool) -> Tensor:
    B, T, _ = gates.shape
    H = h0.shape[1]
    k = _np(gates)
    y = np.empty((B, T, H), dtype=k.dtype)
    block = _block(B, H)
    _launch(_forward, B * T * H, B * -(-H // block), k, _np(h0), y, block, lstm)
    return torch.from_numpy(y)


class _MinRNNScan(torch.autograd.Function):
    """`(gates, h0) -> (y, h_T)` with the BPTT backward (7)."""

    @staticmethod
    def forward(ctx: Any, gates: Tensor, h0: Tensor, lstm: bool) -> tuple[Tensor, Tensor]:
        y = _run_forward(gates, h0, lstm)
        ctx.save_for_backward(gates, h0, y)
        ctx.lstm = lstm
        return y, y[:, -1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor | None, ghT: Tensor | None) -> tuple[Tensor, Tensor, None]:
        gates, h0, y = ctx.saved_tensors
        B, T, H = y.shape
        gy_n = np.zeros((B, T, H), y.numpy().dtype) if gy is None else _np(gy)
        ghT_n = np.zeros((B, H), y.numpy().dtype) if ghT is None else _np(ghT)
        dgates = np.empty(tuple(gates.shape), gy_n.dtype)
        dh0 = np.empty((B, H), gy_n.dtype)
        block = _block(B, H)
        _launch(
            _backward, B * T * H, B * -(-H // block),
            _np(gates), _np(h0), y.numpy(), gy_n, ghT_n, dgates, dh0, block, ctx.lstm,
        )  # fmt: skip
        return torch.from_numpy(dgates), torch.from_numpy(dh0), None


def _check_scan(where: str, gates: Any, initial_state: Any, num_gates: int) -> int:
    """Check a scan's arguments; returns `hidden_size`."""
    if not isinstance(gates, Tensor):
        raise TypeError(f"{where}: gates must be a torch.Tensor, got {type(gates).__name__}")
    _check_tensors(where, {"gates": gates, "initial_state": initial_state}, "gates")
    if gates.dim() != 3 or min(gates.shape) == 0 or gates.shape[2] % num_gates:
        raise ValueError(
            f"{where}: gates must have shape (batch, seq_len, {num_gates} * hidden_size) with batch, seq_len, "
            f"hidden_size >= 1, got {tuple(gates.shape)}"
        )
    H = gates.shape[2] // num_gates
    _check_shape(where, "initial_state", initial_state, (gates.shape[0], H), "(batch, hidden_size)")
    return H


def _check_step(where: str, gates_t: Any, h: Any, num_gates: int) -> None:
    for name, t in (("gates_t", gates_t), ("h", h)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    _check_tensors(where, {"gates_t": gates_t, "h": h}, "gates_t")
    if h.dim() != 2 or h.shape[0] == 0 or h.shape[1] == 0:
        raise ValueError(f"{where}: h must have shape (batch, hidden_size) with sizes >= 1, got {tuple(h.shape)}")
    _check_shape(where, "gates_t", gates_t, (h.shape[0], num_gates * h.shape[1]), f"(batch, {num_gates} * hidden_size)")


def _scan(gates: Tensor, initial_state: Tensor | None, H: int, lstm: bool) -> tuple[Tensor, Tensor]:
    h0 = gates.new_zeros(gates.shape[0], H) if initial_state is None else initial_state
    if _needs_grad(gates, h0):
        return _MinRNNScan.apply(gates, h0, lstm)
    y = _run_forward(gates, h0, lstm)
    return y, y[:, -1].clone()


def _step_call(gates_t: Tensor, h: Tensor, lstm: bool) -> Tensor:
    if _needs_grad(gates_t, h):
        y, _ = _MinRNNScan.apply(gates_t.unsqueeze(1), h, lstm)
        return y[:, 0]
    out = torch.empty_like(h)
    _step(_np(gates_t), _np(h), out.numpy(), lstm)
    return out


def mingru_scan_numba(gates: Tensor, initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""minGRU over a sequence, on the CPU with Numba; differentiable (hand-written BPTT, eq. (7)).

    Same signature and results as `seqmem.minrnn.reference.mingru_recurrent` (the sequential form, any
    real $h_0$) and, for $h_0 \ge 0$, `seqmem.minrnn.parallel.mingru_parallel`.

    Args:
        gates: `(batch, seq_len, 2 * hidden_size)` pre-activations `[k_z | k_h]`, float32 or float64, CPU.
        initial_state: `(batch, hidden_size)` $h_0$; zeros if `None`.

    Returns:
        `(h, h_T)`: every state `(batch, seq_len, hidden_size)` (the output) and the last one
        `(batch, hidden_size)`.

    Raises:
        TypeError: if an argument is not a tensor, not float32/float64, or the dtypes differ.
        ValueError: if a tensor is not on the CPU, or a shape does not match those above.

    References:
        Feng et al. (2024), arXiv:2410.01201, Sec. 3.1.

    Example:
        >>> import torch
        >>> from seqmem.minrnn.numba_scan import mingru_scan_numba
        >>> h, h_T = mingru_scan_numba(torch.randn(2, 5, 6))
        >>> h.shape, h_T.shape
        (torch.Size([2, 5, 3]), torch.Size([2, 3]))
    """
    H = _check_scan("mingru_scan_numba", gates, initial_state, 2)
    return _scan(gates, initial_state, H, False)


def minlstm_scan_numba(gates: Tensor, initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""minLSTM over a sequence, on the CPU with Numba; differentiable (hand-written BPTT, eq. (7)).

    Same signature and results as `seqmem.minrnn.reference.minlstm_recurrent` (any real $h_0$) and, for
    $h_0 \ge 0$, `seqmem.minrnn.parallel.minlstm_parallel`.

    Args:
        gates: `(batch, seq_len, 3 * hidden_size)` pre-activations `[k_i | k_f | k_h]`, float32 or
            float64, CPU.
        initial_state: `(batch, hidden_size)` $h_0$; zeros if `None`.

    Returns:
        `(h, h_T)`, as `mingru_scan_numba`.

    Raises:
        TypeError: as `mingru_scan_numba`.
        ValueError: as `mingru_scan_numba`, for the shapes above.

    References:
        Feng et al. (2024), arXiv:2410.01201, Sec. 3.2.
    """
    H = _check_scan("minlstm_scan_numba", gates, initial_state, 3)
    return _scan(gates, initial_state, H, True)


def mingru_step_numba(gates_t: Tensor, h: Tensor) -> Tensor:
    """One minGRU step, compiled with Numba (differentiable): `seqmem.minrnn.reference.mingru_step`.

    Args:
        gates_t: `(batch, 2 * hidden_size)` pre-activations `[k_z | k_h]` of this step, float32 or float64, CPU.
        h: `(batch, hidden_size)` the state $h_{t-1}$.

    Returns:
        `(batch, hidden_size)` the new state $h_t$ (also the output).

    Raises:
        TypeError: as `mingru_scan_numba`.
        ValueError: as `mingru_scan_numba`, for the shapes above.
    """
    _check_step("mingru_step_numba", gates_t, h, 2)
    return _step_call(gates_t, h, False)


def minlstm_step_numba(gates_t: Tensor, h: Tensor) -> Tensor:
    """One minLSTM step, compiled with Numba (differentiable): `seqmem.minrnn.reference.minlstm_step`.

    Args:
        gates_t: `(batch, 3 * hidden_size)` pre-activations `[k_i | k_f | k_h]` of this step, float32 or
            float64, CPU.
        h: `(batch, hidden_size)` the state $h_{t-1}$.

    Returns:
        `(batch, hidden_size)` the new state $h_t$, as `mingru_step_numba`.

    Raises:
        TypeError: as `mingru_scan_numba`.
        ValueError: as `mingru_scan_numba`, for the shapes above.
    """
    _check_step("minlstm_step_numba", gates_t, h, 3)
    return _step_call(gates_t, h, True)
