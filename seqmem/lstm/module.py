"""`seqmem.LSTM`: long short-term memory, with optional peepholes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._chrono import check_chrono_t_max, chrono_bias
from .._module import ActivationElements, _check_flag, _check_real, check_choice, fused_kernels
from .._recurrent import RecurrentBase, needs_grad
from .._stream_table import LayerKernel
from ..protocol import LSTMState
from ..stream import layer_step
from .reference import LSTMGates, lstm_cell, lstm_scan

__all__ = ["FORGET_INITS", "LSTM"]

FORGET_INITS = ("constant", "chrono")
"""The initialisations of the forget-gate bias: `forget_bias` for every unit, or chrono."""


class LSTM(RecurrentBase):
    r"""The LSTM, gates `i, f, g, o` as in `torch.nn.LSTM`, with optional peephole connections.

    $c_t = f_t \odot c_{t-1} + i_t \odot g_t$, $h_t = o_t \odot \tanh(c_t)$: along the cell path the
    Jacobian is $\partial c_t / \partial c_{t-1} = \mathrm{diag}(f_t)$, so a gradient survives as long
    as the forget gates stay near 1 (the "constant error carousel").

    Args:
        input_size: number of input features `I`.
        hidden_size: number of hidden units `H` (also the output size).
        bias: learn the biases `bias_ih`, `bias_hh`.
        forget_bias: initial value of the forget-gate bias (the sum `b_if + b_hf`; 1.0 as
            Gers et al. 2000 and Jozefowicz et al. 2015 recommend), with `forget_init="constant"`.
            An initialisation, not a constant added at every step. Ignored when `bias=False`.
        peephole: add the peephole weights `weight_peephole` `(3, H)` (rows `w_ci, w_cf, w_co`) that let
            the gates see the cell state (Gers & Schmidhuber 2000).
        backend: `"torch"` (reference) or `"numba"`.
        forget_init: how `reset_parameters` sets the forget- and input-gate biases. `"constant"`:
            $b_f$ = `forget_bias` for every unit, $b_i$ as `torch.nn` draws it. `"chrono"` (Tallec &
            Ollivier 2018, sec. 4): $b_f \sim \log \mathcal{U}(1, T_{max} - 1)$ unit by unit and
            $b_i = -b_f$, so the characteristic forgetting times $1 / (1 - \sigma(b_f)) = 1 + e^{b_f}$
            are spread uniformly over $[2, T_{max}]$ steps (a constant bias of 1 gives every unit
            about 3.7) and the units that remember long start by writing little. Needs `bias=True`.
            Biases only: `from_torch` copies a module's biases as they are, and `to_torch` copies these.
        chrono_t_max: $T_{max}$, the longest dependency in steps that the initialisation should
            cover (e.g. the sequence length), a number >= 2; required with `forget_init="chrono"`,
            refused otherwise.

    Attributes:
        weight_ih (Tensor): `(4H, I)` input weights, gate blocks `i, f, g, o` as in `torch.nn.LSTM`.
        weight_hh (Tensor): `(4H, H)` recurrent weights, the same blocks.
        bias_ih (Tensor | None): `(4H,)` input bias, or `None` without bias.
        bias_hh (Tensor | None): `(4H,)` recurrent bias, or `None` without bias.
        weight_peephole (Tensor | None): `(3, H)` peephole weights of the `i, f, o` gates, or `None`.

    Raises:
        TypeError: if `forget_bias` is not a real number, `bias`/`peephole` not a bool, `forget_init` not a
            string or `chrono_t_max` not a real number.
        ValueError: for a non-positive size, a NaN or infinite `forget_bias`, an unknown backend or
            `forget_init`, a `chrono_t_max` below 2, given without `forget_init="chrono"`, or chrono without
            biases or with a `forget_bias` other than 1.0 (the constant initialisation's).

    References:
        Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8).
        Gers, F. A., Schmidhuber, J. & Cummins, F. (2000). Learning to forget. Neural Computation 12(10).
        Gers, F. A. & Schmidhuber, J. (2000). Recurrent nets that time and count. IJCNN.
        Jozefowicz, R., Zaremba, W. & Sutskever, I. (2015). An empirical exploration of recurrent
        network architectures. ICML.
        Tallec, C. & Ollivier, Y. (2018). Can recurrent neural networks warp time? ICLR, sec. 4
        (chrono initialisation).

    Example:
        >>> import torch, seqmem
        >>> lstm = seqmem.LSTM(input_size=3, hidden_size=8)
        >>> y, (h, c) = lstm(torch.randn(2, 5, 3))
        >>> y.shape, c.shape
        (torch.Size([2, 5, 8]), torch.Size([2, 8]))
        >>> chrono = seqmem.LSTM(3, 8, forget_init="chrono", chrono_t_max=100)
        >>> b_f = (chrono.bias_ih + chrono.bias_hh)[8:16]  # the f block of i, f, g, o
        >>> bool((1 + b_f.exp() >= 2).all() and (1 + b_f.exp() <= 100).all())  # forgetting times in [2, 100]
        True
    """

    state_type = LSTMState
    backends = ("torch", "numba")
    num_gates = 4
    gate_names = ("i", "f", "g", "o")  # the blocks of weight_ih / weight_hh, in torch.nn order
    torch_classes = (nn.LSTM, nn.LSTMCell)
    # numbers held per position and hidden unit (kept, transient), for seqmem._memory; from the code, checked
    # with torch.profiler (+ tracemalloc for NumPy). torch: gx (4H), each h_t and their stack; training keeps
    # the gates i, f, g, o, c_t, tanh(c_t) and h_t of every step. numba: y only (the input projection is
    # inside each step's product, but for a batch of one: gx, 4H); training keeps y, c_t and the gates (6H),
    # and the backward adds dz (4H).
    _activations_per_unit = {
        ("torch", False): (1.0, 5.25), ("torch", True): (9.0, 5.0),
        ("numba", False): (1.0, 0.5), ("numba", True): (6.5, 4.0),
    }

    def _activation_elements(self, train: bool, batch_size: int, seq_len: int, cached: int = 0) -> ActivationElements:
        elements = super()._activation_elements(train, batch_size, seq_len, cached)
        if self.backend == "numba" and batch_size == 1 and not train:  # gx = W_ih x + b of every step, (T, 4H)
            return ActivationElements(elements.kept, elements.transient + 4 * self.hidden_size)
        return elements

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        forget_bias: float = 1.0,
        peephole: bool = False,
        backend: str = "torch",
        *,
        forget_init: str = "constant",
        chrono_t_max: float | None = None,
    ) -> None:
        forget_bias = _check_real("LSTM", "forget_bias", forget_bias)
        _check_flag("LSTM", peephole=peephole)
        check_choice("forget_init", forget_init, FORGET_INITS, "LSTM")
        t_max = check_chrono_t_max("LSTM", "forget_init", forget_init, chrono_t_max, bool(bias))
        if forget_init == "chrono" and forget_bias != 1.0:
            raise ValueError(
                f"LSTM: forget_bias={forget_bias!r} sets the constant initialisation; with forget_init='chrono' "
                f"the forget-gate biases are drawn (leave forget_bias at 1.0)"
            )
        super().__init__(input_size, hidden_size, bias=bias, backend=backend)
        self.forget_init = forget_init
        self.chrono_t_max = t_max
        self.forget_bias = forget_bias
        self.peephole = bool(peephole)
        if self.peephole:
            self.weight_peephole = nn.Parameter(torch.empty(3, hidden_size))
        else:
            self.register_parameter("weight_peephole", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""`torch.nn` initialisation, then the forget-gate bias by `forget_init`.

        `"constant"`: `b_if + b_hf = forget_bias`. `"chrono"`: `b_if + b_hf = b_f` with
        $b_f \sim \log \mathcal{U}(1, T_{max} - 1)$ per unit and `b_ii + b_hi = -b_f` (the `_hh`
        halves zero). Random draws come from torch's global generator.
        """
        super().reset_parameters()
        if self.bias:
            H = self.hidden_size
            with torch.no_grad():
                if self.forget_init == "chrono":
                    b_f = chrono_bias(H, self.chrono_t_max, like=self.bias_ih)
                    self.bias_ih[H : 2 * H].copy_(b_f)
                    self.bias_ih[:H].copy_(-b_f)
                    self.bias_hh[: 2 * H].zero_()
                else:
                    self.bias_ih[H : 2 * H].fill_(self.forget_bias)
                    self.bias_hh[H : 2 * H].zero_()

    def extra_repr(self) -> str:
        chrono = f", forget_init='chrono', chrono_t_max={self.chrono_t_max}" if self.forget_init == "chrono" else ""
        return super().extra_repr() + f", forget_bias={self.forget_bias}, peephole={self.peephole}" + chrono

    def _params(self) -> tuple[Tensor | None, ...]:
        return (*super()._params(), self._parameters["weight_peephole"])

    def _torch_incompatibility(self) -> str | None:
        return "torch.nn.LSTM has no peephole connections; build with peephole=False" if self.peephole else None

    def _forward(self, x: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        if self.backend == "numba":
            from .numba_scan import lstm_scan_numba as scan
        else:
            scan = lstm_scan
        return scan(x, *self._params(), initial_state=state)

    def _stream_layer(self) -> LayerKernel | None:
        if self._backend != "numba":
            return None
        return fused_kernels(__package__).lstm_layer_kernel(*self._params())

    def _step(self, x_t: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        params = self._params()
        if self._backend != "numba":
            state, _ = lstm_cell(x_t, state, *params)
        elif needs_grad(x_t, *state, *params):  # differentiable: the scan's autograd Function, one step
            from .numba_scan import lstm_scan_numba

            state = lstm_scan_numba(x_t.unsqueeze(1), *params, initial_state=state)[1]
        else:  # the fused streaming kernel, parameters read in place
            return layer_step(fused_kernels(__package__).lstm_layer_kernel, params, x_t, state)
        return state.h, state

    def gates(self, x: Tensor, state: LSTMState | None = None) -> LSTMGates:
        """The gate activations over a sequence (always computed by the `"torch"` reference).

        Args:
            x: `(batch, seq_len, input_size)`.
            state: the state to start from, or `None` for zeros.

        Returns:
            `LSTMGates(i, f, g, o)`, each `(batch, seq_len, hidden_size)`: e.g. the forget gates `f`
            whose running product is the cell path's gradient factor `dc_T/dc_t`.

        Raises:
            TypeError, ValueError: as `forward`.
        """
        self._check_input(x, rank=3)
        state = self._check_state(state, x)
        return lstm_scan(x, *self._params(), initial_state=state, return_gates=True)[2]
