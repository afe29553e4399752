"""`seqmem.GRU`: the gated recurrent unit, in both reset conventions."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .._module import _check_flag, fused_kernels
from .._recurrent import RecurrentBase, needs_grad
from .._stream_table import LayerKernel
from ..protocol import GRUState
from ..stream import layer_step
from .reference import gru_cell, gru_scan

__all__ = ["GRU"]


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

    Attributes:
        weight_ih (Tensor): `(3H, I)` input weights, gate blocks `r, z, n` stacked as in `torch.nn.GRU`.
        weight_hh (Tensor): `(3H, H)` recurrent weights, the same blocks.
        bias_ih (Tensor | None): `(3H,)` input bias, or `None` without bias.
        bias_hh (Tensor | None): `(3H,)` recurrent bias, or `None` without bias.

    Raises:
        TypeError: if `bias` or `reset_after` is not a bool.
        ValueError: for a non-positive size or an unknown backend.

    References:
        Cho, K. et al. (2014). Learning phrase representations using RNN encoder-decoder for statistical
        machine translation. EMNLP, eq. (5)-(8).
        Chung, J. et al. (2014). Empirical evaluation of gated recurrent neural networks on sequence
        modeling. arXiv:1412.3555.

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
    ) -> None:
        _check_flag("GRU", reset_after=reset_after)
        super().__init__(input_size, hidden_size, bias=bias, backend=backend)
        self.reset_after = bool(reset_after)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reset_after={self.reset_after}"

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
