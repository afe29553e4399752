"""The contract every seqmem model keeps: the `SequenceModel` protocol and its state types.

A state is a `NamedTuple` of tensors, so it can be detached, moved to another device and
measured with [`state_nbytes`][seqmem.state_nbytes]. Each state type knows its batch size and can be
mapped over its tensors (`state.detach()`, `state.to(device)`), which is what truncated BPTT and
streaming inference need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "GRUState",
    "KVCache",
    "LSTMState",
    "RNNState",
    "SSMState",
    "SequenceModel",
    "State",
    "map_state",
    "state_nbytes",
]


def _state_type(cls: type) -> type:
    """Give a state `NamedTuple` the tensor-like methods `detach()` and `to(...)`."""

    def detach(self: Any) -> Any:
        """A copy cut from the autograd graph (what truncated BPTT does every K steps)."""
        return type(self)(*(t.detach() for t in self))

    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        """Move or cast every tensor, with the arguments of `torch.Tensor.to`."""
        return type(self)(*(t.to(*args, **kwargs) for t in self))

    cls.detach = detach
    cls.to = to
    return cls


@_state_type
class RNNState(NamedTuple):
    """State of the Elman RNN.

    Attributes:
        h: `(batch, hidden_size)` hidden state $h_t$.
    """

    h: Tensor

    @property
    def batch_size(self) -> int:
        """Number of sequences in the batch."""
        return self.h.shape[0]



@_state_type
class LSTMState(NamedTuple):
    """State of the LSTM.

    Attributes:
        h: `(batch, hidden_size)` hidden state (the output) $h_t$.
        c: `(batch, hidden_size)` cell state $c_t$, the additive "highway".
    """

    h: Tensor
    c: Tensor

    @property
    def batch_size(self) -> int:
        """Number of sequences in the batch."""
        return self.h.shape[0]



@_state_type
class GRUState(NamedTuple):
    """State of the GRU.

    Attributes:
        h: `(batch, hidden_size)` hidden state $h_t$.
    """

    h: Tensor

    @property
    def batch_size(self) -> int:
        """Number of sequences in the batch."""
        return self.h.shape[0]



@_state_type
class KVCache(NamedTuple):
    """Key/value cache of the causal transformer: the state grows by one position per step.

    Attributes:
        k: `(n_layers, batch, n_heads, t, head_dim)` keys of the `t` positions seen so far
            (rotary position already applied).
        v: `(n_layers, batch, n_heads, t, head_dim)` values of the `t` positions seen so far.
    """

    k: Tensor
    v: Tensor

    @property
    def batch_size(self) -> int:
        """Number of sequences in the batch."""
        return self.k.shape[1]

    @property
    def seq_len(self) -> int:
        """Number of positions held, i.e. the absolute position of the next token."""
        return self.k.shape[3]



@_state_type
class SSMState(NamedTuple):
    """State of the selective SSM (Mamba block): a fixed size, whatever the sequence length.

    Attributes:
        conv: `(batch, d_inner, d_conv - 1)` the last `d_conv - 1` inputs of the causal
            depthwise convolution.
        ssm: `(batch, d_inner, d_state)` the SSM hidden state $h_t$ (Gu & Dao 2023, eq. 2a).
    """

    conv: Tensor
    ssm: Tensor

    @property
    def batch_size(self) -> int:
        """Number of sequences in the batch."""
        return self.ssm.shape[0]



State = RNNState | LSTMState | GRUState | KVCache | SSMState
"""Any of seqmem's state types."""


def map_state(state: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply `fn` to every tensor of a state and return a state of the same type.

    Works on seqmem's states and on any `NamedTuple` (or tuple) of tensors, nested ones included.

    Args:
        state: a state, as returned by `forward` or `step`.
        fn: a function from tensor to tensor, e.g. `torch.Tensor.detach`.

    Returns:
        A state of the same type with every tensor replaced by `fn(tensor)`.

    Raises:
        TypeError: if `state` holds something that is neither a tensor nor a tuple of them.
    """
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple):
        items = [map_state(s, fn) for s in state]
        return type(state)(*items) if hasattr(state, "_fields") else type(state)(items)
    raise TypeError(f"a state must be a tensor or a (named) tuple of tensors, got {type(state).__name__}")


def state_nbytes(state: Any) -> int:
    """Number of bytes a state occupies: the memory a streaming model carries between steps.

    O(1) in the sequence length for the recurrences (RNN, LSTM, GRU, SSM), O(t) for the
    transformer's KV cache.

    Args:
        state: a state: a tensor, or any nesting of tuples (`NamedTuple`s), lists and dicts of
            tensors; `None` (a stateless model) counts 0.

    Returns:
        The total `numel * element_size` over its tensors, in bytes.

    Raises:
        TypeError: if `state` holds something that is neither a tensor nor a container of them.

    Example:
        >>> import seqmem
        >>> lstm = seqmem.LSTM(8, 16)
        >>> seqmem.state_nbytes(lstm.initial_state(batch_size=2))  # 2 tensors of 2 x 16 float32
        256
    """
    if isinstance(state, Tensor):
        return state.numel() * state.element_size()
    if state is None:
        return 0
    if isinstance(state, (tuple, list)):
        return sum(state_nbytes(s) for s in state)
    if isinstance(state, dict):
        return sum(state_nbytes(s) for s in state.values())
    raise TypeError(
        f"a state must be a tensor, None, or a tuple, list or dict of them, got {type(state).__name__}"
    )


@runtime_checkable
class SequenceModel(Protocol):
    """The protocol every seqmem model satisfies, and that `seqmem.testing` checks on yours.

    Shapes are batch-first: a sequence is `(batch, seq_len, features)`, one step `(batch, features)`.

    The two forms must agree: running `step` over `t = 0 .. T-1` equals `forward` (the recurrent
    form equals the parallel form), and chunked streaming is exact:
    `forward(x2, forward(x1)[1])` equals `forward(cat([x1, x2], dim=1))`.

    Attributes:
        input_size: number of input features.
        output_size: number of output features.
    """

    input_size: int
    output_size: int

    def initial_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        """The state before the first step (zeros, or an empty cache)."""
        ...

    def forward(self, x: Tensor, state: Any | None = None) -> tuple[Tensor, Any]:
        """`(batch, seq_len, input_size)` -> `(batch, seq_len, output_size)` and the final state."""
        ...

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        """`(batch, input_size)` -> `(batch, output_size)` and the next state."""
        ...
