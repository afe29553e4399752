"""Streaming inference: push one token at a time through a model or a whole network.

`model.stream(batch_size)` (every seqmem model) and `SequenceNetwork.stream(batch_size)` return a
[`Stream`][seqmem.stream.Stream]: `push(x_t) -> y_t`, `push_many(x) -> y`, `state`, `reset()`.

How a token runs:

- **Fused** (`stream.fused`): every layer has a compiled kernel (the `"numba"` backend of the
  RNN, LSTM, GRU and selective SSM), and the whole stack (embedding row or input map, every layer
  with its pre-norm and residual, the final LayerNorm and head) is one compiled call per token
  over buffers the stream owns: no tensor is allocated, no autograd graph is built, no Python runs
  per layer. The kernel reads the parameters where they live, so any write to them (an optimiser
  step, `copy_`, `load_state_dict`, a write through `.data`) is seen at the next token; before
  each token the stream checks that no parameter was re-bound (`param.data = ...`, `module.to(...)`,
  a new `nn.Parameter`) and rebuilds its table if one was.
- **Otherwise** the model's own `step` runs under `torch.no_grad()`; the transformer's stream keeps
  its keys and values in a buffer that doubles when full instead of reallocating the cache at
  every token; a network runs its embedding, pre-norms, residuals and head with torch around the
  layers' streams.

A stream is not shared between threads: give each thread its own (streams are independent, and
the kernels release the GIL, so several streams run in parallel). Using one stream from two
threads at once raises `RuntimeError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ._stream_table import (
    BAD_TOKEN,
    IN_FEATURES,
    IN_LINEAR,
    IN_TOKENS,
    T_LAYERS,
    T_X_SB,
    T_X_ST,
    T_Y_SB,
    T_Y_ST,
    LayerKernel,
    address,
    float_bits,
)
from .protocol import map_state

__all__ = ["Stream", "kernel_step", "layer_step", "open_network_stream", "open_stream"]

_FLOATS = (torch.float32, torch.float64)
_INTS = (torch.int64, torch.int32, torch.int16, torch.uint8)
_NP = {torch.float32: np.float32, torch.float64: np.float64}
_data_ptr = Tensor.data_ptr


# ---------------------------------------------------------------------------- parameter re-binding
class _Generation:
    """Counts parameter registrations anywhere in the process (a new `nn.Parameter` assigned to a
    module), so a stream notices a replaced parameter with one integer comparison per token."""

    value = 0
    handle: Any = None

    @classmethod
    def watch(cls) -> None:
        if cls.handle is None:
            from torch.nn.modules.module import register_module_parameter_registration_hook

            cls.handle = register_module_parameter_registration_hook(cls._bump)

    @classmethod
    def _bump(cls, module: nn.Module, name: str, param: Tensor) -> None:
        cls.value += 1


def _kernel_ready(tensors: Sequence[Tensor]) -> torch.dtype | None:
    """The common dtype if every tensor is a contiguous CPU float32/float64 tensor of one dtype."""
    dtype = None
    for t in tensors:
        if t.device.type != "cpu" or t.dtype not in _FLOATS or not t.is_contiguous():
            return None
        if dtype is None:
            dtype = t.dtype
        elif t.dtype != dtype:
            return None
    return dtype


# ---------------------------------------------------------------------------- the table
def _header(
    B: int,
    n_layers: int,
    width: int,
    in_kind: int,
    in_size: int,
    in_out: int,
    out_size: int,
    embed: nn.Module | None = None,
    norm: nn.Module | None = None,
    head: nn.Module | None = None,
) -> list[int]:
    """The header of a table (`seqmem._stream_table`), strides set for one step of contiguous input."""
    x_sb = 1 if in_kind == IN_TOKENS else in_size
    return [
        B, n_layers,
        in_kind, in_size, address(getattr(embed, "weight", None)), address(getattr(embed, "bias", None)), x_sb, 0,
        int(norm is not None), address(getattr(norm, "weight", None)), address(getattr(norm, "bias", None)),
        float_bits(getattr(norm, "eps", 0.0)),
        int(head is not None), address(getattr(head, "weight", None)), address(getattr(head, "bias", None)),
        out_size, out_size, 0,
        0, 0, 0, width, 0, in_out,
    ]  # fmt: skip


def kernel_step(layer: LayerKernel, x_t: Tensor, state: Sequence[Tensor]) -> tuple[Tensor, Any] | None:
    """One step of one layer on its fused kernel: the no-grad `step` of the numba backend.

    Reads the parameters in place and writes a new state into fresh tensors (the caller's state
    is left as it was). The kernel's table and work buffer are kept per thread and per sizes, so
    calls from several threads are safe.

    Args:
        layer: from the model's `_stream_layer()`.
        x_t: `(batch, in_size)` input, of the parameters' dtype, on the CPU.
        state: the state's fields, each `(batch, *shape)`.

    Returns:
        `(y_t, state)`, or `None` if a parameter is not a contiguous CPU tensor of `x_t`'s dtype
        (the caller then takes its general path).
    """
    dtype = x_t.dtype
    if dtype not in _NP or not x_t.is_cpu:
        return None
    ptrs = []
    for p in layer.params:
        if p is None:
            ptrs.append(0)
        elif p.dtype is dtype and p.is_cpu and p.is_contiguous():
            ptrs.append(p.data_ptr())
        else:
            return None
    B = x_t.shape[0]
    x = x_t if x_t.is_contiguous() else x_t.contiguous()
    ins = [s if s.is_contiguous() else s.contiguous() for s in state]
    np_dtype = _NP[dtype]
    # fresh tensors, each with its own memory (a kept state pins nothing else); numpy allocates faster
    outs = [torch.from_numpy(np.empty((B, *shape), np_dtype)) for shape in layer.state_shapes]
    y = outs[0] if layer.output_is_state else torch.from_numpy(np.empty((B, layer.out_size), np_dtype))
    key = (B, layer.in_size, layer.out_size, layer.sizes, len(ptrs), len(outs), np_dtype, layer.scratch,
           layer.scratch_fixed)
    scratch = _STEP_SCRATCH.__dict__
    made = scratch.get(key)
    if made is None:  # this thread's table and work buffer for these sizes, made once
        width = max(layer.in_size, layer.out_size)
        start = _header(B, 1, width, IN_FEATURES, layer.in_size, layer.in_size, layer.out_size)
        fields = (T_LAYERS + 1, 0, 0, 0, 0, 0, layer.in_size, layer.out_size, *layer.sizes)
        head = np.array((*start, *fields), dtype=np.int64)
        tab = np.zeros(head.shape[0] + len(ptrs) + 2 * len(outs), dtype=np.int64)
        tab[: head.shape[0]] = head
        buf = np.empty(3 * B * width + B * layer.scratch + layer.scratch_fixed, np_dtype)
        made = scratch[key] = (tab, buf, head.shape[0])
    tab, buf, n = made
    tab[n:] = (*ptrs, *[t.data_ptr() for t in ins], *[t.data_ptr() for t in outs])
    layer.kernel(tab, buf, x.data_ptr(), 1, y.data_ptr())
    return y, layer.make_state(*outs)


_STEP_SCRATCH = threading.local()
"""`kernel_step`'s table and work buffer per thread, by sizes: each thread writes only its own, so
calls from several threads never share one (a call does not re-enter itself)."""


def layer_step(
    make: Callable[..., LayerKernel], params: tuple[Tensor | None, ...], x_t: Tensor, state: Sequence[Tensor]
) -> tuple[Tensor, Any]:
    """`kernel_step` on the layer `make(*params)`, with contiguous copies of any non-contiguous
    parameter (for this call only); the arguments are checked by the caller.

    Args:
        make: builds the layer's `LayerKernel` from its parameters (e.g. `lstm_layer_kernel`).
        params: the parameters, as `make` takes them (non-tensors, such as flags, pass through).
        x_t: `(batch, in_size)` input of the parameters' dtype, on the CPU.
        state: the state's fields.

    Returns:
        `(y_t, state)` as the layer's `step`.
    """
    out = kernel_step(make(*params), x_t, state)
    if out is None:
        params = tuple(p.detach().contiguous() if isinstance(p, Tensor) else p for p in params)
        out = kernel_step(make(*params), x_t, state)
    if out is None:  # pragma: no cover - the callers check dtypes and devices first
        raise ValueError("the streaming kernel needs float32/float64 CPU tensors of one dtype")
    return out


# ---------------------------------------------------------------------------- streams
class Stream:
    """A stream of tokens through a model or a network, one step at a time (inference only).

    Made by `model.stream(batch_size)` or `SequenceNetwork.stream(batch_size)`. It carries the state
    between calls, so `push` needs only the next input; `state` and `reset` read and set it.

    Attributes:
        batch_size: number of sequences streamed side by side.
        position: tokens pushed since the last `reset` (after `reset(cache)` of a transformer's
            stream, the positions the cache holds: the absolute position of the next token).

    Example:
        >>> import torch, seqmem
        >>> lstm = seqmem.LSTM(3, 8)
        >>> stream = lstm.stream(batch_size=2)
        >>> y = stream.push(torch.randn(2, 3))
        >>> y.shape, stream.position
        (torch.Size([2, 8]), 1)
        >>> ys = stream.push_many(torch.randn(2, 5, 3))  # 5 more steps
        >>> ys.shape, stream.state.c.shape
        (torch.Size([2, 5, 8]), torch.Size([2, 8]))
    """

    def __init__(self, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"stream: batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        self.position = 0

    @property
    def fused(self) -> bool:
        """Whether each token runs as one compiled call for the whole stack."""
        return False

    def push(self, x_t: Tensor) -> Tensor:
        """Advance every sequence by one step.

        Args:
            x_t: `(batch,)` int token ids (a token network), or `(batch, input_size)` features.

        Returns:
            `(batch, output_size)` the output at this step. A fused stream returns its own buffer,
            which the next `push` overwrites: `clone()` it to keep it.

        Raises:
            TypeError: for an input of the wrong type or dtype.
            ValueError: for a wrong shape, a batch other than `batch_size`, or a token id outside
                the vocabulary (then nothing is updated).
            RuntimeError: if the stream is in use by another thread.
        """
        raise NotImplementedError

    def push_many(self, x: Tensor) -> Tensor:
        """Advance every sequence by `seq_len` steps (the same as `seq_len` pushes).

        Args:
            x: `(batch, seq_len)` int token ids, or `(batch, seq_len, input_size)` features.

        Returns:
            `(batch, seq_len, output_size)` the output at every step (a new tensor).

        Raises:
            TypeError, ValueError, RuntimeError: as `push`, for the sequence shapes.
        """
        x = self._check_sequence(x)
        return torch.stack([self.push(x[:, t]).clone() for t in range(x.shape[1])], dim=1)

    @property
    def state(self) -> Any:
        """A copy of the current state, owned by the caller: the model's state type (`LSTMState`,
        `KVCache`, ...), or a tuple with one per layer for a network (as their `step` returns)."""
        raise NotImplementedError

    def reset(self, state: Any | None = None) -> None:
        """Start again from the initial state, or from a given one.

        Args:
            state: `None` for the initial state (zeros, or an empty cache), or a state as `state`,
                `forward` or `step` return it (copied in; the caller keeps theirs).

        Raises:
            TypeError: if `state` is not of the model's state type.
            ValueError: if its shapes do not fit this stream's batch size and model.
        """
        raise NotImplementedError

    def _check_sequence(self, x: Any) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[1] == 0:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{type(self).__name__}.push_many: x must be (batch, seq_len) tokens or "
                f"(batch, seq_len, input_size) features with seq_len >= 1, got {shape}"
            )
        return x

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_size={self.batch_size}, position={self.position}, "
            f"fused={self.fused})"
        )


def _adopt_state(model: Any, state: Any, batch: int) -> Any:
    """A copy of `state` after checking that it is a state of `model` for `batch` sequences."""
    kind = getattr(model, "state_type", None)
    if kind is not None and not isinstance(state, kind):
        raise TypeError(
            f"stream.reset: state must be a {kind.__name__} (as `state`, forward or step return), "
            f"got {type(state).__name__}"
        )
    got = getattr(state, "batch_size", batch)
    if got != batch:
        raise ValueError(f"stream.reset: the state holds {got} sequences but the stream streams {batch}")
    return map_state(state, lambda t: t.detach().clone())


class _StepStream(Stream):
    """The model's own `step` under `torch.no_grad()` (models without a fused kernel)."""

    def __init__(self, model: Any, batch_size: int) -> None:
        super().__init__(batch_size)
        self._model = model
        self.reset()

    def push(self, x_t: Tensor) -> Tensor:
        if isinstance(x_t, Tensor) and x_t.dim() >= 1 and x_t.shape[0] != self.batch_size:
            raise ValueError(
                f"stream.push: the stream has batch {self.batch_size}, got an input of shape {tuple(x_t.shape)}"
            )
        with torch.no_grad():
            y, self._state = self._model.step(x_t, self._state)
        self.position += 1
        return y

    @property
    def state(self) -> Any:
        return map_state(self._state, torch.clone)

    def reset(self, state: Any | None = None) -> None:
        ref = self._model.initial_state(self.batch_size)
        if state is not None:
            state = _adopt_state(self._model, state, self.batch_size)
            free = getattr(self._model, "_free_state_dims", {})
            for field, have, want in zip(getattr(ref, "_fields", ()), state, ref, strict=False):
                if have.dim() != want.dim() or not all(
                    h == w or d in free.get(field, ()) for d, (h, w) in enumerate(zip(have.shape, want.shape))
                ):
                    raise ValueError(
                        f"stream.reset: state.{field} has shape {tuple(have.shape)}, expected {tuple(want.shape)}"
                    )
            ref = map_state(state, lambda t, r=next(iter(ref)): t.to(device=r.device, dtype=r.dtype))
        self._state = ref
        self.position = 0


class _Plan(NamedTuple):
    """A stack that one fused kernel can run: the stages and the modules they read."""

    layers: tuple[tuple[LayerKernel, nn.Module | None, bool], ...]  # (layer, pre-norm, residual)
    embed: nn.Module | None  # nn.Embedding (tokens), nn.Linear, or None (features copied)
    norm: nn.Module | None  # nn.LayerNorm or None
    head: nn.Module | None  # nn.Linear or None
    tokens: bool
    in_size: int  # vocabulary size, or features per input row

    def tensors(self) -> list[Tensor]:
        """Every parameter the kernel reads."""
        out = [p for layer, _, _ in self.layers for p in layer.params if p is not None]
        for m in (*(pre for _, pre, _ in self.layers), self.embed, self.norm, self.head):
            if m is not None:
                out += [p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None]
        return out


class _KernelStream(Stream):
    """The fused path: one compiled call per token over buffers the stream owns."""

    def __init__(
        self,
        batch_size: int,
        plan_fn: Callable[[], _Plan | None],
        fallback_fn: Callable[[], Stream],
        check_input: Callable[[Tensor, int], Tensor],
        single: bool,
    ) -> None:
        super().__init__(batch_size)
        _Generation.watch()
        self._plan_fn = plan_fn
        self._fallback_fn = fallback_fn
        self._check_input = check_input  # (x, rank) -> a contiguous tensor the kernel reads
        self._single = single  # a model's stream: `state` is the layer's state, not a tuple
        self._fallback: Stream | None = None
        self._lock = threading.Lock()
        self._states: list[list[Tensor]] = []
        plan = plan_fn()
        if plan is None or not self._build(plan, None):
            self._fallback = fallback_fn()

    # -------------------------------------------------------------- building
    def _build(self, plan: _Plan, carried: Any) -> bool:
        """(Re)build buffers and table from `plan`; `False` if the kernel cannot run it."""
        tensors = plan.tensors()
        dtype = _kernel_ready(tensors)
        if dtype is None:
            return False
        B = self.batch_size
        layers = plan.layers
        widths = [plan.in_size if not plan.tokens else 1]
        in_out = plan.embed.weight.shape[1 if plan.tokens else 0] if plan.embed is not None else plan.in_size
        widths.append(in_out)
        widths += [n for layer, _, _ in layers for n in (layer.in_size, layer.out_size)]
        out_size = plan.head.weight.shape[0] if plan.head is not None else widths[-1]
        widths.append(out_size)
        width = max(widths)
        scratch = max((B * layer.scratch + layer.scratch_fixed for layer, _, _ in layers), default=0)
        states = [[torch.zeros((B, *shape), dtype=dtype) for shape in layer.state_shapes] for layer, _, _ in layers]
        self._plan = plan
        self._states = states
        self._dtype = dtype
        if carried is not None:
            self._load(carried)
        self._buf = np.zeros(3 * B * width + scratch, _NP[dtype])
        self._y = torch.zeros(B, out_size, dtype=dtype)
        self._y_addr = self._y.data_ptr()
        self.output_size = out_size
        kind = IN_TOKENS if plan.tokens else (IN_LINEAR if plan.embed is not None else IN_FEATURES)
        tab = _header(B, len(layers), width, kind, plan.in_size, in_out, out_size, plan.embed, plan.norm, plan.head)
        offset = T_LAYERS + len(layers)
        records = []
        for (layer, pre, residual), st in zip(layers, states, strict=True):
            tab.append(offset)
            rec = layer.record(st, st, pre, residual)
            records += rec
            offset += len(rec)
        self._tab = np.array(tab + records, dtype=np.int64)
        self._strides = (tab[T_X_SB], tab[T_X_ST], tab[T_Y_SB], tab[T_Y_ST])  # of one step
        # what an input the kernel reads as it is looks like (anything else takes the checked path)
        self._x_dtype = torch.int64 if plan.tokens else dtype
        self._x_shape = torch.Size((B,) if plan.tokens else (B, plan.in_size))
        self._kernel = layers[0][0].kernel
        self._tensors = tensors
        self._ptrs = tuple(map(_data_ptr, tensors))
        self._generation = _Generation.value
        return True

    def _revalidate(self) -> None:
        """A parameter was re-bound: rebuild the table (and the buffers, for a new dtype), or move
        to the unfused path if the kernel can no longer run the stack."""
        generation = _Generation.value
        plan = self._plan_fn()
        if plan is not None:
            tensors = plan.tensors()
            same = len(tensors) == len(self._tensors) and all(a is b for a, b in zip(tensors, self._tensors))
            if same and tuple(map(_data_ptr, tensors)) == self._ptrs and _kernel_ready(tensors) == self._dtype:
                self._generation = generation  # nothing the kernel reads has moved
                return
        carried = self.state
        if plan is None or not self._build(plan, carried):
            self._fallback = self._fallback_fn()
            self._fallback.reset(carried)
            self._fallback.position = self.position

    # -------------------------------------------------------------- running
    @property
    def fused(self) -> bool:
        return self._fallback is None

    def _bad_tokens(self, x: Tensor) -> None:
        vocab = self._plan.in_size
        raise ValueError(f"stream.push: token ids must be in [0, {vocab}) (the vocabulary), got {x.tolist()}")

    def _run_sequence(self, x: Tensor, y: Tensor) -> None:
        """`x (B, T[, F])` contiguous through the kernel into `y (B, T, O)`."""
        tab = self._tab
        tab[T_X_SB], tab[T_X_ST] = x.stride(0), x.stride(1)
        tab[T_Y_SB], tab[T_Y_ST] = y.stride(0), y.stride(1)
        try:
            status = self._kernel(tab, self._buf, x.data_ptr(), x.shape[1], y.data_ptr())
        finally:
            tab[T_X_SB], tab[T_X_ST], tab[T_Y_SB], tab[T_Y_ST] = self._strides
        if status == BAD_TOKEN:
            self._bad_tokens(x)
        self.position += x.shape[1]

    def _enter(self, what: str) -> Stream | None:
        """Take the stream's lock and check the parameters; the unfused stream to delegate to, if any.
        The caller releases the lock."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(f"stream.{what}: this stream is in use by another thread; give each thread its own")
        try:
            if self._fallback is None and (
                _Generation.value != self._generation or tuple(map(_data_ptr, self._tensors)) != self._ptrs
            ):
                self._revalidate()
        except BaseException:
            self._lock.release()
            raise
        return self._fallback

    def _check_batch(self, x: Tensor, what: str) -> None:
        if x.shape[0] != self.batch_size:
            raise ValueError(
                f"stream.{what}: the stream has batch {self.batch_size}, got an input of shape {tuple(x.shape)}"
            )

    def push(self, x_t: Tensor) -> Tensor:
        # The per-token path, kept lean: a few attribute reads, then the compiled call.
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("stream.push: this stream is in use by another thread; give each thread its own")
        try:
            if (
                self._fallback is not None
                or _Generation.value != self._generation
                or tuple(map(_data_ptr, self._tensors)) != self._ptrs
            ):
                self._revalidate()
                if self._fallback is not None:
                    y = self._fallback.push(x_t)
                    self.position = self._fallback.position
                    return y
            if not (
                x_t.__class__ is Tensor
                and x_t.dtype is self._x_dtype
                and x_t.shape == self._x_shape
                and x_t.is_contiguous()
                and x_t.is_cpu
            ):  # the general path: full checks (clear errors), then a contiguous copy of the right dtype
                x_t = self._check_input(x_t, 1)
                self._check_batch(x_t, "push")
            if self._kernel(self._tab, self._buf, x_t.data_ptr(), 1, self._y_addr) != 0:
                self._bad_tokens(x_t)
            self.position += 1
            return self._y
        finally:
            self._lock.release()

    def push_many(self, x: Tensor) -> Tensor:
        x = self._check_sequence(x)
        fallback = self._enter("push_many")
        try:
            if fallback is not None:
                y = fallback.push_many(x)
                self.position = fallback.position
                return y
            x = self._check_input(x, 2)
            self._check_batch(x, "push_many")
            y = torch.empty(x.shape[0], x.shape[1], self.output_size, dtype=self._dtype)
            self._run_sequence(x, y)
            return y
        finally:
            self._lock.release()

    # -------------------------------------------------------------- state
    @property
    def state(self) -> Any:
        if self._fallback is not None:
            return self._fallback.state
        states = tuple(
            layer.make_state(*(t.clone() for t in fields))
            for (layer, _, _), fields in zip(self._plan.layers, self._states, strict=True)
        )
        return states[0] if self._single else states

    def _load(self, state: Any) -> None:
        """Copy `state` (checked) into the state buffers."""
        states = (state,) if self._single else state
        if not isinstance(states, tuple) or len(states) != len(self._states):
            raise TypeError(
                f"stream.reset: state must be a tuple of {len(self._states)} layer states (as `state` returns), "
                f"got {type(state).__name__}"
            )
        for (layer, _, _), fields, st in zip(self._plan.layers, self._states, states, strict=True):
            kind = layer.make_state
            if isinstance(kind, type) and not isinstance(st, kind):
                raise TypeError(
                    f"stream.reset: state must be a {kind.__name__} (as `state`, forward or step return), "
                    f"got {type(st).__name__}"
                )
            for name, have, buf in zip(getattr(st, "_fields", range(len(fields))), st, fields, strict=True):
                if not isinstance(have, Tensor) or have.shape != buf.shape:
                    shape = tuple(have.shape) if isinstance(have, Tensor) else type(have).__name__
                    raise ValueError(
                        f"stream.reset: state.{name} must have shape {tuple(buf.shape)} "
                        f"(batch {self.batch_size}), got {shape}"
                    )
        for fields, st in zip(self._states, states, strict=True):
            for have, buf in zip(st, fields, strict=True):
                buf.copy_(have.detach())

    def reset(self, state: Any | None = None) -> None:
        with self._lock:
            if self._fallback is not None:
                self._fallback.reset(state)
            elif state is None:
                for fields in self._states:
                    for t in fields:
                        t.zero_()
            else:
                self._load(state)
            self.position = 0


# ---------------------------------------------------------------------------- model streams
def _model_input(model: Any) -> Callable[[Tensor, int], Tensor]:
    """The input check of a model's stream: the model's own (as `step` and `forward`), then a
    contiguous layout for the kernel."""

    def check(x: Tensor, rank: int) -> Tensor:
        model._check_input(x, rank=rank + 1)
        return x if x.is_contiguous() else x.contiguous()

    return check


def open_stream(model: Any, batch_size: int = 1) -> Stream:
    """A stream through one model: fused when the model has a kernel, else its `step` (what
    `SequenceModule.stream` returns).

    Args:
        model: a seqmem model (a `SequenceModule`).
        batch_size: number of sequences streamed side by side.

    Returns:
        The `Stream`.

    Raises:
        ValueError: if `batch_size` is not a positive int.
    """

    def plan() -> _Plan | None:
        layer = model._stream_layer()
        if layer is None:
            return None
        return _Plan(((layer, None, False),), None, None, None, False, layer.in_size)

    def fallback() -> Stream:
        return model._stream_fallback(batch_size)

    Stream(batch_size)  # checks batch_size
    if plan() is not None:
        stream = _KernelStream(batch_size, plan, fallback, _model_input(model), single=True)
        if stream.fused:
            return stream
    return fallback()


# ---------------------------------------------------------------------------- network streams
def _layer_parts(layer: nn.Module) -> tuple[nn.Module | None, nn.Module]:
    """`(pre-norm, mixer)` of a body layer: a pre-norm residual block has `norm` and `mixer`."""
    mixer = getattr(layer, "mixer", None)
    norm = getattr(layer, "norm", None)
    if isinstance(mixer, nn.Module) and isinstance(norm, nn.Module):
        return norm, mixer
    return None, layer


def _plain_norm(m: nn.Module) -> bool:
    return isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1


def _network_plan(net: Any) -> _Plan | None:
    """The fused plan of a `SequenceNetwork`, or `None` if a part has no kernel."""
    embed = net.embed
    if isinstance(embed, nn.Embedding):
        if embed.max_norm is not None:  # renormalises the table on lookup: leave it to torch
            return None
        tokens, in_size = True, embed.num_embeddings
    elif isinstance(embed, nn.Linear):
        tokens, in_size = False, embed.in_features
    else:
        return None
    layers = []
    for layer in net.layers:
        pre, mixer = _layer_parts(layer)
        if pre is not None and not _plain_norm(pre):
            return None
        make = getattr(mixer, "_stream_layer", None)
        spec = make() if make is not None else None
        if spec is None or (layers and spec.kernel is not layers[0][0].kernel):
            return None
        layers.append((spec, pre, pre is not None))
    if not layers:
        return None
    norm = net.norm
    if isinstance(norm, nn.Identity):
        norm = None
    elif not _plain_norm(norm):
        return None
    if not isinstance(net.head, nn.Linear):
        return None
    return _Plan(tuple(layers), embed, norm, net.head, tokens, in_size)


def _network_input(net: Any) -> Callable[[Tensor, int], Tensor]:
    """The input check of a network's fused stream: int64 tokens, or features of the network's dtype."""
    tokens = net.tokens
    where = "SequenceNetwork.stream"

    def check(x: Tensor, rank: int) -> Tensor:
        if tokens:
            if not isinstance(x, Tensor) or x.dim() != rank or x.dtype not in _INTS:
                want = "(batch,)" if rank == 1 else "(batch, seq_len)"
                got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"{where}: token inputs must be an integer tensor of shape {want}, got {got}")
            if x.dtype != torch.int64 or not x.is_contiguous() or x.device.type != "cpu":
                x = x.to(device="cpu", dtype=torch.int64).contiguous()
            return x
        want_rank = rank + 1
        if not isinstance(x, Tensor) or x.dim() != want_rank or x.shape[-1] != net.input_size:
            want = "(batch, input_size)" if rank == 1 else "(batch, seq_len, input_size)"
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{where}: inputs must have shape {want} with input_size={net.input_size}, got {got}")
        dtype = net.head.weight.dtype
        if x.dtype != dtype or not x.is_contiguous() or x.device.type != "cpu":
            x = x.to(device="cpu", dtype=dtype).contiguous()
        return x

    return check


class _NetworkStream(Stream):
    """A network whose layers cannot all run in one kernel: torch for the embedding, pre-norms,
    residuals and head, each layer's own stream in between."""

    def __init__(self, net: Any, batch_size: int) -> None:
        super().__init__(batch_size)
        self._net = net
        self._layers = []
        for layer in net.layers:
            pre, mixer = _layer_parts(layer)
            sub = mixer.stream(batch_size) if hasattr(mixer, "stream") else _StepStream(mixer, batch_size)
            self._layers.append((pre, sub))

    @property
    def fused(self) -> bool:
        return False

    def _embed(self, x: Tensor, rank: int) -> Tensor:
        h = self._net._embed(x, rank=rank)
        if h.shape[0] != self.batch_size:
            raise ValueError(
                f"stream.push: the stream has batch {self.batch_size}, got an input of shape {tuple(x.shape)}"
            )
        return h

    def push(self, x_t: Tensor) -> Tensor:
        net = self._net
        with torch.no_grad():
            h = self._embed(x_t, rank=1)  # (B, W)
            for pre, sub in self._layers:
                if pre is None:
                    h = sub.push(h)
                else:
                    h = h + sub.push(pre(h))
            y = net.head(net.norm(h))  # (B, O)
        self.position += 1
        return y

    def push_many(self, x: Tensor) -> Tensor:
        x = self._check_sequence(x)
        net = self._net
        with torch.no_grad():
            h = self._embed(x, rank=2)  # (B, T, W)
            for pre, sub in self._layers:
                if pre is None:
                    h = sub.push_many(h)
                else:
                    h = h + sub.push_many(pre(h))
            y = net.head(net.norm(h))  # (B, T, O)
        self.position += x.shape[1]
        return y

    @property
    def state(self) -> tuple[Any, ...]:
        return tuple(sub.state for _, sub in self._layers)

    def reset(self, state: tuple[Any, ...] | None = None) -> None:
        if state is not None and (not isinstance(state, tuple) or len(state) != len(self._layers)):
            raise TypeError(
                f"stream.reset: state must be a tuple of {len(self._layers)} layer states (as `state` returns), "
                f"got {type(state).__name__}"
            )
        for i, (_, sub) in enumerate(self._layers):
            sub.reset(None if state is None else state[i])
        self.position = 0


def open_network_stream(net: Any, batch_size: int = 1) -> Stream:
    """A stream through a `SequenceNetwork` (what `SequenceNetwork.stream` returns).

    Args:
        net: the network.
        batch_size: number of sequences streamed side by side.

    Returns:
        A fused `Stream` when every layer has a kernel of one family, else one that runs torch
        around the layers' own streams.

    Raises:
        ValueError: if `batch_size` is not a positive int.
    """
    Stream(batch_size)  # checks batch_size

    def plan() -> _Plan | None:
        return _network_plan(net)

    def fallback() -> Stream:
        return _NetworkStream(net, batch_size)

    if plan() is not None:
        stream = _KernelStream(batch_size, plan, fallback, _network_input(net), single=False)
        if stream.fused:
            return stream
    return fallback()
