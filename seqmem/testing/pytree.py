"""States as pytrees: any nesting of tuples, lists, dicts, `NamedTuple`s and dataclasses around tensors.

seqmem's own states are `NamedTuple`s, but a model of yours may carry a bare tensor (`torch.nn.GRU`'s
`h`), a list of layer states, a dict (`{"conv": ..., "ssm": ...}`), a dataclass, or `None` (a
stateless model). The checks walk any of these leaf by leaf and name a leaf by its path, as Python
would index it: `state`, `state.h`, `state[1]`, `state['conv'][1]`.

Leaves are tensors, numbers (`int`, `float`, `bool`: a position counter, say) and `None`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torch import Tensor

__all__ = ["describe", "first_structure_difference", "map_state_leaves", "state_leaves", "state_nbytes"]

_SCALARS = (bool, int, float)


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def _is_dataclass(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _children(obj: Any, prefix: str) -> list[tuple[str, Any]] | None:
    """`[(path, child), ...]` of a container, `None` for a leaf."""
    if isinstance(obj, Tensor) or obj is None or isinstance(obj, _SCALARS):
        return None
    if _is_namedtuple(obj):
        return [(f"{prefix}.{name}", item) for name, item in zip(obj._fields, obj, strict=True)]
    if isinstance(obj, (tuple, list)):
        return [(f"{prefix}[{i}]", item) for i, item in enumerate(obj)]
    if isinstance(obj, Mapping):
        return [(f"{prefix}[{key!r}]", item) for key, item in obj.items()]
    if _is_dataclass(obj):
        return [(f"{prefix}.{f.name}", getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    raise TypeError(
        f"{prefix} must be a tensor, a number, None, or a tuple, list, dict, NamedTuple or dataclass of "
        f"them; got a {type(obj).__name__}"
    )


def state_leaves(state: Any, prefix: str = "state") -> list[tuple[str, Any]]:
    """Every leaf of a state with its path, in order.

    Args:
        state: a tensor, `None`, a number, or a tuple, list, dict, `NamedTuple` or dataclass of them
            (nested to any depth).
        prefix: the name of the root in the paths.

    Returns:
        A list of `(path, leaf)` pairs, in order; a bare tensor or `None` is one pair, with the path
        `"state"`.

    Raises:
        TypeError: for anything else (the message names where).

    Example:
        >>> import torch
        >>> from seqmem.testing import state_leaves
        >>> for path, leaf in state_leaves({"conv": torch.zeros(2, 3), "pos": 7, "ssm": None}):
        ...     print(path, type(leaf).__name__)
        state['conv'] Tensor
        state['pos'] int
        state['ssm'] NoneType
    """
    children = _children(state, prefix)
    if children is None:
        return [(prefix, state)]
    out: list[tuple[str, Any]] = []
    for path, child in children:
        out.extend(state_leaves(child, path))
    return out


def state_tensors(state: Any, prefix: str = "state") -> list[tuple[str, Tensor]]:
    """The tensor leaves of a state, with their paths."""
    return [(p, t) for p, t in state_leaves(state, prefix) if isinstance(t, Tensor)]


def map_state_leaves(state: Any, fn: Callable[[Tensor], Any]) -> Any:
    """The state with each tensor leaf replaced by `fn(leaf)`; containers keep their types.

    Args:
        state: a state (see `state_leaves`).
        fn: applied to every tensor leaf; numbers and `None` are kept.

    Returns:
        A state of the same structure.

    Raises:
        TypeError: for a state that is not a pytree of tensors (see `state_leaves`).
    """
    return _rebuild(state, fn, "state")


def _rebuild(obj: Any, fn: Callable[[Tensor], Any], prefix: str) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    children = _children(obj, prefix)
    if children is None:
        return obj
    items = [_rebuild(child, fn, path) for path, child in children]
    if _is_namedtuple(obj):
        return type(obj)(*items)
    if isinstance(obj, (tuple, list)):
        return type(obj)(items)
    if isinstance(obj, Mapping):
        out = dict(zip(obj.keys(), items, strict=True))
        try:
            return type(obj)(out)
        except TypeError:  # a Mapping type without a dict constructor
            return out
    return dataclasses.replace(
        obj, **{f.name: v for f, v in zip(dataclasses.fields(obj), items, strict=True) if f.init}
    )


def describe(obj: Any) -> str:
    """A one-line description of a state's structure: `dict{'conv': list[Tensor, Tensor], 'ssm': Tensor}`."""
    if isinstance(obj, Tensor):
        return "Tensor"
    if obj is None or isinstance(obj, _SCALARS):
        return type(obj).__name__
    name = type(obj).__name__
    if isinstance(obj, Mapping):
        return name + "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in obj.items()) + "}"
    if _is_namedtuple(obj) or _is_dataclass(obj):
        fields = [(p.rsplit(".", 1)[1], c) for p, c in _children(obj, "") or []]
        return name + "(" + ", ".join(f"{k}={describe(v)}" for k, v in fields) + ")"
    _children(obj, "state")  # raises for what is not a pytree
    return name + "[" + ", ".join(describe(v) for v in obj) + "]"


def _node(obj: Any) -> tuple[Any, ...]:
    """What must agree between two states at one node: the container type and its keys or length."""
    if isinstance(obj, Tensor):
        return ("Tensor",)
    if obj is None or isinstance(obj, _SCALARS):
        return (type(obj).__name__,)
    if _is_namedtuple(obj) or _is_dataclass(obj):
        return (type(obj).__name__, tuple(p for p, _ in _children(obj, "") or []))
    if isinstance(obj, Mapping):
        return (type(obj).__name__, tuple(obj.keys()))
    return (type(obj).__name__, len(obj))


def first_structure_difference(a: Any, b: Any, prefix: str = "state") -> tuple[str, str, str] | None:
    """Where two states first differ in structure: `(path, description of a there, of b there)`.

    Containers must agree in type and keys (or length); numbers may differ in value, and an `int`
    leaf matches a `float` one. Returns `None` when the structures agree.

    Raises:
        TypeError: for a state that is not a pytree of tensors (see `state_leaves`).
    """
    ka, kb = _node(a), _node(b)
    numbers = {"bool", "int", "float"}
    if ka != kb and not (ka[0] in numbers and kb[0] in numbers):
        return prefix, describe(a), describe(b)
    for (path, ca), (_, cb) in zip(_children(a, prefix) or [], _children(b, prefix) or [], strict=True):
        found = first_structure_difference(ca, cb, path)
        if found is not None:
            return found
    return None


def state_nbytes(state: Any) -> int:
    """Bytes held by the tensors of a state (`numel * element_size`, summed); numbers and `None` are 0."""
    return sum(t.numel() * t.element_size() for _, t in state_tensors(state))


def iter_pairs(a: Any, b: Any, prefix: str = "state") -> Iterator[tuple[str, Any, Any]]:
    """`(path, leaf of a, leaf of b)` over two states of the same structure."""
    for (path, x), (_, y) in zip(state_leaves(a, prefix), state_leaves(b, prefix), strict=True):
        yield path, x, y
