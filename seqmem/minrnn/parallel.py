r"""minGRU and minLSTM in parallel over time: the log-space scan of Heinsen (2023).

Both recurrences, eq. (1) and (2) of `reference.py`, are linear in the state,

$$h_t = a_t \odot h_{t-1} + b_t, \qquad a_t \in (0, 1), \quad b_t > 0,$$

with $a_t = 1 - z_t$, $b_t = z_t\, g(k^h_t)$ (minGRU) and $a_t = f'_t$, $b_t = i'_t\, g(k^h_t)$ (minLSTM),
and no coefficient depends on $h$. Unrolled, $h_t = A_t (h_0 + \sum_{k \le t} b_k / A_k)$ with
$A_t = \prod_{k \le t} a_k$. In logarithms (Heinsen 2023), with $a^*_t = \sum_{k \le t} \log a_k$
(a cumulative sum):

$$\log h_t = a^*_t + \log\Big(h_0 + \sum_{k=1}^{t} e^{\log b_k - a^*_k}\Big)
= a^*_t + \operatorname{logcumsumexp}_{k \le t}\big(\log h_0,\ \log b_1 - a^*_1,\ \dots\big). \tag{4}$$

A cumulative sum and a `logcumsumexp` over time, both parallel scans, compute every state at once;
in log space no product underflows and no sum overflows. The coefficients come in log space
directly, from the pre-activations, with $\log\sigma(x) = -\mathrm{softplus}(-x)$ (`F.logsigmoid`; Feng et
al. 2024, appendix, log-space version) and $1 - \sigma(x) = \sigma(-x)$:

- minGRU: $\log a_t = \log\sigma(-k^z_t)$, $\log b_t = \log\sigma(k^z_t) + \log g(k^h_t)$.
- minLSTM: with $u_t = \log\sigma(k^f_t) - \log\sigma(k^i_t) = \log(f_t / i_t)$,
  $f'_t = f_t / (f_t + i_t) = \sigma(u_t)$, so $\log a_t = \log\sigma(u_t)$, and
  $\log b_t = \log\sigma(-u_t) + \log g(k^h_t)$ (no $0/0$ where both gates underflow).
- $\log g(x) = \log(x + 1/2)$ for $x \ge 0$, $\log\sigma(x)$ for $x < 0$.

The initial state. Its logarithm, $\log h_0$, is the first term of the `logcumsumexp` in (4), as it is:
the paper's listing passes $\log g(h_0)$ there, which starts the scan from $g(h_0) \ne h_0$, so that
chunked streaming (`forward(x2, forward(x1)[1])`) and `step` would not continue the same sequence.
The log needs $h_0 \ge 0$; the models' states always are ($h_t > 0$ for $t \ge 1$, and the initial
state is zeros). A zero entry gives $\log 0 = -\infty$, which (4) handles exactly ($e^{-\infty} = 0$).
Where $h_0 = 0$ its gradient cannot pass through the logarithm ($0 \cdot \infty$), so it comes from the
backward pass below, $\partial L / \partial h_0 = a_1 G_1$, as for every $h_0 \ge 0$. A negative entry has no
logarithm: the functions here refuse it (`ValueError`); `MinGRU`/`MinLSTM` run the sequential form
for such a state instead.

Precision. $\log h_t$ is the sum of $a^*_t$ and a `logcumsumexp` of about $-a^*_t$, so its absolute
error is about $\epsilon\, |a^*_t|$ ($\epsilon$ the machine epsilon of the arithmetic), and $|a^*_t|$, the
total log-decay since the start of the call, reaches thousands over a few hundred steps of strong
forgetting. In float32 ($\epsilon = 6 \cdot 10^{-8}$) that is a relative error of $10^{-4}$ in the states
and their gradients, against $10^{-6}$ for the sequential loop. So `mingru_parallel` and
`minlstm_parallel` compute in float64 from the pre-activations on, whatever their dtype, and round the
states to it at the end: $10^{-16}\, |a^*_t|$, below float32's own rounding. (On the CPU this made
the scan about 20% slower than in float32; the matrix product of `Linear(x)` stays in the input's
dtype.)

The backward pass. Autograd through (4) differentiates the cumulative sum and the `logcumsumexp`
(whose backward splits the gradient by sign and subtracts the parts), and its gradients lose about as
much as the forward pass. The scan's own backward is BPTT of the linear recurrence, with
$G_t = \partial L / \partial h_t$ over all paths:

$$G_t = \frac{\partial L}{\partial y_t} + a_{t+1} G_{t+1}, \quad
\frac{\partial L}{\partial \log a_t} = G_t\, a_t h_{t-1}, \quad
\frac{\partial L}{\partial \log b_t} = G_t\, b_t, \quad \frac{\partial L}{\partial h_0} = a_1 G_1, \tag{5}$$

a reverse linear recurrence with coefficients in $(0, 1)$ and signed inputs, computed in parallel by
recursive doubling in linear space (Hillis & Steele 1986): $\log_2 T$ rounds, no logarithm, no
cancellation. In float64, over 16 to 512 steps, its gradients of $\log b$ and $h_0$ are within 4e-16 of the
sequential form's (relative to the largest) and those of $\log a$, which take $h_{t-1}$ from (4), within
5e-14; through autograd they were within 2e-15 to 2e-13 (`tests/minrnn`). It is written with
differentiable operations, so double backward works.

References:
    Heinsen, F. A. (2023). Efficient parallelization of a ubiquitous sequential computation.
    arXiv:2311.06281 (the log-space scan, $\log x_t = a^*_t + \log(x_0 + b^*_t)$).
    Hillis, W. D. & Steele, G. L. (1986). Data parallel algorithms. Communications of the ACM 29(12)
    (recursive doubling).
    Feng, L., Tung, F., Ahmed, M. O., Bengio, Y. & Hajimirsadeghi, H. (2024). Were RNNs all we needed?
    arXiv:2410.01201, Sec. 3.1 and 3.2 (training by a parallel scan) and the appendix on the log-space
    version (log g, the parallel scan in log space).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["heinsen_scan", "log_g", "mingru_parallel", "minlstm_parallel"]


def log_g(x: Tensor) -> Tensor:
    r"""$\log g(x)$ of the candidate activation (3), without forming $g$: $\log(x + 1/2)$ for $x \ge 0$,
    $\log\sigma(x) = -\mathrm{softplus}(-x)$ for $x < 0$.

    Args:
        x: any float tensor.

    Returns:
        A tensor of `x`'s shape (finite for finite `x`).
    """
    # relu keeps the unused branch finite, so that where's zero gradient there is not 0 * inf
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), F.logsigmoid(x))


def _check_initial_state(where: str, h0: Tensor | None, fallback: str) -> None:
    if h0 is not None and bool((h0 < 0).any()):
        raise ValueError(
            f"{where}: the log-space scan takes log(initial_state), so initial_state must be >= 0 "
            f"(the models' states always are); got a minimum of {float(h0.min()):.4g}. "
            f"Use {fallback} for a negative state"
        )


def heinsen_scan(log_a: Tensor, log_b: Tensor, initial_state: Tensor | None = None) -> Tensor:
    r"""Every state of $h_t = a_t h_{t-1} + b_t$ at once, from $\log a_t$ and $\log b_t$: eq. (4).

    Args:
        log_a: `(batch, seq_len, hidden_size)` logs of the coefficients $a_t > 0$; their cumulative
            sums must stay finite (the minimal RNNs' $a_t \le 1$ give $\log a_t \le 0$).
        log_b: `(batch, seq_len, hidden_size)` logs of the inputs $b_t > 0$.
        initial_state: `(batch, hidden_size)` $h_0 \ge 0$ (zeros allowed); `None` for zeros.

    Returns:
        `(batch, seq_len, hidden_size)`: $h_1, \dots, h_T$.

    Raises:
        ValueError: if `initial_state` has a negative entry.

    References:
        Heinsen (2023), arXiv:2311.06281.

    Example:
        >>> import torch
        >>> from seqmem.minrnn.parallel import heinsen_scan
        >>> a, b = torch.tensor([[[0.5], [0.25]]]), torch.tensor([[[1.0], [2.0]]])
        >>> heinsen_scan(a.log(), b.log(), torch.tensor([[4.0]]))  # 0.5*4+1 = 3, 0.25*3+2 = 2.75
        tensor([[[3.0000],
                 [2.7500]]])
    """
    _check_initial_state("heinsen_scan", initial_state, "a sequential loop")
    return _HeinsenScan.apply(log_a, log_b, initial_state)


def _heinsen_forward(log_a: Tensor, log_b: Tensor, h0: Tensor | None) -> Tensor:
    """Eq. (4): `(B, T, H)` states from `(B, T, H)` logs and `h0` `(B, H)` (or `None` for zeros)."""
    a_star = torch.cumsum(log_a, dim=1)  # (B, T, H): a*_t = log A_t
    terms = log_b - a_star  # (B, T, H): log(b_t / A_t)
    if h0 is None:
        return torch.exp(a_star + torch.logcumsumexp(terms, dim=1))
    terms = torch.cat([torch.log(h0).unsqueeze(1), terms], dim=1)  # (B, 1 + T, H): log h_0 first, as it is
    return torch.exp(a_star + torch.logcumsumexp(terms, dim=1)[:, 1:])


def _linear_scan(a: Tensor, b: Tensor) -> Tensor:
    """`x_t = a_t x_{t-1} + b_t` from `x_0 = 0` along dim 1, every `t` at once by recursive doubling (Hillis &
    Steele 1986): after the round of stride `d`, `(a_t, b_t)` compose the steps `t - 2d + 1 .. t`. `log2(T)`
    rounds of elementwise work, each value rounded `log2(T)` times; differentiable (double backward)."""
    T = a.shape[1]
    d = 1
    while d < T:
        b = torch.cat([b[:, :d], torch.addcmul(b[:, d:], a[:, d:], b[:, :-d])], dim=1)
        if 2 * d < T:
            a = torch.cat([a[:, :d], a[:, d:] * a[:, :-d]], dim=1)
        d *= 2
    return b


class _HeinsenScan(torch.autograd.Function):
    """Eq. (4) forward; the backward is BPTT of `h_t = a_t h_{t-1} + b_t`, eq. (5), in parallel."""

    @staticmethod
    def forward(ctx: Any, log_a: Tensor, log_b: Tensor, h0: Tensor | None) -> Tensor:
        h = _heinsen_forward(log_a, log_b, h0)
        ctx.save_for_backward(log_a, log_b, h0, h)
        return h

    @staticmethod
    def backward(ctx: Any, gh: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        log_a, log_b, h0, h = ctx.saved_tensors
        a = torch.exp(log_a)  # (B, T, H)
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)  # a_{t+1}, 0 after the last step
        G = _linear_scan(a_next.flip(1), gh.flip(1)).flip(1)  # (B, T, H): G_t = dL/dh_t, all paths
        first = torch.zeros_like(h[:, :1]) if h0 is None else h0.unsqueeze(1)
        h_prev = torch.cat([first, h[:, :-1]], dim=1)  # (B, T, H): h_{t-1}
        d_h0 = a[:, 0] * G[:, 0] if h0 is not None and ctx.needs_input_grad[2] else None
        return G * a * h_prev, G * torch.exp(log_b), d_h0


def _f64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.to(torch.float64)


def _last(h: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """`(h, h_T)` in `dtype`."""
    h = h.to(dtype)
    return h, h[:, -1].clone()


def mingru_parallel(gates: Tensor, initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""minGRU over a sequence by the log-space scan: equals `mingru_recurrent`.

    Args:
        gates: `(batch, seq_len, 2 * hidden_size)` pre-activations `[k_z | k_h]` (`Linear(x)`).
        initial_state: `(batch, hidden_size)` $h_0 \ge 0$; zeros if `None`.

    Returns:
        `(h, h_T)`: every state `(batch, seq_len, hidden_size)` (the output) and the last one
        `(batch, hidden_size)`.

    Raises:
        ValueError: if `initial_state` has a negative entry (`mingru_recurrent` takes any).

    References:
        Feng et al. (2024), arXiv:2410.01201, Sec. 3.1 and the appendix (log-space minGRU).
    """
    _check_initial_state("mingru_parallel", initial_state, "mingru_recurrent")
    k_z, k_h = gates.to(torch.float64).chunk(2, dim=-1)  # (B, T, H) each, in float64 (module docstring)
    log_a = F.logsigmoid(-k_z)  # log(1 - z_t) = log sigma(-k_z)
    log_b = F.logsigmoid(k_z) + log_g(k_h)  # log z_t + log g(k_h)
    return _last(heinsen_scan(log_a, log_b, _f64(initial_state)), gates.dtype)


def minlstm_parallel(gates: Tensor, initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""minLSTM over a sequence by the log-space scan: equals `minlstm_recurrent`.

    Args:
        gates: `(batch, seq_len, 3 * hidden_size)` pre-activations `[k_i | k_f | k_h]` (`Linear(x)`).
        initial_state: `(batch, hidden_size)` $h_0 \ge 0$; zeros if `None`.

    Returns:
        `(h, h_T)`, as `mingru_parallel`.

    Raises:
        ValueError: if `initial_state` has a negative entry (`minlstm_recurrent` takes any).

    References:
        Feng et al. (2024), arXiv:2410.01201, Sec. 3.2 and the appendix (log-space minLSTM).
    """
    _check_initial_state("minlstm_parallel", initial_state, "minlstm_recurrent")
    k_i, k_f, k_h = gates.to(torch.float64).chunk(3, dim=-1)  # (B, T, H) each, in float64 (module docstring)
    u = F.logsigmoid(k_f) - F.logsigmoid(k_i)  # log(f_t / i_t)
    log_a = F.logsigmoid(u)  # log f'_t: f / (f + i) = sigma(log(f / i))
    log_b = F.logsigmoid(-u) + log_g(k_h)  # log i'_t + log g(k_h)
    return _last(heinsen_scan(log_a, log_b, _f64(initial_state)), gates.dtype)
