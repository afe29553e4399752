"""`seqmem.GRU`: the gated recurrent unit, in both reset conventions."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._chrono import check_chrono_t_max, chrono_bias
from .._module import _check_flag, check_choice, fused_kernels
from .._recurrent import RecurrentBase, needs_grad
from .._stream_table import LayerKernel
from ..protocol import GRUState
from ..stream import layer_step
from .reference import GRUGates, gru_cell, gru_scan

__all__ = ["GRU", "UPDATE_INITS"]

UPDATE_INITS = ("uniform", "chrono")
"""The initialisations of the update-gate bias: `torch.nn`'s uniform draw, or chrono."""


class GRU(RecurrentBase):
    r"""The GRU, gates `r, z, n` as in `torch.nn.GRU`: $h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}$.

    Args:
        input_size: number of input features `I`.
        hidden_size: number of hidden units `H` (also the output size).
        bias: learn the biases `bias_ih`, `bias_hh`.
        reset_after: `True` (default) applies the reset gate after the recurrent product,
            $n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn}))$, as torch.nn and
            cuDNN; `False` is the original Cho et al. (2014) form
            $n_t = \tanh(W_{in} x_t + b_{in} + W_{hn} (r_t \odot h_{t-1}) + b_{hn})$.
            Both have $3(HI + H^2 + 2H)$ parameters.
        backend: `"torch"` (reference) or `"numba"`.
        update_init: how `reset_parameters` sets the update-gate bias. `"uniform"`: as `torch.nn.GRU`,
            $\mathcal{U}(-1/\sqrt{H}, 1/\sqrt{H})$ for `b_iz` and `b_hz`. `"chrono"`: Tallec & Ollivier's
            (2018, sec. 4) initialisation carried over to the GRU, whose $z_t$ is the keep gate here
            (it plays the LSTM forget gate's part, and $1 - z_t$ the input gate's, tied to it):
            $b_{iz} + b_{hz} = b_z \sim \log \mathcal{U}(1, T_{max} - 1)$ unit by unit, so the
            characteristic forgetting times $1 / (1 - \sigma(b_z)) = 1 + e^{b_z}$ are spread uniformly
            over $[2, T_{max}]$ steps. (Papers that write the GRU as $h_t = (1 - z_t) h_{t-1} + z_t n_t$
            have the opposite sign, $b_z = -\log u$.) Needs `bias=True`; biases only, so `from_torch`
            and `to_torch` are unaffected.
        chrono_t_max: $T_{max}$, the longest dependency in steps to cover (e.g. the sequence length),
            a number >= 2; required with `update_init="chrono"`, refused otherwise.

    Attributes:
        weight_ih (Tensor): `(3H, I)` input weights, gate blocks `r, z, n` stacked as in `torch.nn.GRU`.
        weight_hh (Tensor): `(3H, H)` recurrent weights, the same blocks.
        bias_ih (Tensor | None): `(3H,)` input bias, or `None` without bias.
        bias_hh (Tensor | None): `(3H,)` recurrent bias, or `None` without bias.

    Raises:
        TypeError: if `bias` or `reset_after` is not a bool, `update_init` not a string or `chrono_t_max`
            not a real number.
        ValueError: for a non-positive size, an unknown backend or `update_init`, or a `chrono_t_max`
            below 2, given without `update_init="chrono"`, or chrono without biases.

    References:
        Cho, K. et al. (2014). Learning phrase representations using RNN encoder-decoder for statistical
        machine translation. EMNLP, eq. (5)-(8).
        Chung, J. et al. (2014). Empirical evaluation of gated recurrent neural networks on sequence
        modeling. arXiv:1412.3555.
        Tallec, C. & Ollivier, Y. (2018). Can recurrent neural networks warp time? ICLR, sec. 4
        (chrono initialisation).

    Example:
        >>> import torch, seqmem
        >>> gru = seqmem.GRU(input_size=3, hidden_size=8, reset_after=False)
        >>> y, state = gru(torch.randn(2, 5, 3))
        >>> y.shape
        torch.Size([2, 5, 8])
    """

    state_type = GRUState
    backends = ("torch", "numba")
    num_gates = 3
    gate_names = ("r", "z", "n")  # the blocks of weight_ih / weight_hh, in torch.nn order
    torch_classes = (nn.GRU, nn.GRUCell)
    # numbers held per position and hidden unit (kept, transient), for seqmem._memory; from the code, checked
    # with torch.profiler (+ tracemalloc for NumPy). torch: gx (3H), each h_t and their stack; training keeps
    # r, z, n and their products at every step. numba: gx (3H) and y; training keeps y and r, z, n, q (4H),
    # and the backward adds d_gx (3H) and e_n.
    _activations_per_unit = {
        ("torch", False): (1.0, 4.25), ("torch", True): (10.0, 4.0),
        ("numba", False): (1.0, 3.5), ("numba", True): (5.5, 7.5),
    }

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        reset_after: bool = True,
        backend: str = "torch",
        *,
        update_init: str = "uniform",
        chrono_t_max: float | None = None,
    ) -> None:
        _check_flag("GRU", reset_after=reset_after)
        check_choice("update_init", update_init, UPDATE_INITS, "GRU")
        t_max = check_chrono_t_max("GRU", "update_init", update_init, chrono_t_max, bool(bias))
        super().__init__(input_size, hidden_size, bias=bias, backend=backend)
        self.reset_after = bool(reset_after)
        self.update_init = update_init
        self.chrono_t_max = t_max
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""`torch.nn` initialisation; with `update_init="chrono"`, then `b_iz + b_hz = b_z`,
        $b_z \sim \log \mathcal{U}(1, T_{max} - 1)$ per unit (`b_hz` zero), from torch's global generator."""
        super().reset_parameters()
        if self.bias and self.update_init == "chrono":
            H = self.hidden_size
            with torch.no_grad():
                self.bias_ih[H : 2 * H].copy_(chrono_bias(H, self.chrono_t_max, like=self.bias_ih))
                self.bias_hh[H : 2 * H].zero_()

    def extra_repr(self) -> str:
        chrono = f", update_init='chrono', chrono_t_max={self.chrono_t_max}" if self.update_init == "chrono" else ""
        return super().extra_repr() + f", reset_after={self.reset_after}" + chrono

    def _torch_incompatibility(self) -> str | None:
        if self.reset_after:
            return None
        return (
            "torch.nn.GRU computes the reset_after=True form only; "
            "this model has reset_after=False (Cho et al. 2014)"
        )

    @classmethod
    def _kwargs_from_torch(cls, module: nn.Module) -> dict[str, Any]:
        return {"reset_after": True}

    def _forward(self, x: Tensor, state: GRUState) -> tuple[Tensor, GRUState]:
        if self.backend == "numba":
            from .numba_scan import gru_scan_numba as scan
        else:
            scan = gru_scan
        y, h = scan(x, *self._params(), reset_after=self.reset_after, initial_state=state.h)
        return y, GRUState(h)

    def _stream_layer(self) -> LayerKernel | None:
        if self._backend != "numba":
            return None
        return fused_kernels(__package__).gru_layer_kernel(*self._params(), self.reset_after)

    def _step(self, x_t: Tensor, state: GRUState) -> tuple[Tensor, GRUState]:
        params = self._params()
        if self._backend == "numba" and not needs_grad(x_t, state.h, *params):  # the fused streaming kernel
            return layer_step(fused_kernels(__package__).gru_layer_kernel, (*params, self.reset_after), x_t, state)
        if self._backend == "numba":  # differentiable: the scan's autograd Function, one step
            from .numba_scan import gru_scan_numba

            h = gru_scan_numba(x_t.unsqueeze(1), *params, self.reset_after, state.h)[1]
        else:
            h = gru_cell(x_t, state.h, *params, reset_after=self.reset_after)
        return h, GRUState(h)

    def gates(self, x: Tensor, state: GRUState | None = None) -> GRUGates:
        """The gate activations over a sequence (always computed by the `"torch"` reference).

        Args:
            x: `(batch, seq_len, input_size)`.
            state: the state to start from, or `None` for zeros.

        Returns:
            `GRUGates(r, z, n)`, each `(batch, seq_len, hidden_size)`: e.g. the update gates `z`, whose
            running product is the gain of the direct path `h_{t-1} -> h_t` (the LSTM forget gate's part).

        Raises:
            TypeError, ValueError: as `forward`.
        """
        self._check_input(x, rank=3)
        state = self._check_state(state, x)
        return gru_scan(x, *self._params(), reset_after=self.reset_after, initial_state=state.h,
                        return_gates=True)[2]
