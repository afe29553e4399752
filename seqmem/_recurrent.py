"""What the three classic recurrences (Elman RNN, LSTM, GRU) share: the `torch.nn` parameter layout,
its initialisation, and weight transfer to and from `torch.nn.RNN/LSTM/GRU` and their cells."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ._module import SequenceModule, _check_flag, _check_positive_int


def needs_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd records an operation on these tensors (grad mode on and one requires grad)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class RecurrentBase(SequenceModule):
    """Parameters `weight_ih (G*H, I)`, `weight_hh (G*H, H)`, `bias_ih (G*H)`, `bias_hh (G*H)`, laid
    out as in `torch.nn` (G gates stacked along the first axis), initialised as `torch.nn` does:
    uniform in `[-1/sqrt(H), 1/sqrt(H)]`."""

    num_gates: ClassVar[int]
    torch_classes: ClassVar[tuple[type[nn.Module], type[nn.Module]]]  # (sequence module, cell)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, backend: str = "torch") -> None:
        _check_positive_int(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        _check_flag(type(self).__name__, bias=bias)
        super().__init__(backend)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = hidden_size
        self.bias = bool(bias)
        gh = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gh, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gh, hidden_size))
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(gh))
            self.bias_hh = nn.Parameter(torch.empty(gh))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def reset_parameters(self) -> None:
        """Initialise every parameter uniformly in `[-1/sqrt(hidden_size), 1/sqrt(hidden_size)]`."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}, backend={self.backend_choice!r}"

    def initial_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        """Zeros: the state before the first step.

        Args:
            batch_size: number of sequences.
            device: defaults to the parameters' device.
            dtype: defaults to the parameters' dtype.

        Returns:
            The family's state, each tensor `(batch_size, hidden_size)` of zeros.
        """
        _check_positive_int(type(self).__name__, batch_size=batch_size)
        device = self.weight_hh.device if device is None else device
        dtype = self.weight_hh.dtype if dtype is None else dtype
        zeros = [
            torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
            for _ in self.state_type._fields
        ]
        return self.state_type(*zeros)

    def _reference_tensor(self) -> Tensor:
        return self._parameters["weight_hh"]

    def _params(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        p = self._parameters  # direct reads: nn.Module.__getattr__ costs ~0.7 us a name, per streaming step
        return p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]

    # ------------------------------------------------------------------ torch.nn interop
    def _torch_kwargs(self) -> dict[str, Any]:
        """Extra constructor arguments of the matching `torch.nn` class."""
        return {}

    @classmethod
    def _kwargs_from_torch(cls, module: nn.Module) -> dict[str, Any]:
        return {}

    @classmethod
    def from_torch(cls, module: nn.Module, **kwargs: Any) -> Any:
        """Build this model with the weights of a `torch.nn` recurrent module, outputs identical.

        Args:
            module: a single-layer, unidirectional `torch.nn.RNN/LSTM/GRU` (either `batch_first`,
                with or without bias, no `proj_size`) or the matching `*Cell`.
            **kwargs: passed to the constructor (e.g. `backend="numba"`).

        Returns:
            A new model, on the module's device and dtype, whose parameters are copies.

        Raises:
            TypeError: if `module` is not of the matching `torch.nn` class.
            ValueError: if it has several layers, two directions or a projection.
        """
        seq_cls, cell_cls = cls.torch_classes
        if not isinstance(module, (seq_cls, cell_cls)):
            raise TypeError(
                f"{cls.__name__}.from_torch expects torch.nn.{seq_cls.__name__} or torch.nn.{cell_cls.__name__}, "
                f"got {type(module).__name__}"
            )
        suffix = ""
        if isinstance(module, seq_cls):
            if module.num_layers != 1:
                raise ValueError(f"{cls.__name__}.from_torch needs num_layers=1, got {module.num_layers}")
            if module.bidirectional:
                raise ValueError(f"{cls.__name__}.from_torch needs a unidirectional module, got bidirectional")
            if getattr(module, "proj_size", 0):
                raise ValueError(f"{cls.__name__}.from_torch needs proj_size=0, got {module.proj_size}")
            suffix = "_l0"
        ref = getattr(module, "weight_hh" + suffix)
        model = cls(module.input_size, module.hidden_size, bias=module.bias,
                    **cls._kwargs_from_torch(module), **kwargs)
        model.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                if getattr(model, name) is not None:
                    getattr(model, name).copy_(getattr(module, name + suffix))
        return model

    def _torch_incompatibility(self) -> str | None:
        """Why `torch.nn` cannot represent this model, or `None` if it can."""
        return None

    def to_torch(self, cell: bool = False) -> nn.Module:
        """The equivalent `torch.nn` module, with copies of the weights.

        Args:
            cell: return the `*Cell` class instead of the sequence module.

        Returns:
            A `batch_first=True` `torch.nn.RNN/LSTM/GRU` (or its `*Cell`), on this model's device and
            dtype, whose outputs equal this model's.

        Raises:
            ValueError: if this model has a variant that `torch.nn` lacks (LSTM peepholes,
                GRU `reset_after=False`).
        """
        reason = self._torch_incompatibility()
        if reason is not None:
            raise ValueError(f"{type(self).__name__}.to_torch: {reason}")
        seq_cls, cell_cls = self.torch_classes
        kw = dict(self._torch_kwargs())
        if cell:
            module = cell_cls(self.input_size, self.hidden_size, bias=self.bias, **kw)
            suffix = ""
        else:
            module = seq_cls(self.input_size, self.hidden_size, bias=self.bias, batch_first=True, **kw)
            suffix = "_l0"
        module.to(device=self.weight_hh.device, dtype=self.weight_hh.dtype)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                if getattr(self, name) is not None:
                    getattr(module, name + suffix).copy_(getattr(self, name))
        return module
