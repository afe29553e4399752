"""Hypothesis strategies and conformance checks for sequence models: seqmem's, and your own.

Two halves:

- **Conformance checks.** [`check_sequence_model`][seqmem.testing.check_sequence_model] runs every
  property of the [`SequenceModel`][seqmem.SequenceModel] protocol on any object that claims it (a
  plain `nn.Module` of yours with `input_size`, `output_size`, `initial_state`, `forward` and `step`
  will do; it need not derive from a seqmem class) and raises an `AssertionError` that names the
  first property that fails and where. Each property is also a function of its own
  (`check_step_equals_forward`, `check_chunked`, `check_causal`, ...), for finer-grained tests.
- **Hypothesis strategies.** [`model_configs`][seqmem.testing.model_configs] draws constructor
  arguments of seqmem's models, [`sequences`][seqmem.testing.sequences] draws input tensors and
  [`seeds`][seqmem.testing.seeds] draws seeds. Tensors come from a seeded `torch.Generator`
  (hypothesis does not manage torch's random state), so a failing example shrinks and replays.

One tolerance policy, by dtype, serves every comparison ([`tolerance`][seqmem.testing.tolerance],
[`assert_close`][seqmem.testing.assert_close]):

| dtype | rtol | atol | long scans (`long=True`) |
| --- | --- | --- | --- |
| `float64` | `1e-10` | `1e-12` | `1e-9`, `1e-11` |
| `float32` | `1e-4` | `1e-5` | `6e-4`, `2e-3` (mamba_ssm's bound) |
| `float16` | `3e-3` | `5e-3` | `3e-3`, `5e-3` |
| `bfloat16` | `3e-2` | `5e-2` | `3e-2`, `5e-2` |

Two tensors are close where, elementwise, `|actual - expected| <= atol * s + rtol * |expected|`
with `s = max(1, max |expected|)`: the absolute tolerance grows with the tensor's scale, so that
an element of a sum with cancellation (a gradient accumulated over many steps) is judged against
the size of its terms. NaNs in the same places count as equal. The checks use the long-scan row
for sequences of `LONG_SEQ_LEN` (256) steps or more.

This module needs hypothesis (`pip install 'seqmem[dev]'`); `import seqmem` does not import it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

try:
    from hypothesis import note
    from hypothesis import strategies as st
    from hypothesis.errors import InvalidArgument
except ImportError as err:  # pragma: no cover - exercised only without hypothesis
    raise ImportError(
        "seqmem.testing needs hypothesis, which the dev extra installs: "
        "pip install 'seqmem[dev]' (or: pip install hypothesis)"
    ) from err

from .protocol import state_nbytes
from .registry import build, model_names, model_spec

__all__ = [
    "BACKEND_PARITY",
    "BATCH_INDEPENDENCE",
    "CAUSALITY",
    "CHUNKED",
    "GRADIENTS",
    "INPUTS_UNCHANGED",
    "LONG_SEQ_LEN",
    "PROPERTIES",
    "PROTOCOL",
    "SHAPES",
    "STATE_SIZE",
    "STEP_EQUALS_FORWARD",
    "ConformanceFailure",
    "ConformanceReport",
    "ModelConfig",
    "PropertyResult",
    "assert_close",
    "check_backend_parity",
    "check_batch_independent",
    "check_causal",
    "check_chunked",
    "check_gradients",
    "check_inputs_unchanged",
    "check_protocol",
    "check_sequence_model",
    "check_shapes",
    "check_state_size",
    "check_step_equals_forward",
    "model_configs",
    "random_sequence",
    "seeds",
    "sequences",
    "tolerance",
]

# ---------------------------------------------------------------------------------------------
# tolerances
# ---------------------------------------------------------------------------------------------

_TOLERANCES: dict[torch.dtype, tuple[tuple[float, float], tuple[float, float]]] = {
    # dtype: ((rtol, atol) by default, (rtol, atol) for long scans)
    torch.float64: ((1e-10, 1e-12), (1e-9, 1e-11)),
    torch.float32: ((1e-4, 1e-5), (6e-4, 2e-3)),
    torch.float16: ((3e-3, 5e-3), (3e-3, 5e-3)),
    torch.bfloat16: ((3e-2, 5e-2), (3e-2, 5e-2)),
}

LONG_SEQ_LEN = 256
"""From this many steps on, the checks compare with the long-scan tolerances."""


def tolerance(dtype: torch.dtype, *, long: bool = False) -> tuple[float, float]:
    """The `(rtol, atol)` that seqmem's comparisons use for a dtype.

    Args:
        dtype: a floating dtype (`torch.float64`, `float32`, `float16` or `bfloat16`).
        long: the looser pair for long scans, where rounding errors accumulate over many steps
            (mamba_ssm's float32 bound: `rtol=6e-4, atol=2e-3`).

    Returns:
        `(rtol, atol)`; see the table in the module's documentation.

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
    if dtype not in _TOLERANCES:
        raise TypeError(f"no tolerance for dtype {dtype}; expected one of {list(_TOLERANCES)}")
    return _TOLERANCES[dtype][1 if long else 0]


def _less_precise(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    if not (a.is_floating_point and b.is_floating_point):
        return a if a.is_floating_point else b
    return a if torch.finfo(a).eps >= torch.finfo(b).eps else b


@dataclass
class _Diff:
    """Where and by how much `actual` misses `expected`."""

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
            f"{self.n_bad} of {self.numel} elements ({pct:.1f}%) outside the {_dtype_name(self.dtype)} "
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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _unravel(flat: int, shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), shape)) if len(shape) else ()


def _diff(
    expected: Tensor, actual: Tensor, rtol: float, atol: float, dtype: torch.dtype, time_dim: int | None
) -> _Diff | None:
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
    d = _Diff(n_bad=n_bad, numel=e.numel(), rtol=rtol, atol=atol, dtype=dtype, scale=scale)
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


def _resolve_tol(
    dtype: torch.dtype, rtol: float | None, atol: float | None, long: bool
) -> tuple[float, float]:
    if rtol is not None and atol is not None:
        return rtol, atol
    default_rtol, default_atol = tolerance(dtype, long=long) if dtype in _TOLERANCES else (0.0, 0.0)
    return (default_rtol if rtol is None else rtol), (default_atol if atol is None else atol)


def assert_close(
    name: str,
    expected: Tensor,
    actual: Tensor,
    dtype: torch.dtype | None = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool = False,
    time_dim: int | None = None,
) -> None:
    """Assert that two tensors agree within seqmem's tolerance for their dtype.

    Elementwise, `|actual - expected| <= atol * s + rtol * |expected|` with
    `s = max(1, max |expected|)`; NaNs in the same places count as equal. The dtypes need not agree
    (compare a float32 kernel with a float64 oracle): the tolerance is that of `dtype`, by default
    the less precise of the two.

    Args:
        name: what is compared, the first words of the message (e.g. `"y from step()"`).
        expected: the reference tensor, any shape.
        actual: the tensor under test, of the same shape.
        dtype: the dtype whose tolerance applies; by default the less precise of the two tensors'.
        rtol: relative tolerance, overriding the dtype's.
        atol: absolute tolerance, overriding the dtype's.
        long: use the long-scan tolerances (see [`tolerance`][seqmem.testing.tolerance]).
        time_dim: the time axis, if any: the message then names the first time step that diverges.

    Raises:
        AssertionError: if the shapes differ, or some element is outside the tolerance. The message
            gives `name`, how many elements miss, the largest absolute error and its index (with both
            values there), the worst miss relative to the tolerance if elsewhere, the relative RMS
            error and, with `time_dim`, the first diverging step.

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
    message = _close_message(
        name, expected, actual, dtype, rtol=rtol, atol=atol, long=long, time_dim=time_dim
    )
    if message is not None:
        raise AssertionError(message)


def _close_message(
    name: str,
    expected: Any,
    actual: Any,
    dtype: torch.dtype | None = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool = False,
    time_dim: int | None = None,
) -> str | None:
    for what, t in (("expected", expected), ("actual", actual)):
        if not isinstance(t, Tensor):
            return f"{name}: {what} must be a tensor, got {type(t).__name__}"
    if expected.shape != actual.shape:
        return f"{name}: shape mismatch: expected {tuple(expected.shape)}, got {tuple(actual.shape)}"
    dtype = _less_precise(expected.dtype, actual.dtype) if dtype is None else dtype
    r, a = _resolve_tol(dtype, rtol, atol, long)
    d = _diff(expected, actual, r, a, dtype, time_dim)
    if d is None:
        return None
    lines = d.lines()
    return f"{name} differs: " + "\n  ".join(lines)


# ---------------------------------------------------------------------------------------------
# failures and the report
# ---------------------------------------------------------------------------------------------

PROTOCOL = "protocol"
SHAPES = "shapes and dtypes"
INPUTS_UNCHANGED = "inputs unchanged"
CAUSALITY = "causality"
BATCH_INDEPENDENCE = "batch independence"
STEP_EQUALS_FORWARD = "step == forward"
CHUNKED = "chunked streaming"
GRADIENTS = "gradients"
BACKEND_PARITY = "backend parity"
STATE_SIZE = "state size"

PROPERTIES: tuple[str, ...] = (
    PROTOCOL,
    SHAPES,
    INPUTS_UNCHANGED,
    GRADIENTS,
    CAUSALITY,
    BATCH_INDEPENDENCE,
    STEP_EQUALS_FORWARD,
    CHUNKED,
    BACKEND_PARITY,
)
"""The properties `check_sequence_model` runs, in order (`STATE_SIZE` is checked on request only)."""


class ConformanceFailure(AssertionError):
    """A model breaks a property of the protocol.

    An `AssertionError`, so test runners report it as a failure.

    Attributes:
        property: the name of the property (one of `PROPERTIES`, or `STATE_SIZE`).
        model: a short description of the model.
        detail: what went wrong and where, without the leading model and property names.
    """

    def __init__(self, property: str, model: str, detail: str, context: str = "") -> None:
        self.property = property
        self.model = model
        self.detail = detail
        self.context = context
        where = f" ({context})" if context else ""
        super().__init__(f"{model} fails {property!r}{where}: {detail}")


@dataclass
class PropertyResult:
    """The outcome of one property.

    Attributes:
        name: the property (one of `PROPERTIES`).
        status: `"passed"` or `"skipped"`.
        detail: what was checked, or why it was skipped.
    """

    name: str
    status: str
    detail: str


@dataclass
class ConformanceReport:
    """What `check_sequence_model` checked: returned when every property held.

    Attributes:
        model: a short description of the model.
        dtype: the dtype the model was checked in.
        batch_size: batch of the input sequence.
        seq_len: length of the input sequence.
        seed: seed of the input sequence and of the perturbations.
        results: one `PropertyResult` per property, in the order they ran.
    """

    model: str
    dtype: torch.dtype
    batch_size: int
    seq_len: int
    seed: int
    results: list[PropertyResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no property failed (a report is only returned then; skipped ones do not count)."""
        return all(r.status in ("passed", "skipped") for r in self.results)

    @property
    def checked(self) -> list[str]:
        """Names of the properties that were checked and held."""
        return [r.name for r in self.results if r.status == "passed"]

    @property
    def skipped(self) -> list[str]:
        """Names of the properties that were skipped."""
        return [r.name for r in self.results if r.status == "skipped"]

    def __iter__(self) -> Iterator[PropertyResult]:
        return iter(self.results)

    def __str__(self) -> str:
        head = (
            f"{self.model}: {_dtype_name(self.dtype)}, batch {self.batch_size}, seq_len {self.seq_len}, "
            f"seed {self.seed}"
        )
        width = max((len(r.name) for r in self.results), default=0)
        rows = [f"  {r.status.upper():7s} {r.name:{width}s}  {r.detail}" for r in self.results]
        return "\n".join([head, *rows])


def _describe(model: Any) -> str:
    name = type(model).__name__
    ins, outs = getattr(model, "input_size", "?"), getattr(model, "output_size", "?")
    backend = getattr(model, "backend", None)
    extra = f", backend={backend!r}" if isinstance(backend, str) else ""
    return f"{name}({ins} -> {outs}{extra})"


@contextmanager
def _property(name: str, model: Any, context: str = "") -> Iterator[None]:
    """Turn any error raised inside into a `ConformanceFailure` naming the property."""
    try:
        yield
    except ConformanceFailure:
        raise
    except AssertionError as err:
        raise ConformanceFailure(name, _describe(model), str(err), context) from err
    except Exception as err:
        raise ConformanceFailure(
            name, _describe(model), f"raised {type(err).__name__}: {err}", context
        ) from err


# ---------------------------------------------------------------------------------------------
# calling a model
# ---------------------------------------------------------------------------------------------


def _forward(model: Any, x: Tensor, state: Any = None, *, pass_state: bool = True) -> tuple[Tensor, Any]:
    fn = model if isinstance(model, nn.Module) else model.forward
    out = fn(x, state) if pass_state else fn(x)
    return _unpack("forward", out)


def _step(model: Any, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
    return _unpack("step", model.step(x_t, state))


def _unpack(what: str, out: Any) -> tuple[Tensor, Any]:
    if not (isinstance(out, tuple) and len(out) == 2):
        raise AssertionError(f"{what} must return a pair (output, state), got {_type_desc(out)}")
    y, state = out
    if not isinstance(y, Tensor):
        raise AssertionError(f"{what} must return (output, state) with a tensor output, got {_type_desc(y)}")
    return y, state


def _type_desc(obj: Any) -> str:
    if isinstance(obj, tuple):
        return f"a {type(obj).__name__} of {len(obj)}"
    return f"a {type(obj).__name__}"


def _initial(model: Any, batch: int, x: Tensor) -> Any:
    return model.initial_state(batch, device=x.device, dtype=x.dtype)


def _flatten(state: Any, prefix: str = "state") -> list[tuple[str, Tensor]]:
    """`[(name, tensor), ...]` of a state: a tensor or a (named, nested) tuple of tensors."""
    if isinstance(state, Tensor):
        return [(prefix, state)]
    if isinstance(state, tuple):
        fields = getattr(state, "_fields", None)
        out: list[tuple[str, Tensor]] = []
        for i, item in enumerate(state):
            sub = f"{prefix}.{fields[i]}" if fields else f"{prefix}[{i}]"
            out.extend(_flatten(item, sub))
        return out
    raise AssertionError(f"{prefix} must be a tensor or a (named) tuple of tensors, got {_type_desc(state)}")


def _structure(state: Any) -> Any:
    if isinstance(state, Tensor):
        return "tensor"
    if isinstance(state, tuple):
        return (type(state).__name__, tuple(_structure(s) for s in state))
    return type(state).__name__


def _rebuild(state: Any, tensors: Iterator[Tensor]) -> Any:
    """`state`'s structure with its tensors replaced, in `_flatten` order."""
    if isinstance(state, Tensor):
        return next(tensors)
    items = [_rebuild(s, tensors) for s in state]
    return type(state)(*items) if hasattr(state, "_fields") else type(state)(items)


def _named_parameters(model: Any) -> list[tuple[str, Tensor]]:
    fn = getattr(model, "named_parameters", None)
    if fn is None:
        return []
    return [(n, p) for n, p in fn() if p.requires_grad]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) % 2**64)


def _noise_like(x: Tensor, gen: torch.Generator) -> Tensor:
    """Fresh normal noise, shaped and scaled like `x` (never zero)."""
    rms = float(x.detach().double().pow(2).mean().sqrt()) if x.numel() else 1.0
    scale = rms if rms > 0 and math.isfinite(rms) else 1.0
    return torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.device, x.dtype) * scale


def _check_x(model: Any, x: Any, where: str) -> tuple[int, int]:
    """Misuse of the checks (not a property failure) raises ValueError / TypeError."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{where}: x must be a tensor of shape (batch, seq_len, input_size), got {type(x).__name__}"
        )
    if x.dim() != 3 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(
            f"{where}: x must have shape (batch >= 1, seq_len >= 1, input_size), got {tuple(x.shape)}"
        )
    size = getattr(model, "input_size", None)
    if isinstance(size, int) and x.shape[2] != size:
        raise ValueError(
            f"{where}: x must have shape (batch, seq_len, {size}) for this model, got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{where}: x must be a floating-point tensor, got {x.dtype}")
    return x.shape[0], x.shape[1]


def _cuts(T: int, cuts: Sequence[int] | None) -> list[int]:
    if cuts is None:
        cuts = (1, T // 2, T - 1)
    return sorted({int(c) for c in cuts if 1 <= int(c) <= T - 1})


class _Tol:
    """The tolerance of one check: the dtype's (long-scan row for long sequences), or overrides."""

    def __init__(self, x: Tensor, rtol: float | None, atol: float | None, long: bool | None) -> None:
        self.long = x.shape[1] >= LONG_SEQ_LEN if long is None else bool(long)
        self.dtype = x.dtype
        self.rtol, self.atol = _resolve_tol(x.dtype, rtol, atol, self.long)

    def message(self, name: str, expected: Tensor, actual: Tensor, time_dim: int | None = None) -> str | None:
        return _close_message(
            name, expected, actual, self.dtype, rtol=self.rtol, atol=self.atol, time_dim=time_dim
        )

    def zero_atol(self, g: Tensor) -> float:
        """What may stand for an exact zero in `g`: atol times the scale of `g` (at least 1)."""
        finite = g.detach()[g.detach().isfinite()]
        return self.atol * max(1.0, float(finite.abs().max())) if finite.numel() else self.atol

    def first_bad_t(self, expected: Tensor, actual: Tensor, time_dim: int) -> int | None:
        d = _diff(expected, actual, self.rtol, self.atol, self.dtype, time_dim)
        return None if d is None else d.first_t

    def compare_states(self, what: str, expected: Any, actual: Any) -> str | None:
        exp, act = _flatten(expected), _flatten(actual)
        if _structure(expected) != _structure(actual):
            return (
                f"{what}: the states differ in structure: expected {_structure(expected)}, "
                f"got {_structure(actual)}"
            )
        for (name, e), (_, a) in zip(exp, act, strict=True):
            msg = self.message(f"{what}: {name}", e, a)
            if msg is not None:
                return msg
        return None


# ---------------------------------------------------------------------------------------------
# the properties
# ---------------------------------------------------------------------------------------------


def check_protocol(model: Any) -> str:
    """The protocol's attributes exist: `input_size`, `output_size` (positive ints) and the methods
    `initial_state`, `forward`, `step`.

    Args:
        model: the object claiming the [`SequenceModel`][seqmem.SequenceModel] protocol.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: (an `AssertionError`) naming `PROTOCOL` and the missing or wrong attribute.
    """
    with _property(PROTOCOL, model):
        for attr in ("input_size", "output_size"):
            if not hasattr(model, attr):
                raise AssertionError(f"the model has no attribute {attr!r} (a positive int)")
            value = getattr(model, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AssertionError(f"{attr} must be a positive int, got {value!r}")
        for method in ("initial_state", "forward", "step"):
            if not callable(getattr(model, method, None)):
                raise AssertionError(f"the model has no method {method}()")
        return f"input_size={model.input_size}, output_size={model.output_size}, methods present"


def _check_state_tensors(what: str, state: Any, x: Tensor) -> list[tuple[str, Tensor]]:
    tensors = _flatten(state, what)
    if not isinstance(state, tuple):
        raise AssertionError(f"{what} must be a NamedTuple (or tuple) of tensors, got {_type_desc(state)}")
    for name, t in tensors:
        if t.device != x.device:
            raise AssertionError(f"{name} is on {t.device} but the input is on {x.device}")
        if t.is_floating_point() and t.dtype != x.dtype:
            raise AssertionError(f"{name} has dtype {t.dtype} but the input is {x.dtype}")
    return tensors


def _check_output(what: str, y: Tensor, shape: tuple[int, ...], x: Tensor) -> None:
    if tuple(y.shape) != shape:
        raise AssertionError(f"{what} must have shape {shape}, got {tuple(y.shape)}")
    if y.dtype != x.dtype:
        raise AssertionError(f"{what} has dtype {y.dtype} but the input is {x.dtype}")
    if y.device != x.device:
        raise AssertionError(f"{what} is on {y.device} but the input is on {x.device}")
    if bool(x.isfinite().all()) and not bool(y.isfinite().all()):
        idx = tuple(int(i) for i in (~y.isfinite()).nonzero()[0])
        raise AssertionError(f"{what} is not finite at index {idx} (the input is): {float(y[idx])}")


def check_shapes(
    model: Any, x: Tensor, *, rtol: float | None = None, atol: float | None = None, long: bool | None = None
) -> str:
    """Shapes, dtypes and devices of outputs and states, and `state=None` meaning the initial state.

    Checks that `initial_state(batch, device=, dtype=)` returns a tuple (a `NamedTuple`, as seqmem's
    states are) of tensors on the input's device, whose floating tensors have the input's dtype;
    that `forward(x)` returns `y` of shape `(batch, seq_len, output_size)`, finite, and a state of
    the same structure; that `forward(x)` equals `forward(x, initial_state(batch))`; and that
    `step` returns `(batch, output_size)` and a state of the same structure.

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence.
        rtol: relative tolerance, overriding the dtype's.
        atol: absolute tolerance, overriding the dtype's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: naming `SHAPES` and the output or state field at fault.
        ValueError: if `x` does not fit the model (wrong rank or feature size).
    """
    B, T = _check_x(model, x, "check_shapes")
    tol = _Tol(x, rtol, atol, long)
    with _property(SHAPES, model), torch.no_grad():
        s0 = _initial(model, B, x)
        _check_state_tensors("initial_state(...)", s0, x)
        y, s = _forward(model, x, pass_state=False)
        _check_output("y = forward(x)[0]", y, (B, T, model.output_size), x)
        _check_state_tensors("forward(x)[1]", s, x)
        if _structure(s) != _structure(s0):
            raise AssertionError(
                f"forward returned a state of structure {_structure(s)}, "
                f"but initial_state gives {_structure(s0)}"
            )
        y0, _ = _forward(model, x, _initial(model, B, x))
        msg = tol.message("forward(x, initial_state(batch)) against forward(x)", y, y0, time_dim=1)
        if msg is not None:
            raise AssertionError(msg)
        y_t, s1 = _step(model, x[:, 0], _initial(model, B, x))
        _check_output("y_t = step(x[:, 0], state)[0]", y_t, (B, model.output_size), x)
        _check_state_tensors("step(...)[1]", s1, x)
        if _structure(s1) != _structure(s0):
            raise AssertionError(
                f"step returned a state of structure {_structure(s1)}, "
                f"but initial_state gives {_structure(s0)}"
            )
        fields = getattr(s, "_fields", None)
        kind = (
            f"{type(s).__name__}{fields}" if fields else f"{type(s).__name__} of {len(_flatten(s))} tensors"
        )
        return f"y {tuple(y.shape)}, state {kind}, step y_t {tuple(y_t.shape)}"


def _first_change(a: Tensor, b: Tensor) -> tuple[int, ...] | None:
    changed = ~((a == b) | (a.isnan() & b.isnan()))
    if not bool(changed.any()):
        return None
    return tuple(int(i) for i in changed.nonzero()[0])


def check_inputs_unchanged(model: Any, x: Tensor) -> str:
    """Neither `forward` nor `step` modifies its input `x` or the state it was given in place.

    States are values, as seqmem's `NamedTuple`s are: a state can be reused (to branch a stream, to
    retry a chunk), so the models must not write into it.

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: naming `INPUTS_UNCHANGED`, the call and the tensor it modified.
        ValueError: if `x` does not fit the model.
    """
    B, T = _check_x(model, x, "check_inputs_unchanged")
    with _property(INPUTS_UNCHANGED, model), torch.no_grad():
        x_in = x.clone()
        _, warm = _forward(model, x_in)
        if (idx := _first_change(x, x_in)) is not None:
            raise AssertionError(f"forward(x) modified x in place (first change at index {idx})")
        saved = [(n, t.clone()) for n, t in _flatten(warm)]
        calls: list[tuple[str, Callable[[], Any]]] = [
            ("forward(x, state)", lambda: _forward(model, x_in, warm)),
            ("step(x[:, 0], state)", lambda: _step(model, x_in[:, 0], warm)),
        ]
        for call, fn in calls:
            fn()
            if (idx := _first_change(x, x_in)) is not None:
                raise AssertionError(f"{call} modified x in place (first change at index {idx})")
            for (name, before), (_, now) in zip(saved, _flatten(warm), strict=True):
                if before.shape != now.shape or (idx := _first_change(before, now)) is not None:
                    where = "its shape" if before.shape != now.shape else f"index {idx}"
                    raise AssertionError(
                        f"{call} modified {name} of the state it was given in place "
                        f"(first change at {where}); "
                        f"return a new state instead"
                    )
        return "x and the given state are left untouched by forward and step"


def check_causal(
    model: Any,
    x: Tensor,
    *,
    cuts: Sequence[int] | None = None,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool | None = None,
) -> str:
    """Causality: the output at step `s` depends on the inputs at steps `<= s` only.

    For each cut `t`, replacing `x[:, t:]` leaves `y[:, :t]` unchanged, and the gradient
    `d y[:, :t] / d x[:, t:]` is zero (checked when the output is differentiable).

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence, `seq_len >= 2` for anything to check.
        cuts: the cut points `t` (`1 <= t < seq_len`); by default `1`, `seq_len // 2`, `seq_len - 1`.
        seed: seed of the perturbation and of the random output weights of the gradient.
        rtol: relative tolerance, overriding the dtype's.
        atol: absolute tolerance, overriding the dtype's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: naming `CAUSALITY`, the cut `t` and the first output step that saw the future.
        ValueError: if `x` does not fit the model.
    """
    B, T = _check_x(model, x, "check_causal")
    tol = _Tol(x, rtol, atol, long)
    points = _cuts(T, cuts)
    if not points:
        return "seq_len 1: nothing to check"
    gen = _generator(seed)
    with _property(CAUSALITY, model):
        with torch.no_grad():
            y, _ = _forward(model, x)
            for t in points:
                x2 = x.clone()
                x2[:, t:] += _noise_like(x[:, t:], gen)
                y2, _ = _forward(model, x2)
                msg = tol.message(f"y[:, :{t}]", y[:, :t], y2[:, :t], time_dim=1)
                if msg is not None:
                    s = tol.first_bad_t(y[:, :t], y2[:, :t], 1)
                    raise AssertionError(
                        f"changing only x[:, {t}:] changed y[:, :{t}]: the output at step {s} depends on a "
                        f"later input (cut at t={t})\n  {msg}"
                    )
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            yg, _ = _forward(model, xg)
        if not yg.requires_grad:
            return f"values at cuts {points}; gradients not checked (the output is not differentiable)"
        r = torch.randn(yg.shape, generator=gen, dtype=torch.float64).to(yg.device, yg.dtype)
        for t in points:
            (g,) = torch.autograd.grad((yg[:, :t] * r[:, :t]).sum(), xg, retain_graph=True, allow_unused=True)
            if g is None:
                continue
            future = g[:, t:]
            bad = ~(future.abs() <= tol.zero_atol(g))
            if bool(bad.any()):
                idx = tuple(int(i) for i in bad.nonzero()[0])
                s = t + idx[1]
                raise AssertionError(
                    f"d y[:, :{t}] / d x[:, {t}:] is not zero: the gradient of the outputs before step {t} "
                    f"reaches the input at step {s} (index {(idx[0], s, idx[2])}, "
                    f"value {float(future[idx]):.3e}, allowed {tol.zero_atol(g):.1e})"
                )
        return f"values and gradients at cuts t in {points}"


def check_batch_independent(
    model: Any,
    x: Tensor,
    *,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool | None = None,
) -> str:
    """Batch independence: row `b` of the output depends on row `b` of the input only.

    Perturbing one row of `x` leaves the other rows of `y` unchanged (values, and a zero gradient
    across rows), and each row run alone (a batch of 1) gives the row of the batched run.

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence; `batch >= 2` for the cross-row checks.
        seed: seed of the perturbation and of the random output weights of the gradient.
        rtol: relative tolerance, overriding the dtype's.
        atol: absolute tolerance, overriding the dtype's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: naming `BATCH_INDEPENDENCE`, the rows involved and the first step at fault.
        ValueError: if `x` does not fit the model.
    """
    B, T = _check_x(model, x, "check_batch_independent")
    tol = _Tol(x, rtol, atol, long)
    gen = _generator(seed + 1)
    with _property(BATCH_INDEPENDENCE, model):
        with torch.no_grad():
            y, _ = _forward(model, x)
            if B >= 2:
                b = B - 1
                x2 = x.clone()
                x2[b] += _noise_like(x[b], gen)
                y2, _ = _forward(model, x2)
                others = [i for i in range(B) if i != b]
                msg = tol.message(f"y[rows != {b}]", y[others], y2[others], time_dim=1)
                if msg is not None:
                    d = _diff(y[others], y2[others], tol.rtol, tol.atol, tol.dtype, 1)
                    row = others[d.index[0]] if d is not None and d.index else "?"
                    raise AssertionError(
                        f"changing only row {b} of x changed row {row} of y, first at step "
                        f"{d.first_t if d else '?'}: the rows of a batch must not interact\n  {msg}"
                    )
            for b in range(B):
                y_b, _ = _forward(model, x[b : b + 1])
                msg = tol.message(f"y[{b}]", y[b : b + 1], y_b, time_dim=1)
                if msg is not None:
                    raise AssertionError(
                        f"row {b} run alone (batch 1) differs from row {b} of the batch of {B}\n  {msg}"
                    )
        if B < 2:
            return "batch 1: each row alone only"
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            yg, _ = _forward(model, xg)
        if not yg.requires_grad:
            return f"values over a batch of {B}; gradients not checked (the output is not differentiable)"
        r = torch.randn(yg.shape[1:], generator=gen, dtype=torch.float64).to(yg.device, yg.dtype)
        (g,) = torch.autograd.grad((yg[0] * r).sum(), xg, allow_unused=True)
        if g is not None:
            bad = ~(g[1:].abs() <= tol.zero_atol(g))
            if bool(bad.any()):
                idx = tuple(int(i) for i in bad.nonzero()[0])
                raise AssertionError(
                    f"d y[0] / d x[{idx[0] + 1}] is not zero: the gradient of row 0 reaches row {idx[0] + 1} "
                    f"of the input at step {idx[1]} (value {float(g[1:][idx]):.3e}, "
                    f"allowed {tol.zero_atol(g):.1e})"
                )
        return f"values and gradients over a batch of {B}, and each row alone"


def check_step_equals_forward(
    model: Any, x: Tensor, *, rtol: float | None = None, atol: float | None = None, long: bool | None = None
) -> str:
    """The recurrent form equals the parallel form: `step` over `t = 0 .. T-1` equals `forward`.

    Compares every output step and the final state (each of its tensors).

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence.
        rtol: relative tolerance, overriding the dtype's.
        atol: absolute tolerance, overriding the dtype's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.

    Returns:
        A one-line summary with the largest difference seen.

    Raises:
        ConformanceFailure: naming `STEP_EQUALS_FORWARD` and the first step that diverges (or the
            state field that differs at the end).
        ValueError: if `x` does not fit the model.
    """
    B, T = _check_x(model, x, "check_step_equals_forward")
    tol = _Tol(x, rtol, atol, long)
    with _property(STEP_EQUALS_FORWARD, model), torch.no_grad():
        y, s = _forward(model, x)
        state = _initial(model, B, x)
        ys = []
        for t in range(T):
            y_t, state = _step(model, x[:, t], state)
            ys.append(y_t)
        y_steps = torch.stack(ys, dim=1)  # (B, T, output_size)
        msg = tol.message("y from step()", y, y_steps, time_dim=1)
        if msg is not None:
            t = tol.first_bad_t(y, y_steps, 1)
            raise AssertionError(
                f"at step t={t} (of {T}) the output of step() differs from forward(x)[:, {t}]\n  {msg}"
            )
        msg = tol.compare_states(f"final state after {T} steps", s, state)
        if msg is not None:
            raise AssertionError(f"the outputs agree but the final states differ\n  {msg}")
        err = float((y - y_steps).abs().max())
        return f"{T} steps, outputs and final state (max abs error {err:.1e})"


def check_chunked(
    model: Any,
    x: Tensor,
    *,
    splits: Sequence[int] | None = None,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool | None = None,
) -> str:
    """Chunked streaming is exact: `forward(x2, forward(x1)[1])` equals `forward(cat([x1, x2], 1))`.

    For each split point `k`: the outputs of both chunks and the final state equal the
    single call's, and so do the gradients with respect to the first chunk of a loss on the second
    (the state carries gradients across chunks). Also: `step(x[:, 0])` then `forward(x[:, 1:], state)`,
    and all split points chained (three or more chunks).

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence, `seq_len >= 2` for anything to check.
        splits: the split points (`1 <= k < seq_len`); by default `1`, `seq_len // 2`, `seq_len - 1`.
        seed: seed of the random output weights of the gradient check.
        rtol: relative tolerance, overriding the dtype's.
        atol: absolute tolerance, overriding the dtype's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: naming `CHUNKED`, the split and the first step that diverges (or the
            state field, or the gradient, that differs).
        ValueError: if `x` does not fit the model.
    """
    B, T = _check_x(model, x, "check_chunked")
    tol = _Tol(x, rtol, atol, long)
    points = _cuts(T, splits)
    if not points:
        return "seq_len 1: nothing to split"
    with _property(CHUNKED, model):
        with torch.no_grad():
            y, s = _forward(model, x)
            plans: list[tuple[str, list[int]]] = [(f"split at t={k}", [k]) for k in points]
            if len(points) >= 2:
                plans.append((f"{len(points) + 1} chunks split at t in {points}", points))
            for label, ks in plans:
                bounds = [0, *ks, T]
                state, parts = None, []
                for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                    y_c, state = _forward(model, x[:, lo:hi], state) if lo else _forward(model, x[:, lo:hi])
                    parts.append(y_c)
                y_chunks = torch.cat(parts, dim=1)
                msg = tol.message("y of the chunks", y, y_chunks, time_dim=1)
                if msg is not None:
                    t = tol.first_bad_t(y, y_chunks, 1)
                    raise AssertionError(
                        f"{label}: forward over the chunks, passing the state along, differs from forward(x) "
                        f"from step t={t}\n  {msg}"
                    )
                msg = tol.compare_states("final state", s, state)
                if msg is not None:
                    raise AssertionError(f"{label}: the outputs agree but the final states differ\n  {msg}")
            y0, s1 = _step(model, x[:, 0], _initial(model, B, x))
            y_rest, s_end = _forward(model, x[:, 1:], s1)
            msg = tol.message("y", y[:, 1:], y_rest, time_dim=1)
            if msg is not None:
                t = 1 + (tol.first_bad_t(y[:, 1:], y_rest, 1) or 0)
                raise AssertionError(
                    f"step(x[:, 0]) then forward(x[:, 1:], state) differs from forward(x) from step t={t}: "
                    f"the state of step() does not continue forward()\n  {msg}"
                )
            msg = tol.compare_states("final state", s, s_end)
            if msg is not None:
                raise AssertionError(
                    f"step(x[:, 0]) then forward(x[:, 1:], state): final states differ\n  {msg}"
                )
        # gradients across the chunk boundary
        k = points[len(points) // 2]
        gen = _generator(seed + 2)
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            y_full, _ = _forward(model, xg)
            if not y_full.requires_grad:
                return f"splits at t in {points}; gradients not checked (the output is not differentiable)"
            r = torch.randn(y_full[:, k:].shape, generator=gen, dtype=torch.float64).to(x.device, x.dtype)
            (g_full,) = torch.autograd.grad((y_full[:, k:] * r).sum(), xg, allow_unused=True)
            xc = x.detach().clone().requires_grad_(True)
            _, s_k = _forward(model, xc[:, :k])
            y_2, _ = _forward(model, xc[:, k:], s_k)
            (g_chunk,) = torch.autograd.grad((y_2 * r).sum(), xc, allow_unused=True)
        g_full = torch.zeros_like(x) if g_full is None else g_full
        g_chunk = torch.zeros_like(x) if g_chunk is None else g_chunk
        msg = tol.message(f"d loss(y[:, {k}:]) / d x[:, :{k}]", g_full[:, :k], g_chunk[:, :k], time_dim=1)
        if msg is not None:
            raise AssertionError(
                f"split at t={k}: the gradient of a loss on the second chunk with respect to the first chunk "
                f"differs from the single call's (does forward detach the state it is given?)\n  {msg}"
            )
        return f"splits at t in {points}, chained chunks, step then forward, gradients across t={k}"


def _grad_loss(y: Tensor, state: Any, gen: torch.Generator) -> Tensor:
    """A random linear functional of the output and of every differentiable state tensor."""
    loss = (y * torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device, y.dtype)).sum()
    for _, t in _flatten(state):
        if t.requires_grad and t.is_floating_point() and t.numel():
            loss = (
                loss
                + (t * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype)).sum()
            )
    return loss


def check_gradients(model: Any, x: Tensor, *, seed: int = 0, allow_unused: Collection[str] = ()) -> str:
    """Gradients flow: backward works, the input and every trainable parameter get a finite gradient.

    The loss is a random linear functional of the output and of the final state. The model's own
    `.grad` fields are not touched (`torch.autograd.grad` is used).

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence.
        seed: seed of the random loss weights.
        allow_unused: names of parameters (as `named_parameters` gives them) that may get no gradient.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: naming `GRADIENTS` and the parameter (or input) whose gradient is
            missing or not finite, or the error backward raised.
        ValueError: if `x` does not fit the model.
    """
    _check_x(model, x, "check_gradients")
    gen = _generator(seed + 3)
    with _property(GRADIENTS, model), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        y, state = _forward(model, xg)
        if not y.requires_grad:
            raise AssertionError("the output of forward does not require grad: nothing is differentiable")
        params = _named_parameters(model)
        loss = _grad_loss(y, state, gen)
        grads = torch.autograd.grad(loss, [xg, *(p for _, p in params)], allow_unused=True)
        g_x, g_params = grads[0], grads[1:]
        if g_x is None:
            raise AssertionError(
                "the input x gets no gradient: the output does not depend on it through autograd"
            )
        _check_finite("the gradient of x", g_x)
        missing = [
            n for (n, _), g in zip(params, g_params, strict=True) if g is None and n not in allow_unused
        ]
        if missing:
            raise AssertionError(
                f"parameters that get no gradient: {missing} (detached, unused, or computed under no_grad?)"
            )
        for (n, _), g in zip(params, g_params, strict=True):
            if g is not None:
                _check_finite(f"the gradient of parameter {n!r}", g)
        return f"x and {len(params)} parameter tensors get finite gradients"


def _check_finite(what: str, g: Tensor) -> None:
    bad = ~g.isfinite()
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(f"{what} is not finite at index {idx}: {float(g[idx])}")


def _with_backend(model: Any, backend: str) -> Any:
    other = copy.deepcopy(model)
    other.backend = backend
    return other


def check_backend_parity(
    model: Any,
    x: Tensor,
    *,
    backends: Sequence[str] | None = None,
    reference: str = "torch",
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool | None = None,
) -> str:
    """Every backend computes what the reference backend computes: outputs, states and gradients.

    The model is copied once per backend (its `backend` attribute set on the copy). Starting from a
    non-zero state (the one `forward(x)` ends in), each backend's `forward` output, final state,
    one `step`, and the gradients of a random loss with respect to the input, the initial state and
    every parameter must equal the reference's.

    Args:
        model: a model with a `backends` attribute and a settable `backend`, in `x`'s dtype.
        x: `(batch, seq_len, input_size)` input sequence.
        backends: the backends to compare; by default all of `model.backends`.
        reference: the backend the others are compared with.
        seed: seed of the random loss weights.
        rtol: relative tolerance, overriding the dtype's.
        atol: absolute tolerance, overriding the dtype's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.

    Returns:
        A one-line summary of what was compared.

    Raises:
        ConformanceFailure: naming `BACKEND_PARITY`, the backend, and the output, state field or
            gradient that differs.
        ValueError: if `x` does not fit the model, or a backend is not in `model.backends`.
    """
    B, T = _check_x(model, x, "check_backend_parity")
    available = tuple(getattr(model, "backends", ()))
    chosen = tuple(available if backends is None else backends)
    for name in (reference, *chosen):
        if name not in available:
            raise ValueError(
                f"check_backend_parity: {type(model).__name__} has no backend {name!r}; "
                f"it lists {list(available)}"
            )
    others = [b for b in chosen if b != reference]
    if not others:
        return f"only {reference!r}: nothing to compare"
    tol = _Tol(x, rtol, atol, long)

    def run(m: Any) -> dict[str, Any]:
        with torch.no_grad():
            _, warm = _forward(m, x)
        s_in = _rebuild(
            warm, iter([t.detach().clone().requires_grad_(t.is_floating_point()) for _, t in _flatten(warm)])
        )
        xg = x.detach().clone().requires_grad_(True)
        params = _named_parameters(m)
        with torch.enable_grad():
            y, s = _forward(m, xg, s_in)
            leaves = [xg, *(t for _, t in _flatten(s_in) if t.requires_grad), *(p for _, p in params)]
            names = [
                "x",
                *(n for n, t in _flatten(s_in) if t.requires_grad),
                *(f"parameter {n!r}" for n, _ in params),
            ]
            grads = torch.autograd.grad(_grad_loss(y, s, _generator(seed + 4)), leaves, allow_unused=True)
        with torch.no_grad():
            y_t, s_t = _step(m, x[:, 0], warm)
        return {
            "y": y.detach(),
            "state": s,
            "y_t": y_t,
            "state_t": s_t,
            "grads": dict(zip(names, grads, strict=True)),
        }

    with _property(BACKEND_PARITY, _with_backend(model, reference)):
        ref = run(_with_backend(model, reference))
    for name in others:
        m = _with_backend(model, name)
        with _property(BACKEND_PARITY, m, f"backend {name!r} against {reference!r}"):
            got = run(m)
            checks: list[str | None] = [
                tol.message("forward(x, state) output", ref["y"], got["y"], time_dim=1),
                tol.compare_states("forward(x, state) final state", ref["state"], got["state"]),
                tol.message("step(x[:, 0], state) output", ref["y_t"], got["y_t"]),
                tol.compare_states("step(x[:, 0], state) state", ref["state_t"], got["state_t"]),
            ]
            for gname, g_ref in ref["grads"].items():
                g_got = got["grads"].get(gname)
                if (g_ref is None) != (g_got is None):
                    checks.append(
                        f"gradient of {gname}: {reference!r} gives "
                        f"{'none' if g_ref is None else 'one'}, "
                        f"{name!r} gives {'none' if g_got is None else 'one'}"
                    )
                elif g_ref is not None:
                    td = 1 if gname == "x" else None
                    checks.append(tol.message(f"gradient of {gname}", g_ref, g_got, time_dim=td))
            for msg in checks:
                if msg is not None:
                    raise AssertionError(msg)
    return f"{others} against {reference!r}: outputs, states, one step and {len(ref['grads'])} gradients"


def check_state_size(model: Any, x: Tensor, *, growth: str = "constant") -> str:
    """The memory a stream carries: `state_nbytes` after each `step`, constant or linear in `t`.

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence.
        growth: `"constant"` (recurrences: the state after every step has the initial state's size)
            or `"linear"` (a KV cache: `nbytes(t) = nbytes(0) + t * nbytes_per_step`, with
            `nbytes_per_step > 0`); the final state of `forward` must match the last step's either way.

    Returns:
        A one-line summary with the sizes.

    Raises:
        ConformanceFailure: naming `STATE_SIZE` and the step where the size is off.
        ValueError: if `growth` is neither `"constant"` nor `"linear"`, or `x` does not fit the model.
    """
    if growth not in ("constant", "linear"):
        raise ValueError(f"check_state_size: growth must be 'constant' or 'linear', got {growth!r}")
    B, T = _check_x(model, x, "check_state_size")
    with _property(STATE_SIZE, model), torch.no_grad():
        state = _initial(model, B, x)
        sizes = [state_nbytes(state)]
        for t in range(T):
            _, state = _step(model, x[:, t], state)
            sizes.append(state_nbytes(state))
        _, s = _forward(model, x)
        if state_nbytes(s) != sizes[-1]:
            raise AssertionError(
                f"forward's final state holds {state_nbytes(s)} bytes but {T} steps hold {sizes[-1]}"
            )
        if growth == "constant":
            for t, n in enumerate(sizes):
                if n != sizes[0]:
                    raise AssertionError(
                        f"the state grows: {sizes[0]} bytes initially, {n} bytes after {t} steps "
                        f"(expected constant)"
                    )
            return f"constant: {sizes[0]} bytes at every step"
        per_step = sizes[1] - sizes[0]
        if per_step <= 0:
            raise AssertionError(
                f"the state does not grow: {sizes[0]} bytes initially, {sizes[1]} after one step"
            )
        for t, n in enumerate(sizes):
            if n != sizes[0] + t * per_step:
                raise AssertionError(
                    f"after {t} steps the state holds {n} bytes, expected {sizes[0]} + {t} * {per_step} "
                    f"= {sizes[0] + t * per_step} (linear growth)"
                )
        return f"linear: {sizes[0]} + {per_step} bytes per step"


# ---------------------------------------------------------------------------------------------
# all at once
# ---------------------------------------------------------------------------------------------


def random_sequence(
    batch_size: int,
    seq_len: int,
    input_size: int,
    *,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    scale: float = 1.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """A reproducible input sequence: standard normal entries times `scale`, from a seeded generator.

    What [`sequences`][seqmem.testing.sequences] draws, and what hypothesis' notes tell you to call
    to replay a failing example.

    Args:
        batch_size: number of sequences `B`.
        seq_len: number of steps `T`.
        input_size: number of features `I`.
        dtype: a floating dtype.
        seed: seed of the `torch.Generator` (torch's global random state is untouched).
        scale: standard deviation of the entries.
        device: where the tensor goes (generated on the CPU first, so it is the same everywhere).

    Returns:
        `(batch_size, seq_len, input_size)` tensor.

    Example:
        >>> import torch
        >>> from seqmem.testing import random_sequence
        >>> x = random_sequence(2, 5, 3, dtype=torch.float64, seed=7)
        >>> x.shape, x.dtype, torch.equal(x, random_sequence(2, 5, 3, dtype=torch.float64, seed=7))
        (torch.Size([2, 5, 3]), torch.float64, True)
    """
    gen = _generator(seed)
    x = torch.randn(batch_size, seq_len, input_size, generator=gen, dtype=torch.float64) * float(scale)
    return x.to(device=device, dtype=dtype)


def check_sequence_model(
    model: Any,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    batch_size: int = 3,
    seq_len: int = 12,
    scale: float = 1.0,
    x: Tensor | None = None,
    backends: Sequence[str] | None = None,
    skip: Collection[str] = (),
    rtol: float | None = None,
    atol: float | None = None,
    long: bool | None = None,
) -> ConformanceReport:
    """Check that a model keeps the [`SequenceModel`][seqmem.SequenceModel] protocol.

    Runs the properties in this order and stops at the first that fails:

    1. `protocol`: `input_size`, `output_size`, `initial_state`, `forward`, `step` exist.
    2. `shapes and dtypes`: of outputs and states; `forward(x)` equals `forward(x, initial_state(B))`.
    3. `inputs unchanged`: `forward` and `step` leave `x` and the given state untouched.
    4. `gradients`: backward works; `x` and every parameter get a finite gradient.
    5. `causality`: changing `x[:, t:]` leaves `y[:, :t]` unchanged; `d y[:, :t] / d x[:, t:] = 0`.
    6. `batch independence`: row `b` of `y` depends on row `b` of `x` only.
    7. `step == forward`: `step` over `t = 0 .. T-1` gives `forward`'s outputs and final state.
    8. `chunked streaming`: `forward(x2, forward(x1)[1])` equals `forward(cat([x1, x2], 1))`,
       gradients across the split included.
    9. `backend parity`: every backend in `backends` equals the `"torch"` one (outputs, states,
       all gradients); skipped for a model without a `backends` attribute or with one backend.

    The model is checked on a deep copy cast to `dtype` (yours is not modified); put a model with
    dropout in eval mode first. It need not derive from a seqmem class: any object with the
    protocol's attributes will do, and a state may be any (named) tuple of tensors.

    Args:
        model: the model to check.
        dtype: the dtype to check in; float64 makes the comparisons tight.
        seed: seed of the input sequence and of the perturbations.
        batch_size: batch `B` of the input sequence.
        seq_len: length `T` of the input sequence.
        scale: standard deviation of the input entries (large values saturate gates).
        x: `(batch, seq_len, input_size)` input to use instead of a random one (cast to `dtype`).
        backends: backends to compare with `"torch"`; by default all of `model.backends`, none for a
            model without that attribute. Pass `()` to skip.
        skip: names of properties not to check, e.g. `{"batch independence"}` for a model with
            batch normalisation.
        rtol: relative tolerance, overriding the dtype's (see [`tolerance`][seqmem.testing.tolerance]).
        atol: absolute tolerance, overriding the dtype's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.

    Returns:
        A `ConformanceReport` listing the properties checked and skipped (`print` it for a table).

    Raises:
        ConformanceFailure: an `AssertionError` whose message names the model, the first property
            that fails, the setting (dtype, batch, seq_len, seed) and where: which step, which
            state field or parameter, and by how much.
        ValueError: for a `skip` entry that is not a property name, or an `x` that does not fit.

    Example:
        A hand-written leaky integrator, $h_t = a \\odot h_{t-1} + W x_t$, with no seqmem base class:

        >>> import torch
        >>> from torch import nn
        >>> from seqmem.testing import check_sequence_model
        >>> class Leaky(nn.Module):
        ...     def __init__(self, input_size, hidden_size):
        ...         super().__init__()
        ...         self.input_size, self.output_size = input_size, hidden_size
        ...         self.proj = nn.Linear(input_size, hidden_size)
        ...         self.decay = nn.Parameter(torch.full((hidden_size,), 0.9))
        ...     def initial_state(self, batch_size, *, device=None, dtype=None):
        ...         return (torch.zeros(batch_size, self.output_size, device=device, dtype=dtype),)
        ...     def step(self, x_t, state):
        ...         h = self.decay * state[0] + self.proj(x_t)
        ...         return h, (h,)
        ...     def forward(self, x, state=None):
        ...         if state is None:
        ...             state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        ...         ys = []
        ...         for t in range(x.shape[1]):
        ...             y_t, state = self.step(x[:, t], state)
        ...             ys.append(y_t)
        ...         return torch.stack(ys, dim=1), state
        >>> report = check_sequence_model(Leaky(3, 5))
        >>> report.passed, report.skipped
        (True, ['backend parity'])
    """
    unknown = [s for s in skip if s not in PROPERTIES]
    if unknown:
        raise ValueError(
            f"check_sequence_model: unknown properties in skip: {unknown}; "
            f"expected some of {list(PROPERTIES)}"
        )
    check_protocol(model)
    m = copy.deepcopy(model)
    if hasattr(m, "to"):
        m = m.to(dtype) or m
    if x is None:
        x = random_sequence(
            batch_size, seq_len, model.input_size, dtype=dtype, seed=seed, scale=scale, device=_device_of(m)
        )
    else:
        x = x.to(dtype)
    B, T = _check_x(m, x, "check_sequence_model")
    context = f"{_dtype_name(dtype)}, batch {B}, seq_len {T}, seed {seed}"
    report = ConformanceReport(_describe(model), dtype, B, T, seed)
    report.results.append(PropertyResult(PROTOCOL, "passed", check_protocol(m)))
    tol = {"rtol": rtol, "atol": atol, "long": long}
    has_backends = hasattr(m, "backends") and hasattr(m, "backend")
    runs: list[tuple[str, Callable[[], str]]] = [
        (SHAPES, lambda: check_shapes(m, x, **tol)),
        (INPUTS_UNCHANGED, lambda: check_inputs_unchanged(m, x)),
        (GRADIENTS, lambda: check_gradients(m, x, seed=seed)),
        (CAUSALITY, lambda: check_causal(m, x, seed=seed, **tol)),
        (BATCH_INDEPENDENCE, lambda: check_batch_independent(m, x, seed=seed, **tol)),
        (STEP_EQUALS_FORWARD, lambda: check_step_equals_forward(m, x, **tol)),
        (CHUNKED, lambda: check_chunked(m, x, seed=seed, **tol)),
    ]
    if has_backends:
        runs.append((BACKEND_PARITY, lambda: check_backend_parity(m, x, backends=backends, seed=seed, **tol)))
    for name, run in runs:
        if name in skip:
            report.results.append(PropertyResult(name, "skipped", "skipped on request"))
            continue
        try:
            detail = run()
        except ConformanceFailure as err:
            where = "; ".join(c for c in (err.context, context) if c)
            raise ConformanceFailure(err.property, err.model, err.detail, where) from err
        status = "skipped" if name == BACKEND_PARITY and detail.endswith("nothing to compare") else "passed"
        report.results.append(PropertyResult(name, status, detail))
    if not has_backends:
        report.results.append(
            PropertyResult(BACKEND_PARITY, "skipped", "the model has no `backends` attribute")
        )
    return report


def _device_of(model: Any) -> torch.device | None:
    params = getattr(model, "parameters", None)
    if params is None:
        return None
    first = next(iter(params()), None)
    return None if first is None else first.device


# ---------------------------------------------------------------------------------------------
# hypothesis strategies
# ---------------------------------------------------------------------------------------------


class ModelConfig(Mapping[str, Any]):
    """Constructor arguments of one of seqmem's models, as `model_configs` draws them.

    A read-only mapping of keyword arguments, so `seqmem.build(config.family, **config)` works;
    `config.build(...)` does the same with a seed, a dtype and a backend. Its `repr` is the Python
    that rebuilds it, so a failing example can be pasted into a test.

    Args:
        family: one of `seqmem.model_names()`.
        **kwargs: keyword arguments of the family's constructor.

    Raises:
        ValueError: for an unknown family.

    Example:
        >>> import seqmem
        >>> from seqmem.testing import ModelConfig
        >>> config = ModelConfig("lstm", input_size=3, hidden_size=5, peephole=True)
        >>> config
        ModelConfig('lstm', input_size=3, hidden_size=5, peephole=True)
        >>> seqmem.build(config.family, **config).output_size, config.input_size
        (5, 3)
    """

    def __init__(self, family: str, **kwargs: Any) -> None:
        if family not in model_names():
            raise ValueError(f"ModelConfig: unknown model family {family!r}; expected one of {model_names()}")
        self.family = family
        self._kwargs = dict(kwargs)

    def __getitem__(self, key: str) -> Any:
        return self._kwargs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kwargs)

    def __len__(self) -> int:
        return len(self._kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelConfig):
            return NotImplemented
        return self.family == other.family and self._kwargs == other._kwargs

    def __hash__(self) -> int:
        return hash((self.family, tuple(sorted(self._kwargs.items()))))

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self._kwargs.items())
        return f"ModelConfig({self.family!r}{args})"

    @property
    def input_size(self) -> int:
        """Number of input features of the model it builds (its spec's input argument, else its width)."""
        spec = model_spec(self.family)
        return int(self._kwargs[spec.input_arg or spec.width_arg])

    def build(
        self,
        *,
        seed: int | None = 0,
        dtype: torch.dtype | None = None,
        backend: str | None = None,
        **overrides: Any,
    ) -> nn.Module:
        """Build the model.

        Args:
            seed: seeds torch's generator for the parameter initialisation, inside
                `torch.random.fork_rng` (the global random state is restored); `None` uses it as is.
            dtype: cast the parameters to this dtype.
            backend: the backend, if not the default.
            **overrides: constructor arguments replacing the drawn ones.

        Returns:
            The model, a `SequenceModel` `nn.Module`.
        """
        kwargs = {**self._kwargs, **overrides}
        if backend is not None:
            kwargs["backend"] = backend
        if seed is None:
            model = build(self.family, **kwargs)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed) % 2**64)
                model = build(self.family, **kwargs)
        return model.to(dtype) if dtype is not None else model


def seeds() -> st.SearchStrategy[int]:
    """Seeds for `torch.Generator().manual_seed`: integers in `[0, 2**32)` (shrinking towards 0).

    Returns:
        A strategy of ints.
    """
    return st.integers(0, 2**32 - 1)


def _int_range(value: int | tuple[int, int], what: str) -> st.SearchStrategy[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    else:
        lo, hi = value
    if not (1 <= lo <= hi):
        raise ValueError(
            f"sequences: {what} must be an int >= 1 or a range (lo, hi) with 1 <= lo <= hi, got {value!r}"
        )
    return st.integers(lo, hi)


def _note(text: str) -> None:
    try:
        note(text)
    except InvalidArgument:  # outside a hypothesis test (e.g. `strategy.example()`)
        pass


def sequences(
    input_size: int,
    *,
    batch: int | tuple[int, int] = (1, 4),
    seq_len: int | tuple[int, int] = (1, 64),
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    scale: float | tuple[float, float] = 1.0,
    device: torch.device | str | None = None,
) -> st.SearchStrategy[Tensor]:
    """Input sequences `(batch, seq_len, input_size)`, drawn as shapes, dtype, scale and a seed.

    The tensor comes from [`random_sequence`][seqmem.testing.random_sequence] with the drawn seed, so
    it shrinks with its recipe (towards batch and length at their minimum, the first dtype, seed 0)
    and replays exactly. The recipe is printed with a failing example (hypothesis' `note`).

    Args:
        input_size: number of features `I`.
        batch: the batch size, or a range `(lo, hi)` to draw it from.
        seq_len: the length, or a range `(lo, hi)` to draw it from.
        dtypes: the dtypes to draw from (shrinks towards the first).
        scale: standard deviation of the entries, or a range `(lo, hi)` to draw it from.
        device: where the tensors go.

    Returns:
        A strategy of `(batch, seq_len, input_size)` floating tensors.

    Raises:
        ValueError: for an empty range, a size below 1 or no dtypes.

    Example:
        >>> import torch
        >>> from hypothesis import given, settings
        >>> from seqmem.testing import sequences
        >>> @settings(max_examples=5, deadline=None)
        ... @given(x=sequences(3, batch=2, seq_len=(1, 8), dtypes=(torch.float64,)))
        ... def test_shape(x):
        ...     assert x.shape[0] == 2 and 1 <= x.shape[1] <= 8 and x.shape[2] == 3
        >>> test_shape()
    """
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"sequences: input_size must be a positive int, got {input_size!r}")
    batches, lengths = _int_range(batch, "batch"), _int_range(seq_len, "seq_len")
    if not dtypes:
        raise ValueError("sequences: dtypes must name at least one dtype")
    if isinstance(scale, (int, float)):
        scales: st.SearchStrategy[float] = st.just(float(scale))
    else:
        lo, hi = (float(v) for v in scale)
        if not 0 < lo <= hi:
            raise ValueError(
                f"sequences: scale must be positive, or a range (lo, hi) with 0 < lo <= hi, got {scale!r}"
            )
        scales = st.floats(lo, hi)

    @st.composite
    def draw(draw_: Callable[[st.SearchStrategy[Any]], Any]) -> Tensor:
        B, T = draw_(batches), draw_(lengths)
        dtype = draw_(st.sampled_from(tuple(dtypes)))
        s = draw_(scales)
        seed = draw_(seeds())
        _note(
            f"x = seqmem.testing.random_sequence({B}, {T}, {input_size}, dtype={dtype}, "
            f"seed={seed}, scale={s!r})"
        )
        return random_sequence(B, T, input_size, dtype=dtype, seed=seed, scale=s, device=device)

    return draw()


def _sizes(max_size: int) -> st.SearchStrategy[int]:
    return st.integers(1, max_size)


def model_configs(family: str | None = None, *, max_size: int = 8) -> st.SearchStrategy[ModelConfig]:
    """Constructor arguments of seqmem's models: small sizes and every variant flag.

    What is drawn comes from the family's `ModelSpec.configs` (its folder's `spec.py`):

    | family | drawn |
    | --- | --- |
    | `rnn` | `input_size`, `hidden_size`, `nonlinearity` (tanh, relu), `bias` |
    | `lstm` | `input_size`, `hidden_size`, `bias`, `forget_bias`, `peephole` |
    | `gru` | `input_size`, `hidden_size`, `bias`, `reset_after` |
    | `transformer` | `n_heads`, `d_model` (even head size), `n_layers`, `mlp_ratio`, `bias`, `rope_base` |
    | `mamba`, `s4d` | `d_model`, `d_state`, `d_conv` (1-4), `expand` (1-2), `dt_rank`, `bias`, `conv_bias` |
    | a registered model without `configs` | its width (on its grid) and input size |

    Sizes shrink towards 1 and flags towards `False`, so a failure shrinks to the smallest model
    that shows it.

    Args:
        family: one of `seqmem.model_names()` (any registered model), or `None` to draw the family too.
        max_size: the largest size drawn (`input_size`, `hidden_size`, `d_model`, `d_state`).

    Returns:
        A strategy of [`ModelConfig`][seqmem.testing.ModelConfig]: `config.build(dtype=...)` or
        `seqmem.build(config.family, **config)`.

    Raises:
        ValueError: for an unknown family, or `max_size < 2` (the transformer needs an even head size).

    Example:
        >>> import torch
        >>> from hypothesis import given, settings
        >>> from seqmem.testing import check_step_equals_forward, model_configs, random_sequence
        >>> @settings(max_examples=5, deadline=None)
        ... @given(config=model_configs("gru"))
        ... def test_gru(config):
        ...     model = config.build(dtype=torch.float64)
        ...     x = random_sequence(2, 5, config.input_size, dtype=torch.float64)
        ...     check_step_equals_forward(model, x)
        >>> test_gru()
    """
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 2:
        raise ValueError(f"model_configs: max_size must be an int >= 2, got {max_size!r}")
    if family is None:
        return st.sampled_from(model_names()).flatmap(lambda f: model_configs(f, max_size=max_size))
    if family not in model_names():
        raise ValueError(f"model_configs: unknown model family {family!r}; expected one of {model_names()}")
    spec = model_spec(family)
    if spec.configs is not None:
        kwargs = spec.configs(max_size)
    else:  # sizes only: the width on its grid, and the input size where the model takes one
        step = spec.step()
        fields = {spec.width_arg: st.integers(1, max(1, max_size // step)).map(lambda k: k * step)}
        if spec.input_arg is not None:
            fields[spec.input_arg] = _sizes(max_size)
        kwargs = st.fixed_dictionaries(fields)
    return kwargs.map(lambda kw: ModelConfig(family, **kw))
