r"""`seqmem.MinGRU` and `seqmem.MinLSTM`: the minimal RNNs of Feng et al. (2024), trained in parallel."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._module import SequenceModule, _check_flag, _check_positive_int
from ..protocol import _state_type
from .parallel import mingru_parallel, minlstm_parallel
from .reference import mingru_recurrent, mingru_step, minlstm_recurrent, minlstm_step

__all__ = ["MinGRU", "MinLSTM", "MinRNNState"]

_Scan = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]]
_Step = Callable[[Tensor, Tensor], Tensor]


@_state_type
class MinRNNState(NamedTuple):
    r"""State of `MinGRU` and `MinLSTM`: the hidden state alone, which is also the output.

    Attributes:
        h: `(batch, hidden_size)` hidden state $h_t$. The models keep it positive ($h_t > 0$ for
            $t \ge 1$ from $h_0 \ge 0$; Feng et al. 2024, appendix, log-space version).
    """

    h: Tensor

    @property
    def batch_size(self) -> int:
        """Number of sequences in the batch."""
        return self.h.shape[0]


class _MinRNN(SequenceModule):
    """What minGRU and minLSTM share: one input projection of every gate, a diagonal recurrence, and
    its three forms (sequential, log-space parallel, Numba)."""

    state_type = MinRNNState
    backends = ("torch", "numba")
    num_gates: ClassVar[int]
    _kind: ClassVar[str]  # "mingru" or "minlstm": the names of its functions in reference/parallel/numba_scan
    _recurrent: ClassVar[_Scan]
    _parallel: ClassVar[_Scan]
    _step_fn: ClassVar[_Step]

    def __init__(
        self, input_size: int, hidden_size: int | None = None, bias: bool = True, backend: str = "torch"
    ) -> None:
        hidden_size = input_size if hidden_size is None else hidden_size
        _check_positive_int(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        _check_flag(type(self).__name__, bias=bias)
        super().__init__(backend)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = hidden_size
        self.bias = bool(bias)
        gh = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gh, input_size))
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(gh))
        else:
            self.register_parameter("bias_ih", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as the paper's `nn.Linear` layers are: uniform in `[-1/sqrt(input_size), 1/sqrt(input_size)]`."""
        bound = 1.0 / math.sqrt(self.input_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}, backend={self.backend_choice!r}"

    def initial_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MinRNNState:
        """Zeros: the state before the first step (the log-space scan takes it as $\\log 0 = -\\infty$, exactly).

        Args:
            batch_size: number of sequences.
            device: defaults to the parameters' device.
            dtype: defaults to the parameters' dtype.

        Returns:
            `MinRNNState(h)`, `h` `(batch_size, hidden_size)` of zeros.

        Raises:
            ValueError: if `batch_size` is not a positive int.
        """
        _check_positive_int(type(self).__name__, batch_size=batch_size)
        w = self._parameters["weight_ih"]
        device = w.device if device is None else device
        dtype = w.dtype if dtype is None else dtype
        return MinRNNState(torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype))

    def _reference_tensor(self) -> Tensor:
        return self._parameters["weight_ih"]

    def _gates(self, x: Tensor) -> Tensor:
        """`Linear(x)`: every gate's pre-activation, `(..., num_gates * hidden_size)`."""
        return F.linear(x, self._parameters["weight_ih"], self._parameters["bias_ih"])

    def _kernels(self) -> tuple[_Scan, _Step]:
        from . import numba_scan

        return getattr(numba_scan, f"{self._kind}_scan_numba"), getattr(numba_scan, f"{self._kind}_step_numba")

    def _forward(self, x: Tensor, state: MinRNNState) -> tuple[Tensor, MinRNNState]:
        gates = self._gates(x)  # (B, T, G*H)
        h0 = state.h  # (B, H)
        if self._backend == "numba":
            scan = self._kernels()[0]
        elif bool((h0 < 0).any()):  # no logarithm: the log-space scan cannot start there
            scan = type(self)._recurrent
        else:
            scan = type(self)._parallel
        h, h_T = scan(gates, h0)  # (B, T, H), (B, H)
        return h, MinRNNState(h_T)

    def _step(self, x_t: Tensor, state: MinRNNState) -> tuple[Tensor, MinRNNState]:
        gates_t = self._gates(x_t)  # (B, G*H)
        step = self._kernels()[1] if self._backend == "numba" else type(self)._step_fn
        h = step(gates_t, state.h)  # (B, H)
        return h, MinRNNState(h)


class MinGRU(_MinRNN):
    r"""minGRU (Feng et al. 2024, Sec. 3.1): a GRU whose gate and candidate see the input only.

    $$z_t = \sigma(\mathrm{Linear}_z(x_t)), \quad \tilde h_t = g(\mathrm{Linear}_h(x_t)), \quad
    h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t, \quad y_t = h_t,$$

    with the paper's $g(x) = x + 1/2$ ($x \ge 0$), $\sigma(x)$ ($x < 0$) of its log-space version, which
    keeps $h_t > 0$. No gate depends on $h_{t-1}$, so the recurrence is linear in the state,
    $h_t = a_t h_{t-1} + b_t$, and `forward` computes every step at once (backend `"torch"`: the
    log-space parallel scan of Heinsen 2023, `seqmem.minrnn.parallel`); `step` runs the sequential
    form (`seqmem.minrnn.reference`). Backend `"numba"` runs the sequential scan compiled, with a
    hand-derived BPTT backward (`seqmem.minrnn.numba_scan`). All forms agree, in float64 to 1e-10.

    The initial state: the models' states are never negative, and the log-space scan starts from
    $\log h_0$ itself (zeros give $-\infty$, exact). A state with a negative entry, which only a user
    can build, has no logarithm: `forward` then runs the sequential form on the `"torch"` backend (the
    same result, one step at a time); the Numba kernels take any real state.

    `2 * hidden_size * (input_size + 1)` parameters: a third of a GRU's at equal sizes
    (`3 * hidden_size * (input_size + hidden_size + 2)`).

    Args:
        input_size: number of input features `I`.
        hidden_size: number of hidden units `H` (also the output size); `None` for `input_size`.
        bias: learn the bias `bias_ih`.
        backend: `"torch"` or `"numba"`.

    Attributes:
        weight_ih: `(2H, I)`, the rows of $\mathrm{Linear}_z$ then $\mathrm{Linear}_h$ (gate order `z, h`).
        bias_ih: `(2H,)` or `None`.

    Raises:
        TypeError: if `bias` is not a bool.
        ValueError: for a non-positive size or an unknown backend.

    References:
        Feng, L., Tung, F., Ahmed, M. O., Bengio, Y. & Hajimirsadeghi, H. (2024). Were RNNs all we
        needed? arXiv:2410.01201, Sec. 3.1 (minGRU) and the appendix (log-space version, g).
        Heinsen, F. A. (2023). Efficient parallelization of a ubiquitous sequential computation.
        arXiv:2311.06281.

    Example:
        >>> import torch, seqmem
        >>> model = seqmem.MinGRU(input_size=3, hidden_size=8)
        >>> y, state = model(torch.randn(2, 5, 3))
        >>> y.shape, bool((state.h > 0).all())
        (torch.Size([2, 5, 8]), True)
    """

    num_gates = 2
    _kind = "mingru"
    # numbers held per position and hidden unit (kept, transient), for seqmem._memory; from the code, checked
    # with torch.profiler (+ tracemalloc for NumPy). torch: the gates (2H) and the log-space scan's terms,
    # in float64 (log z, log(1 - z), log h~, their cumulative sums and logcumsumexp: twice the bytes).
    # numba: the gates and h (NumPy); training adds the backward's buffers.
    _activations_per_unit = {
        ("torch", False): (1.0, 15.5), ("torch", True): (22.5, 6.0),
        ("numba", False): (1.0, 2.0), ("numba", True): (3.5, 3.0),
    }
    _recurrent = staticmethod(mingru_recurrent)
    _parallel = staticmethod(mingru_parallel)
    _step_fn = staticmethod(mingru_step)


class MinLSTM(_MinRNN):
    r"""minLSTM (Feng et al. 2024, Sec. 3.2): an LSTM whose gates see the input only, normalised to sum to 1.

    $$f_t = \sigma(\mathrm{Linear}_f(x_t)), \quad i_t = \sigma(\mathrm{Linear}_i(x_t)), \quad
    f'_t = \frac{f_t}{f_t + i_t}, \quad i'_t = \frac{i_t}{f_t + i_t},$$
    $$\tilde h_t = g(\mathrm{Linear}_h(x_t)), \quad h_t = f'_t \odot h_{t-1} + i'_t \odot \tilde h_t,
    \quad y_t = h_t.$$

    The normalisation (the paper's Step 3, "ensure output is time-independent in scale") makes
    $h_t$ a convex combination of $h_{t-1}$ and $\tilde h_t$; there is no output gate and no cell state
    apart from $h$. Forms, backends and the initial state as in `MinGRU`.

    `3 * hidden_size * (input_size + 1)` parameters, against an LSTM's
    `4 * hidden_size * (input_size + hidden_size + 2)`.

    Args:
        input_size: number of input features `I`.
        hidden_size: number of hidden units `H` (also the output size); `None` for `input_size`.
        bias: learn the bias `bias_ih`.
        backend: `"torch"` or `"numba"`.

    Attributes:
        weight_ih: `(3H, I)`, the rows of $\mathrm{Linear}_i$, $\mathrm{Linear}_f$, $\mathrm{Linear}_h$
            (gate order `i, f, h`: torch.nn's LSTM order `i, f, g` without the output gate).
        bias_ih: `(3H,)` or `None`.

    Raises:
        TypeError: if `bias` is not a bool.
        ValueError: for a non-positive size or an unknown backend.

    References:
        Feng, L., Tung, F., Ahmed, M. O., Bengio, Y. & Hajimirsadeghi, H. (2024). Were RNNs all we
        needed? arXiv:2410.01201, Sec. 3.2 (minLSTM) and the appendix (log-space version, g).
        Heinsen, F. A. (2023). Efficient parallelization of a ubiquitous sequential computation.
        arXiv:2311.06281.

    Example:
        >>> import torch, seqmem
        >>> model = seqmem.MinLSTM(8)  # hidden_size = input_size = 8
        >>> y, state = model(torch.randn(2, 5, 8))
        >>> y_t, state = model.step(torch.randn(2, 8), state)
        >>> y_t.shape, seqmem.state_nbytes(state)  # 2 x 8 float32
        (torch.Size([2, 8]), 64)
    """

    num_gates = 3
    _kind = "minlstm"
    # as MinGRU's, with three gates (i, f, h) and the normalisation f' = f / (f + i)
    _activations_per_unit = {
        ("torch", False): (1.0, 20.5), ("torch", True): (30.5, 7.0),
        ("numba", False): (1.0, 3.0), ("numba", True): (4.5, 4.0),
    }
    _recurrent = staticmethod(minlstm_recurrent)
    _parallel = staticmethod(minlstm_parallel)
    _step_fn = staticmethod(minlstm_step)
