"""How the checks call a model: which forms it has, and every call labelled, so an error names the call.

A model may have any of these forms, and the checks use what is there:

- `forward(x)` (required): returns `y`, or `(y, state)`;
- `forward(x, state)`: continues from a state (chunked streaming);
- `step(x_t, state) -> (y_t, state)`: the streaming form;
- `initial_state(batch_size, *, device=None, dtype=None)`: the state before the first step.

Every call goes through [`Subject`][seqmem.testing.calls.Subject], which wraps an exception raised
inside the model in a [`CallFailed`][seqmem.testing.calls.CallFailed] naming the call:
`step(x[:, 3], state) raised RuntimeError: ...`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

__all__ = ["NO_STATE", "CallFailed", "Subject"]


class _NoState:
    """The state of a `forward` that returns only `y` (a sentinel, distinct from a `None` state)."""

    _instance: _NoState | None = None

    def __new__(cls) -> _NoState:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_STATE"


NO_STATE: Any = _NoState()
"""What `Subject.forward` returns as the state of a model whose `forward(x)` returns `y` alone."""


class CallFailed(AssertionError):
    """A call into the model raised: the message names the call, the error type and its message.

    Attributes:
        call: the call, as Python would write it (`"step(x[:, 3], state)"`).
        error: the exception the model raised.
    """

    def __init__(self, call: str, error: BaseException) -> None:
        self.call = call
        self.error = error
        super().__init__(f"{call} raised {type(error).__name__}: {error}")


def _type_desc(obj: Any) -> str:
    if isinstance(obj, tuple):
        return f"a {type(obj).__name__} of {len(obj)}"
    return f"a {type(obj).__name__}"


def accepts(fn: Any, *args: Any, **kwargs: Any) -> bool:
    """Whether `fn`'s signature binds these arguments (`True` when it cannot be inspected)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        sig.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


class Subject:
    """A model under test, with the forms it has and labelled calls.

    Args:
        model: any object with `forward` (or a callable `nn.Module`), and optionally `step` and
            `initial_state`.

    Attributes:
        model: the model.
        has_step: whether it has a callable `step`.
        has_initial_state: whether it has a callable `initial_state`.
        forward_takes_state: whether `forward`'s signature takes a second argument (the state).
        forward_returns_state: whether `forward` returns `(y, state)` rather than `y`; `None` until
            the first call tells.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.has_step = callable(getattr(model, "step", None))
        self.has_initial_state = callable(getattr(model, "initial_state", None))
        fwd = getattr(model, "forward", None)
        self.forward_takes_state = fwd is not None and accepts(fwd, None, None)
        self.forward_returns_state: bool | None = None
        self._call: Callable[..., Any] = model if isinstance(model, nn.Module) else fwd

    def call(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, with any exception but an `AssertionError` of the kit's raised as
        `CallFailed(label, error)`."""
        try:
            return fn(*args, **kwargs)
        except CallFailed:
            raise
        except Exception as err:
            raise CallFailed(label, err) from err

    def forward(self, x: Tensor, state: Any = NO_STATE, *, label: str = "forward(x)") -> tuple[Tensor, Any]:
        """`forward(x)` (no `state` given) or `forward(x, state)`: `(y, state)`, the state `NO_STATE`
        when `forward` returns `y` alone."""
        out = self.call(label, self._call, x) if state is NO_STATE else self.call(label, self._call, x, state)
        if isinstance(out, Tensor):
            y, new = out, NO_STATE
        elif isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor):
            y, new = out
        else:
            raise AssertionError(f"{label} must return y or a pair (y, state) with a tensor y, got {_type_desc(out)}")
        returns = new is not NO_STATE
        if self.forward_returns_state is None:
            self.forward_returns_state = returns
        elif self.forward_returns_state != returns:
            raise AssertionError(
                f"{label} returned {'(y, state)' if returns else 'y alone'}, but an earlier forward call returned "
                f"{'y alone' if returns else '(y, state)'}"
            )
        return y, new

    def returns_state(self, x: Tensor) -> bool:
        """Whether `forward` returns a state (one call on `x[:, :1]` the first time it is asked)."""
        if self.forward_returns_state is None:
            self.forward(x[:, :1], label="forward(x[:, :1])")
        return bool(self.forward_returns_state)

    def step(self, x_t: Tensor, state: Any, *, label: str) -> tuple[Tensor, Any]:
        """`step(x_t, state)`: `(y_t, new state)`."""
        out = self.call(label, self.model.step, x_t, state)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise AssertionError(f"{label} must return a pair (y_t, state), got {_type_desc(out)}")
        if not isinstance(out[0], Tensor):
            raise AssertionError(f"{label} must return (y_t, state) with a tensor y_t, got {_type_desc(out[0])}")
        return out

    def initial_state(self, batch_size: int, x: Tensor) -> Any:
        """`initial_state(batch_size, device=x.device, dtype=x.dtype)`."""
        label = f"initial_state({batch_size}, device={x.device}, dtype={x.dtype})"
        return self.call(label, self.model.initial_state, batch_size, device=x.device, dtype=x.dtype)

    def forms(self) -> str:
        """What the model has, in words: `"forward(x, state) -> (y, state), step, initial_state"`."""
        takes = "forward(x, state)" if self.forward_takes_state else "forward(x)"
        returns = {None: "", True: " -> (y, state)", False: " -> y"}[self.forward_returns_state]
        parts = [takes + returns]
        parts += [name for name, has in (("step", self.has_step), ("initial_state", self.has_initial_state)) if has]
        return ", ".join(parts)
