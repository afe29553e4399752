"""`seqmem.RNN`: the Elman recurrent network."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .._module import check_choice, fused_kernels
from .._recurrent import RecurrentBase, needs_grad
from .._stream_table import LayerKernel
from ..protocol import RNNState
from ..stream import layer_step
from .reference import rnn_cell, rnn_scan

__all__ = ["RNN"]


class RNN(RecurrentBase):
    r"""The Elman RNN: $h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})$, $y_t = h_t$.

    Its gradient through time is a product of Jacobians $\mathrm{diag}(\phi'(\cdot)) W_{hh}$, whose
    norm is bounded by $(\|W_{hh}\|_2 \max|\phi'|)^{T-t}$: it vanishes geometrically when that factor
    is below 1 (Bengio et al. 1994; Pascanu et al. 2013).

    Args:
        input_size: number of input features `I`.
        hidden_size: number of hidden units `H` (also the output size).
        nonlinearity: `"tanh"` or `"relu"`.
        bias: learn the biases `bias_ih`, `bias_hh`.
        backend: `"torch"` (reference) or `"numba"` (CPU kernels with a hand-written BPTT).

    Attributes:
        weight_ih (Tensor): `(H, I)` input weights $W_{ih}$.
        weight_hh (Tensor): `(H, H)` recurrent weights $W_{hh}$.
        bias_ih (Tensor | None): `(H,)` input bias $b_{ih}$, or `None` without bias.
        bias_hh (Tensor | None): `(H,)` recurrent bias $b_{hh}$, or `None` without bias.

    Raises:
        TypeError: if `nonlinearity` is not a string or `bias` not a bool.
        ValueError: for a non-positive size, or an unknown nonlinearity or backend.

    References:
        Elman, J. L. (1990). Finding structure in time. Cognitive Science 14(2).
        Bengio, Y., Simard, P. & Frasconi, P. (1994). Learning long-term dependencies with gradient
        descent is difficult. IEEE Trans. Neural Networks 5(2).

    Example:
        >>> import torch, seqmem
        >>> rnn = seqmem.RNN(input_size=3, hidden_size=8)
        >>> y, state = rnn(torch.randn(2, 5, 3))
        >>> y.shape, state.h.shape
        (torch.Size([2, 5, 8]), torch.Size([2, 8]))
    """

    state_type = RNNState
    backends = ("torch", "numba")
    num_gates = 1
    gate_names = ("h",)  # the blocks of weight_ih / weight_hh, in torch.nn order
    torch_classes = (nn.RNN, nn.RNNCell)
    # numbers held per position and hidden unit (kept, transient), for seqmem._memory; from the code, checked
    # with torch.profiler (+ tracemalloc for NumPy). torch: the input projection gx, each h_t in a list and
    # their stack y (training keeps h_t for tanh's backward, and gx's gradient). numba: gx (torch) and y
    # (NumPy); training adds the BPTT buffer delta.
    _activations_per_unit = {
        ("torch", False): (1.0, 2.25), ("torch", True): (2.5, 2.0),
        ("numba", False): (1.0, 1.0), ("numba", True): (1.5, 2.0),
    }

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: str = "tanh",
        bias: bool = True,
        backend: str = "torch",
    ) -> None:
        check_choice("nonlinearity", nonlinearity, ("tanh", "relu"), "RNN")
        super().__init__(input_size, hidden_size, bias=bias, backend=backend)
        self.nonlinearity = nonlinearity
        self.reset_parameters()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"nonlinearity": self.nonlinearity}

    @classmethod
    def _kwargs_from_torch(cls, module: nn.Module) -> dict[str, Any]:
        return {"nonlinearity": module.nonlinearity}

    def _forward(self, x: Tensor, state: RNNState) -> tuple[Tensor, RNNState]:
        if self.backend == "numba":
            from .numba_scan import rnn_scan_numba as scan
        else:
            scan = rnn_scan
        y, h = scan(x, *self._params(), nonlinearity=self.nonlinearity, initial_state=state.h)
        return y, RNNState(h)

    def _stream_layer(self) -> LayerKernel | None:
        if self._backend != "numba":
            return None
        return fused_kernels(__package__).rnn_layer_kernel(*self._params(), self.nonlinearity == "relu")

    def _step(self, x_t: Tensor, state: RNNState) -> tuple[Tensor, RNNState]:
        params = self._params()
        if self._backend == "numba" and not needs_grad(x_t, state.h, *params):  # the fused streaming kernel
            make = fused_kernels(__package__).rnn_layer_kernel
            return layer_step(make, (*params, self.nonlinearity == "relu"), x_t, state)
        if self._backend == "numba":  # differentiable: the scan's autograd Function, one step
            from .numba_scan import rnn_scan_numba

            h = rnn_scan_numba(x_t.unsqueeze(1), *params, self.nonlinearity, state.h)[1]
        else:
            h = rnn_cell(x_t, state.h, *params, nonlinearity=self.nonlinearity)
        return h, RNNState(h)
