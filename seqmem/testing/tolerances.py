"""Tolerances by dtype, and `assert_close`: how seqmem decides that two tensors (or two states) agree.

A [`Tolerance`][seqmem.testing.Tolerance] is a policy: an `(rtol, atol)` pair per dtype, a looser pair
for long scans (where rounding accumulates over the steps), and a multiplier; its documentation
gives the default table and the rule of comparison.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .pytree import first_structure_difference, iter_pairs

__all__ = ["DEFAULT_TOLERANCE", "LONG_SEQ_LEN", "Tolerance", "assert_close", "tolerance"]

LONG_SEQ_LEN = 256
"""From this many steps on, the checks compare with the long-scan tolerances."""

_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "float64",
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        rtol, atol = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"Tolerance: {name} must be a pair (rtol, atol) of floats, got {value!r}") from None
    if not (math.isfinite(rtol) and math.isfinite(atol) and rtol >= 0 and atol >= 0):
        raise ValueError(f"Tolerance: {name} must be a pair of finite floats >= 0, got {value!r}")
    return rtol, atol


@dataclass(frozen=True)
class Tolerance:
    """A tolerance policy: `(rtol, atol)` by dtype, for short and for long scans, times a multiplier.

    Every check of `seqmem.testing` takes one (`tolerance=`). `Tolerance()` is the default:

    | dtype | rtol | atol | long scans (`seq_len >= 256`) |
    | --- | --- | --- | --- |
    | `float64` | `1e-10` | `1e-12` | `1e-9`, `1e-11` |
    | `float32` | `1e-4` | `1e-5` | `6e-4`, `2e-3` (mamba_ssm's bound) |
    | `float16` | `3e-3` | `5e-3` | `3e-3`, `5e-3` |
    | `bfloat16` | `3e-2` | `5e-2` | `3e-2`, `5e-2` |

    Two tensors are close where, elementwise, `|actual - expected| <= atol * s + rtol * |expected|`
    with `s = max(1, max |expected|)`: the absolute tolerance grows with the tensor's scale, so that
    an element of a sum with cancellation (a gradient accumulated over many steps) is judged against
    the size of its terms. NaNs in the same places count as equal.

    Override the pairs you need and keep the others; `scale` multiplies every `rtol` and `atol`, for
    a model whose rounding error is larger than a plain recurrence's (a deep stack, a long chain of
    matrix products).

    Args:
        float64: `(rtol, atol)` for float64 tensors.
        float32: `(rtol, atol)` for float32 tensors.
        float16: `(rtol, atol)` for float16 tensors.
        bfloat16: `(rtol, atol)` for bfloat16 tensors.
        long_float64: the float64 pair for sequences of `long_seq_len` steps or more.
        long_float32: the float32 pair for long sequences (mamba_ssm's bound, `6e-4, 2e-3`).
        long_float16: the float16 pair for long sequences.
        long_bfloat16: the bfloat16 pair for long sequences.
        long_seq_len: from this many steps on, the `long_*` pairs apply.
        scale: multiplies every `rtol` and `atol` (`Tolerance() * 4` is `Tolerance(scale=4.0)`).

    Raises:
        TypeError: if a pair is not two numbers.
        ValueError: if a tolerance is negative or not finite, `scale <= 0` or `long_seq_len < 1`.

    Example:
        >>> import torch
        >>> from seqmem.testing import Tolerance
        >>> policy = Tolerance(float32=(2e-4, 1e-5), scale=2.0)
        >>> policy.get(torch.float32)
        (0.0004, 2e-05)
        >>> policy.get(torch.float64)  # untouched but for the multiplier
        (2e-10, 2e-12)
        >>> Tolerance().get(torch.float32, seq_len=1024)  # a long scan
        (0.0006, 0.002)
        >>> torch.testing.assert_close(torch.ones(3), torch.ones(3) + 1e-6, **Tolerance().kwargs(torch.float32))
    """

    float64: tuple[float, float] = (1e-10, 1e-12)
    float32: tuple[float, float] = (1e-4, 1e-5)
    float16: tuple[float, float] = (3e-3, 5e-3)
    bfloat16: tuple[float, float] = (3e-2, 5e-2)
    long_float64: tuple[float, float] = (1e-9, 1e-11)
    long_float32: tuple[float, float] = (6e-4, 2e-3)
    long_float16: tuple[float, float] = (3e-3, 5e-3)
    long_bfloat16: tuple[float, float] = (3e-2, 5e-2)
    long_seq_len: int = LONG_SEQ_LEN
    scale: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name.endswith(("float64", "float32", "float16")):
                object.__setattr__(self, f.name, _pair(getattr(self, f.name), f.name))
        if isinstance(self.long_seq_len, bool) or not isinstance(self.long_seq_len, int) or self.long_seq_len < 1:
            raise ValueError(f"Tolerance: long_seq_len must be an int >= 1, got {self.long_seq_len!r}")
        scale = float(self.scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"Tolerance: scale must be a finite float > 0, got {self.scale!r}")
        object.__setattr__(self, "scale", scale)

    def get(self, dtype: torch.dtype, *, seq_len: int | None = None, long: bool | None = None) -> tuple[float, float]:
        """The `(rtol, atol)` for tensors of `dtype`, multiplier included.

        Args:
            dtype: one of the four floating dtypes.
            seq_len: the length of the sequence compared: from `long_seq_len` steps on, the long pair.
            long: force the long (`True`) or the short (`False`) pair, whatever `seq_len`.

        Returns:
            `(rtol, atol)`.

        Raises:
            TypeError: if `dtype` is not one of the four floating dtypes.
        """
        if dtype not in _DTYPES:
            raise TypeError(f"no tolerance for dtype {dtype}; expected one of {list(_DTYPES)}")
        if long is None:
            long = seq_len is not None and seq_len >= self.long_seq_len
        rtol, atol = getattr(self, ("long_" if long else "") + _DTYPES[dtype])
        return rtol * self.scale, atol * self.scale

    def kwargs(self, dtype: torch.dtype, *, seq_len: int | None = None, long: bool | None = None) -> dict[str, float]:
        """`{"rtol": ..., "atol": ...}`, for `torch.testing.assert_close(a, b, **policy.kwargs(dtype))`.

        Note that `torch.testing.assert_close` does not scale `atol` by the size of the tensor as
        [`assert_close`][seqmem.testing.assert_close] does: the same pair is stricter there for
        tensors larger than 1.

        Args:
            dtype: one of the four floating dtypes.
            seq_len: the length of the sequence compared (see `get`).
            long: force the long or the short pair.

        Returns:
            A dict with the keys `rtol` and `atol`.

        Raises:
            TypeError: if `dtype` is not one of the four floating dtypes.
        """
        rtol, atol = self.get(dtype, seq_len=seq_len, long=long)
        return {"rtol": rtol, "atol": atol}

    def replace(self, **changes: Any) -> Tolerance:
        """A copy with some fields changed: `policy.replace(long_float32=(2e-4, 2e-4))`.

        Args:
            **changes: fields of `Tolerance` and their new values.

        Returns:
            The new policy.

        Raises:
            TypeError: for a name that is not a field.
        """
        return dataclasses.replace(self, **changes)

    def __mul__(self, factor: float) -> Tolerance:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            return NotImplemented
        return dataclasses.replace(self, scale=self.scale * float(factor))

    __rmul__ = __mul__


DEFAULT_TOLERANCE = Tolerance()
"""The policy every check uses unless given another one."""


def tolerance(dtype: torch.dtype, *, long: bool = False) -> tuple[float, float]:
    """The `(rtol, atol)` that seqmem's comparisons use for a dtype, by default.

    `DEFAULT_TOLERANCE.get(dtype, long=long)`; see [`Tolerance`][seqmem.testing.Tolerance] for a
    policy of your own.

    Args:
        dtype: a floating dtype (`torch.float64`, `float32`, `float16` or `bfloat16`).
        long: the looser pair for long scans, where rounding errors accumulate over many steps
            (mamba_ssm's float32 bound: `rtol=6e-4, atol=2e-3`).

    Returns:
        `(rtol, atol)`; see the table of [`Tolerance`][seqmem.testing.Tolerance].

    Raises:
        TypeError: if `dtype` is not one of the four floating dtypes.

    Example:
        >>> import torch
        >>> from seqmem.testing import tolerance
        >>> tolerance(torch.float64)
        (1e-10, 1e-12)
        >>> tolerance(torch.float32, long=True)
        (0.0006, 0.002)
    """
    return DEFAULT_TOLERANCE.get(dtype, long=long)


def less_precise(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """The dtype of the two with the larger machine epsilon (the floating one, if only one is)."""
    if not (a.is_floating_point and b.is_floating_point):
        return a if a.is_floating_point else b
    return a if torch.finfo(a).eps >= torch.finfo(b).eps else b


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.float32` -> `"float32"`."""
    return str(dtype).replace("torch.", "")


@dataclass
class Diff:
    """Where and by how much `actual` misses `expected` (`diff` returns one, or `None` if close)."""

    n_bad: int
    numel: int
    rtol: float
    atol: float
    dtype: torch.dtype
    scale: float = 1.0  # atol is multiplied by this: max(1, max |expected|)
    index: tuple[int, ...] = ()  # of the largest finite error
    expected_at: float = 0.0
    actual_at: float = 0.0
    max_abs: float = 0.0
    worst: tuple[int, ...] | None = None  # of the worst miss relative to what is allowed there
    worst_expected: float = 0.0
    worst_actual: float = 0.0
    worst_allowed: float = 0.0
    nonfinite: bool = False  # the worst miss is a NaN or inf where the other has none
    rel_rms: float = 0.0
    first_t: int | None = None
    time_len: int | None = None

    def lines(self) -> list[str]:
        pct = 100.0 * self.n_bad / max(self.numel, 1)
        atol = f"{self.atol:g}" if self.scale == 1.0 else f"{self.atol:g} x {self.scale:.3g}"
        out = [
            f"{self.n_bad} of {self.numel} elements ({pct:.1f}%) outside the {dtype_name(self.dtype)} "
            f"tolerance (rtol={self.rtol:g}, atol={atol})"
        ]
        if self.nonfinite:
            out.append(
                f"non-finite mismatch at index {self.worst}: expected {self.worst_expected:.10g}, "
                f"got {self.worst_actual:.10g}"
            )
        out.append(
            f"max abs error {self.max_abs:.3e} at index {self.index}: expected {self.expected_at:.10g}, "
            f"got {self.actual_at:.10g}"
        )
        if not self.nonfinite and self.worst != self.index:
            out.append(
                f"worst against the tolerance at index {self.worst}: expected {self.worst_expected:.10g}, "
                f"got {self.worst_actual:.10g} (error {abs(self.worst_actual - self.worst_expected):.3e}, "
                f"allowed {self.worst_allowed:.3e})"
            )
        out.append(f"relative RMS error {self.rel_rms:.3e} (||actual - expected|| / ||expected||)")
        if self.first_t is not None:
            out.append(f"first time step that diverges: t={self.first_t} (of {self.time_len})")
        return out


def _unravel(flat: int, shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), shape)) if len(shape) else ()


def max_abs_error(expected: Tensor, actual: Tensor) -> float:
    """The largest finite `|actual - expected|` (0 for empty tensors or where nothing is finite)."""
    if expected.numel() == 0:
        return 0.0
    err = (actual.detach().to("cpu", torch.float64) - expected.detach().to("cpu", torch.float64)).abs()
    err = err[err.isfinite()]
    return float(err.max()) if err.numel() else 0.0


def diff(
    expected: Tensor, actual: Tensor, rtol: float, atol: float, dtype: torch.dtype, time_dim: int | None
) -> Diff | None:
    """`None` if close, else where and by how much not. Shapes must already agree."""
    e = expected.detach().to("cpu", torch.float64)
    a = actual.detach().to("cpu", torch.float64)
    if e.numel() == 0:
        return None
    finite_e = e[e.isfinite()]
    scale = max(1.0, float(finite_e.abs().max())) if finite_e.numel() else 1.0
    err = (a - e).abs()
    allowed = atol * scale + rtol * e.abs()
    ok = (a == e) | (err <= allowed) | (a.isnan() & e.isnan())
    bad = ~ok
    n_bad = int(bad.sum())
    if n_bad == 0:
        return None
    d = Diff(n_bad=n_bad, numel=e.numel(), rtol=rtol, atol=atol, dtype=dtype, scale=scale)
    finite_err = torch.where(err.isfinite(), err, torch.full_like(err, -1.0)).flatten()
    flat = int(finite_err.argmax())
    d.index, d.max_abs = _unravel(flat, e.shape), max(float(finite_err[flat]), 0.0)
    d.expected_at, d.actual_at = float(e.flatten()[flat]), float(a.flatten()[flat])
    nonfinite_bad = (bad & ~err.isfinite()).flatten()
    if bool(nonfinite_bad.any()):
        worst = int(nonfinite_bad.nonzero()[0])
        d.nonfinite = True
    else:
        ratio = torch.where(bad, err / allowed.clamp_min(torch.finfo(torch.float64).tiny), -1.0).flatten()
        worst = int(ratio.argmax())
    d.worst = _unravel(worst, e.shape)
    d.worst_expected, d.worst_actual = float(e.flatten()[worst]), float(a.flatten()[worst])
    d.worst_allowed = float(allowed.flatten()[worst])
    both_finite = a.isfinite() & e.isfinite()
    num = float(((a - e)[both_finite] ** 2).sum().sqrt())
    den = float((e[both_finite] ** 2).sum().sqrt())
    d.rel_rms = num / den if den > 0 else (math.inf if num > 0 else 0.0)
    if time_dim is not None and e.dim() > 0:
        td = time_dim % e.dim()
        per_t = bad.transpose(0, td).reshape(e.shape[td], -1).any(dim=1)
        d.first_t = int(per_t.nonzero()[0])
        d.time_len = e.shape[td]
    return d


def resolve(
    dtype: torch.dtype,
    rtol: float | None,
    atol: float | None,
    *,
    policy: Tolerance | None = None,
    seq_len: int | None = None,
    long: bool | None = None,
) -> tuple[float, float]:
    """`(rtol, atol)`: the policy's pair for `dtype`, each replaced by an explicit `rtol` / `atol`."""
    if rtol is not None and atol is not None:
        return rtol, atol
    if dtype in _DTYPES:
        default_rtol, default_atol = (policy or DEFAULT_TOLERANCE).get(dtype, seq_len=seq_len, long=long)
    else:
        default_rtol, default_atol = 0.0, 0.0
    return (default_rtol if rtol is None else rtol), (default_atol if atol is None else atol)


def tensor_message(
    name: str,
    expected: Tensor,
    actual: Tensor,
    rtol: float,
    atol: float,
    dtype: torch.dtype,
    time_dim: int | None = None,
) -> str | None:
    """`None` if two tensors of the same shape are close, else a message that starts with `name`."""
    if expected.shape != actual.shape:
        return f"{name}: shape mismatch: expected {tuple(expected.shape)}, got {tuple(actual.shape)}"
    d = diff(expected, actual, rtol, atol, dtype, time_dim)
    return None if d is None else f"{name} differs: " + "\n  ".join(d.lines())


def leaf_pairs(name: str, expected: Any, actual: Any) -> tuple[str | None, list[tuple[str, Any, Any]]]:
    """The leaves of two tensors or states to compare: `(None, [(name, expected leaf, actual leaf), ...])`,
    a leaf's name `"{name}: {path}"`; or `(message, [])` when the two differ in structure."""
    if isinstance(expected, Tensor) and isinstance(actual, Tensor):
        return None, [(name, expected, actual)]
    for what, t, other in (("expected", expected, actual), ("actual", actual, expected)):
        if isinstance(t, Tensor):
            return f"{name}: {what} is a tensor but the other is a {type(other).__name__}", []
    where = first_structure_difference(expected, actual)
    if where is not None:
        path, e_desc, a_desc = where
        return f"{name}: the structures differ at {path}: expected {e_desc}, got {a_desc}", []
    return None, [(f"{name}: {path}", e, a) for path, e, a in iter_pairs(expected, actual)]


def close_message(
    name: str,
    expected: Any,
    actual: Any,
    dtype: torch.dtype | None = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool = False,
    time_dim: int | None = None,
    policy: Tolerance | None = None,
) -> str | None:
    """`None` if close, else the message `assert_close` raises: tensors, or states leaf by leaf."""
    message, leaves = leaf_pairs(name, expected, actual)
    for leaf, e, a in leaves:
        if not isinstance(e, Tensor):
            if e != a:
                return f"{leaf} differs: expected {e!r}, got {a!r}"
            continue
        dt = less_precise(e.dtype, a.dtype) if dtype is None else dtype
        r, at = resolve(dt, rtol, atol, policy=policy, long=long)
        message = tensor_message(leaf, e, a, r, at, dt, time_dim if leaf == name else None)
        if message is not None:
            return message
    return message


def assert_close(
    name: str,
    expected: Any,
    actual: Any,
    dtype: torch.dtype | None = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool = False,
    time_dim: int | None = None,
    tolerance: Tolerance | None = None,
) -> None:
    """Assert that two tensors, or two states, agree within seqmem's tolerance for their dtype.

    Elementwise, `|actual - expected| <= atol * s + rtol * |expected|` with
    `s = max(1, max |expected|)`; NaNs in the same places count as equal. The dtypes need not agree
    (compare a float32 kernel with a float64 oracle): the tolerance is that of `dtype`, by default
    the less precise of the two. States (any nesting of tuples, lists, dicts, `NamedTuple`s and
    dataclasses around tensors, numbers and `None`) are compared structure first, then leaf by
    leaf, and the message names the leaf (`state['conv'][1]`).

    Args:
        name: what is compared, the first words of the message (e.g. `"y from step()"`).
        expected: the reference tensor (any shape) or state.
        actual: the tensor or state under test, of the same shape and structure.
        dtype: the dtype whose tolerance applies; by default the less precise of the two tensors'.
        rtol: relative tolerance, overriding the policy's.
        atol: absolute tolerance, overriding the policy's.
        long: use the long-scan pair (see [`Tolerance`][seqmem.testing.Tolerance]).
        time_dim: the time axis, if any: the message then names the first time step that diverges.
        tolerance: the policy; by default `Tolerance()`.

    Raises:
        AssertionError: if the shapes or the structures differ, or some element is outside the
            tolerance. The message gives `name` (and the leaf of a state), how many elements miss,
            the largest absolute error and its index (with both values there), the worst miss
            relative to the tolerance if elsewhere, the relative RMS error and, with `time_dim`, the
            first diverging step.

    Example:
        >>> import torch
        >>> from seqmem.testing import assert_close
        >>> y = torch.zeros(2, 5, 3, dtype=torch.float64)
        >>> y_bad = y.clone()
        >>> y_bad[1, 3, 0] = 1e-3
        >>> assert_close("y", y, y_bad, time_dim=1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        AssertionError: y differs: 1 of 30 elements (3.3%) outside the float64 tolerance (rtol=1e-10, ...)
          max abs error 1.000e-03 at index (1, 3, 0): expected 0, got 0.001
          relative RMS error inf (||actual - expected|| / ||expected||)
          first time step that diverges: t=3 (of 5)
    """
    message = close_message(
        name, expected, actual, dtype, rtol=rtol, atol=atol, long=long, time_dim=time_dim, policy=tolerance
    )
    if message is not None:
        raise AssertionError(message)
