"""The base class of seqmem's models: input checks, state checks and backend selection.

Every public model derives from `SequenceModule`; its subclasses write `_forward` and `_step`, which
receive inputs already checked, so the equations stay free of validation code.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import numbers
from types import ModuleType
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["ActivationElements", "SequenceModule", "check_choice", "fused_kernels"]


@functools.cache
def fused_kernels(package: str) -> ModuleType:
    """A family's fused streaming kernels, `<package>.numba_stream`, imported on first use (so that
    `import seqmem` imports no numba) and then found in one cached call (per step, an `import`
    statement would cost more than the lookup)."""
    return importlib.import_module(".numba_stream", package)


def check_choice(what: str, value: Any, choices: tuple[str, ...] | list[str], where: str = "") -> str:
    """Return `value` if it is one of `choices`, else raise a `ValueError` listing them.

    Raises:
        TypeError: if `value` is not a string.
        ValueError: if `value` is not in `choices`.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(value, str):
        raise TypeError(f"{prefix}{what} must be a string, one of {list(choices)}; got {value!r}")
    if value not in choices:
        raise ValueError(f"{prefix}unknown {what} {value!r}; expected one of {list(choices)}")
    return value


def _check_real(where: str, name: str, value: Any, *, low: float | None = None, above: bool = False) -> float:
    """Return `value` as a float if it is a real number, finite in the default float dtype, at least `low`
    (or above it); else raise.

    Args:
        where: the class or function, for the message.
        name: the parameter's name, for the message.
        value: what was given.
        low: the smallest value allowed (`None`: no bound).
        above: `value` must be strictly greater than `low`.

    Raises:
        TypeError: if `value` is not a real number (a string, a bool, `None`, a tensor).
        ValueError: if it is NaN, infinite (also once cast to the default dtype, which holds the
            parameters), or below the bound.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    dtype = torch.get_default_dtype()
    if not (math.isfinite(number) and abs(number) <= torch.finfo(dtype).max):
        raise ValueError(f"{where}: {name} must be finite (in {dtype}, the parameters' dtype), got {value!r}")
    if low is not None and (number <= low if above else number < low):
        raise ValueError(f"{where}: {name} must be {'>' if above else '>='} {low}, got {number}")
    return number


def _check_flag(where: str, **flags: Any) -> None:
    """Raise a `TypeError` naming the first of `flags` that is not a bool (`bias="no"` would be truthy)."""
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{where}: {name} must be True or False, got {type(value).__name__} {value!r}")


def _check_positive_int(where: str, **sizes: Any) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


def _check_last(where: str, last: Any, seq_len: int) -> None:
    """Raise the `ValueError` for a `last` (positions to return) that is not an int in `[1, seq_len]`."""
    if isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= seq_len:
        raise ValueError(f"{where}: last must be an int in [1, seq_len] = [1, {seq_len}], got {last!r}")


class ActivationElements(NamedTuple):
    """Numbers a pass of a module holds per (sequence, position), for the estimates of `seqmem._memory`.

    Attributes:
        kept: held until the pass is over: until the backward pass when training (what autograd
            saves, the output), or returned by a forward without gradient (the output, a KV cache).
        transient: the most held only while the module itself runs (temporaries, the backward
            pass's buffers): it does not add up over layers.
    """

    kept: float
    transient: float


class SequenceModule(nn.Module):
    """Base of every seqmem model: checks inputs and states, and dispatches to a backend.

    Subclasses set `input_size`, `output_size`, the class attributes `state_type` and `backends`,
    and implement `initial_state`, `_forward(x, state)` and `_step(x_t, state)`.
    """

    state_type: ClassVar[type]
    backends: ClassVar[tuple[str, ...]] = ("torch",)
    # dims of each state field whose size may vary (the KV cache's time axis): {field: (dim, ...)}
    _free_state_dims: ClassVar[dict[str, tuple[int, ...]]] = {}
    # numbers a pass holds per position and output feature, {(backend, train): (kept, transient)}, for
    # `_activation_elements`; a family whose memory does not scale with its output size overrides that
    _activations_per_unit: ClassVar[dict[tuple[str, bool], tuple[float, float]]] = {}

    input_size: int
    output_size: int

    def __init__(self, backend: str = "torch") -> None:
        super().__init__()
        self._backend = self._backend_choice = "torch"
        self.backend = backend

    # ------------------------------------------------------------------ backend
    @property
    def backend(self) -> str:
        """The backend that runs `forward` and `step`: one of `self.backends`.

        Set it to one of `self.backends`, or to `"auto"`: the `"numba"` kernels where the model has
        them and its parameters are float32/float64 tensors on the CPU, `"torch"` otherwise (CUDA, other
        dtypes, no kernel). With `"auto"` this property reads the backend it resolved to, and it is
        resolved again whenever the model moves (`.to(...)`, `.cuda()`, `.double()`);
        `backend_choice` keeps `"auto"`. The numba kernels are differentiable once: for double
        backward (`create_graph=True`) set `"torch"`.
        """
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        where = type(self).__name__
        if not isinstance(name, str) or (name not in self.backends and name != "auto"):
            raise ValueError(
                f"{where} does not support backend {name!r}; supported backends: "
                f"{list(self.backends)} or 'auto'"
            )
        if name == "numba" and importlib.util.find_spec("numba") is None:
            raise ImportError(f"{where}: backend 'numba' needs the numba package: pip install numba")
        self._backend_choice = name
        self._backend = self._resolve_backend(name)

    @property
    def backend_choice(self) -> str:
        """The backend as it was set: `"auto"`, or the backend itself."""
        return self._backend_choice

    def _resolve_backend(self, name: str) -> str:
        """`"auto"` -> `"numba"` (float32/float64 parameters on the CPU, a model with kernels), else `"torch"`."""
        if name != "auto":
            return name
        ref = next(self.parameters(), None)  # (during __init__ the parameters may not exist yet)
        on_cpu = ref is None or (ref.device.type == "cpu" and ref.dtype in (torch.float32, torch.float64))
        numba = "numba" in self.backends and importlib.util.find_spec("numba") is not None
        return "numba" if on_cpu and numba else "torch"

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        out = super()._apply(fn, *args, **kwargs)
        if getattr(self, "_backend_choice", None) == "auto":  # moved or cast: choose again
            self._backend = self._resolve_backend("auto")
        return out

    def extra_repr(self) -> str:
        return f"backend={self.backend_choice!r}"

    # ------------------------------------------------------------------ protocol
    def initial_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        raise NotImplementedError

    def forward(self, x: Tensor, state: Any | None = None, *, last: int | None = None) -> tuple[Tensor, Any]:
        """Run the model over a whole sequence.

        Args:
            x: `(batch, seq_len, input_size)` input sequence, of the parameters' dtype and device.
            state: the state to start from (e.g. the one a previous call returned), or `None` for
                `initial_state(batch)`.
            last: if given, only the outputs of the last `last` positions are returned (and, where
                the model can, computed): `y` is `forward(x, state)[0][:, -last:]`, the state is the
                same. For a loss read at the end of the sequence (a `target="last"` task). The
                transformer's last block then computes queries, attention and MLP at those positions
                only; recurrent models compute every position, as they must to reach the last.

        Returns:
            `(y, state)`: `y` of shape `(batch, seq_len, output_size)` (`(batch, last, output_size)`
            with `last`), and the state after the last step, so that `forward(x2, forward(x1)[1])`
            equals `forward(cat([x1, x2], 1))`.

        Raises:
            TypeError: if `x` is not a floating tensor of the parameters' dtype, or `state` is not
                this model's state type.
            ValueError: if `x` has the wrong rank or feature size, `seq_len == 0`, `state` does not
                match `x` in batch size, shape, dtype or device, or `last` is not an int in
                `[1, seq_len]`.
        """
        self._check_input(x, rank=3)
        state = self._check_state(state, x)
        if last is None:
            return self._forward(x, state)
        _check_last(type(self).__name__, last, x.shape[1])
        return self._forward_last(x, state, last)

    def step(self, x_t: Tensor, state: Any | None = None) -> tuple[Tensor, Any]:
        """Advance the model by one time step (streaming inference).

        Args:
            x_t: `(batch, input_size)` input at the current step.
            state: the state after the previous step, or `None` for `initial_state(batch)`.

        Returns:
            `(y_t, state)`: `y_t` of shape `(batch, output_size)` and the next state.

        Raises:
            TypeError: as `forward`.
            ValueError: as `forward`, for a `(batch, input_size)` input.
        """
        self._check_input(x_t, rank=2)
        state = self._check_state(state, x_t)
        return self._step(x_t, state)

    def stream(self, batch_size: int = 1) -> Any:
        """Open a stream: push one input at a time, the state kept between calls (inference only).

        On the `"numba"` backend each `push` is one compiled call that reads the parameters in
        place (no tensor allocated, no autograd); otherwise it runs `step` under `torch.no_grad()`.
        Either way the outputs equal `step`'s. Weight updates are seen at the next push. Give each
        thread its own stream. See `seqmem.stream.Stream`.

        Args:
            batch_size: number of sequences streamed side by side.

        Returns:
            A `seqmem.stream.Stream`: `push(x_t)` with `x_t` `(batch_size, input_size)` returns
            `(batch_size, output_size)`; `push_many(x)` with `x` `(batch_size, seq_len, input_size)`
            returns `(batch_size, seq_len, output_size)`; `state` (a copy, this model's state
            type) and `reset(state=None)`.

        Raises:
            ValueError: if `batch_size` is not a positive int.

        Example:
            >>> import torch, seqmem
            >>> gru = seqmem.GRU(4, 16, backend="numba")
            >>> stream = gru.stream()
            >>> y_t = stream.push(torch.randn(1, 4))
            >>> y_t.shape, stream.fused
            (torch.Size([1, 16]), True)
        """
        from .stream import open_stream

        return open_stream(self, batch_size)

    def _stream_layer(self) -> Any:
        """The `seqmem._stream_table.LayerKernel` of this model on its fused streaming kernel, or
        `None` when there is none (the default; families with a kernel override this)."""
        return None

    def _stream_fallback(self, batch_size: int) -> Any:
        """The stream used without a fused kernel: `step` under `torch.no_grad()` (overridable)."""
        from .stream import _StepStream

        return _StepStream(self, batch_size)

    def _forward(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def _forward_last(self, x: Tensor, state: Any, last: int) -> tuple[Tensor, Any]:
        """`forward` returning the last `last` positions' outputs; by default all are computed."""
        y, state = self._forward(x, state)
        return y[:, -last:], state

    def _step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def _activation_elements(
        self, train: bool, batch_size: int, seq_len: int, cached: int = 0
    ) -> ActivationElements | None:
        """The numbers a pass holds per (sequence, position), for memory estimates; `None` if unknown.

        Families derive them from what their code keeps (see `seqmem._memory`); by default, the class's
        `_activations_per_unit` table times `output_size` (the torch backend's numbers for a backend
        the table does not list).

        Args:
            train: a training pass (forward and backward) rather than a forward without gradient.
            batch_size: sequences in the pass (a kernel may take another path for one).
            seq_len: positions in the pass.
            cached: positions already in the state before it (the transformer's KV cache).
        """
        table = self._activations_per_unit
        numbers = table.get((self.backend, train), table.get(("torch", train)))
        if numbers is None:
            return None
        return ActivationElements(numbers[0] * self.output_size, numbers[1] * self.output_size)

    # ------------------------------------------------------------------ checks
    def _reference_tensor(self) -> Tensor | None:
        return next(self.parameters(), None)

    def _check_input(self, x: Any, rank: int) -> None:
        ref = self._reference_tensor()
        # fast path (streaming calls this every step); the slow path explains what is wrong
        if (
            isinstance(x, Tensor)
            and x.dim() == rank
            and x.shape[-1] == self.input_size
            and x.shape[0] > 0
            and (rank == 2 or x.shape[1] > 0)
            and x.is_floating_point()
            and (ref is None or (x.dtype == ref.dtype and x.device == ref.device))
            and (self._backend != "numba" or x.device.type == "cpu")
        ):
            return
        self._explain_input_error(x, rank, ref)

    def _explain_input_error(self, x: Any, rank: int, ref: Tensor | None) -> None:
        """Raise the error that says what is wrong with the input `x`."""
        name = type(self).__name__
        want = f"(batch, seq_len, {self.input_size})" if rank == 3 else f"(batch, {self.input_size})"
        what = "x" if rank == 3 else "x_t"
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: {what} must be a torch.Tensor of shape {want}, got {type(x).__name__}")
        if x.dim() != rank:
            hint = " (use step() for a single time step)" if rank == 3 and x.dim() == 2 else ""
            raise ValueError(f"{name}: {what} must have shape {want}, got {tuple(x.shape)}{hint}")
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: {what} must have shape {want} (input_size={self.input_size}), got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{name}: {what} must hold at least one sequence, got batch 0 in {tuple(x.shape)}")
        if rank == 3 and x.shape[1] == 0:
            raise ValueError(f"{name}: x must hold at least one time step, got seq_len 0 in {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: {what} must be a floating-point tensor, got dtype {x.dtype}")
        if ref is not None:
            if x.dtype != ref.dtype:
                raise TypeError(
                    f"{name}: {what} has dtype {x.dtype} but the parameters are {ref.dtype}; "
                    f"cast one of them (e.g. model.to({x.dtype}) or x.to({ref.dtype}))"
                )
            if x.device != ref.device:
                raise ValueError(
                    f"{name}: {what} is on device {x.device} but the parameters are on {ref.device}; "
                    f"move one of them (model.to(device) or x.to(device))"
                )
        if self._backend == "numba" and x.device.type != "cpu":
            raise ValueError(f"{name}: backend 'numba' runs on the CPU only, got {what} on {x.device}")

    def _state_shapes(self, batch: int) -> tuple[tuple[int, ...], ...]:
        """The shape of each state field for `batch` sequences (free dims at their initial size), cached."""
        cache = self.__dict__.setdefault("_state_shape_cache", {})
        shapes = cache.get(batch)
        if shapes is None:
            shapes = tuple(tuple(t.shape) for t in self.initial_state(batch, device="meta"))
            cache[batch] = shapes
        return shapes

    def _check_state(self, state: Any, x: Tensor) -> Any:
        batch = x.shape[0]
        if state is None:
            return self.initial_state(batch, device=x.device, dtype=x.dtype)
        st = self.state_type
        if not isinstance(state, st):
            raise TypeError(
                f"{type(self).__name__}: state must be a {st.__name__} (as returned by initial_state, "
                f"forward or step), got {type(state).__name__}"
            )
        # fast path (streaming calls this every step): exact shapes, same dtype and device as x
        dtype, device = x.dtype, x.device
        for have, want in zip(state, self._state_shapes(batch)):
            if not (
                isinstance(have, Tensor) and have.shape == want and have.dtype == dtype and have.device == device
            ):
                self._explain_state_error(state, x)
        return state

    def _explain_state_error(self, state: Any, x: Tensor) -> None:
        """Raise the error that says what is wrong with `state`; return if nothing is."""
        batch = x.shape[0]
        name = type(self).__name__
        fields = self.state_type._fields
        shapes = self._state_shapes(batch)
        for field, have, want in zip(fields, state, shapes):
            if not isinstance(have, Tensor):
                raise TypeError(f"{name}: state.{field} must be a tensor, got {type(have).__name__}")
            if have.dim() != len(want):
                raise ValueError(
                    f"{name}: state.{field} must have {len(want)} dimensions, got shape {tuple(have.shape)}"
                )
        if state.batch_size != batch:
            raise ValueError(
                f"{name}: batch mismatch: the input has batch {batch} but the state has batch "
                f"{state.batch_size} (shapes {[tuple(t.shape) for t in state]})"
            )
        for field, have, want in zip(fields, state, shapes):
            free = self._free_state_dims.get(field, ())
            if not all(h == w or d in free for d, (h, w) in enumerate(zip(have.shape, want))):
                shown = tuple("*" if d in free else s for d, s in enumerate(want))
                raise ValueError(
                    f"{name}: state.{field} must have shape {shown} for a batch of {batch}, "
                    f"got {tuple(have.shape)}"
                )
            if have.dtype != x.dtype:
                raise TypeError(f"{name}: state.{field} has dtype {have.dtype} but the input is {x.dtype}")
            if have.device != x.device:
                raise ValueError(f"{name}: state.{field} is on {have.device} but the input is on {x.device}")
