"""The conformance properties of the `SequenceModel` protocol, one function each.

Each `check_*` function takes a model (in `x`'s dtype, on its device) and an input `x`, checks one
property, returns a one-line summary of what it checked, and raises a
[`ConformanceFailure`][seqmem.testing.ConformanceFailure] (an `AssertionError`) naming the property
and where it broke. A property that needs a form the model lacks (`step`, a `forward` that takes or
returns a state) raises `TypeError` saying so; `check_sequence_model` reports it as skipped.

In float32 (or lower), a comparison that fails is re-judged by a float64 referee: the same model
(parameters cast to float64, exactly) and the same input, run in float64. If the two sides agree
there, the failure is rounding, and the message says which side drifted further from its float64
value; if they differ in float64 too, it is a bug.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .calls import NO_STATE, Subject, accepts
from .fixtures import generator, noise_like
from .pytree import (
    describe,
    first_structure_difference,
    iter_pairs,
    map_state_leaves,
    state_leaves,
    state_nbytes,
    state_tensors,
)
from .tolerances import Diff, Tolerance, diff, dtype_name, leaf_pairs, max_abs_error, resolve

__all__ = [
    "BACKEND_PARITY",
    "BATCH_INDEPENDENCE",
    "CAUSALITY",
    "CHUNKED",
    "GRADIENTS",
    "INPUTS_UNCHANGED",
    "PROPERTIES",
    "PROTOCOL",
    "SHAPES",
    "STATE_SHAPES",
    "STATE_SIZE",
    "STEP_EQUALS_FORWARD",
    "ConformanceFailure",
    "check_backend_parity",
    "check_batch_independent",
    "check_causal",
    "check_chunked",
    "check_gradients",
    "check_inputs_unchanged",
    "check_protocol",
    "check_shapes",
    "check_state_shapes",
    "check_state_size",
    "check_step_equals_forward",
]

PROTOCOL = "protocol"
SHAPES = "shapes and dtypes"
STATE_SHAPES = "state shapes"
INPUTS_UNCHANGED = "inputs unchanged"
GRADIENTS = "gradients"
CAUSALITY = "causality"
BATCH_INDEPENDENCE = "batch independence"
STEP_EQUALS_FORWARD = "step == forward"
CHUNKED = "chunked streaming"
BACKEND_PARITY = "backend parity"
STATE_SIZE = "state size"

PROPERTIES: tuple[str, ...] = (
    PROTOCOL,
    SHAPES,
    STATE_SHAPES,
    INPUTS_UNCHANGED,
    GRADIENTS,
    CAUSALITY,
    BATCH_INDEPENDENCE,
    STEP_EQUALS_FORWARD,
    CHUNKED,
    BACKEND_PARITY,
    STATE_SIZE,
)
"""The properties `check_sequence_model` runs, in order (`STATE_SIZE` only when given `state_growth`)."""

_LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


class ConformanceFailure(AssertionError):
    """A model breaks a property of the protocol.

    An `AssertionError`, so test runners report it as a failure.

    Attributes:
        property: the name of the property (one of `PROPERTIES`).
        model: a short description of the model.
        detail: what went wrong and where, without the leading model and property names.
        context: the setting (dtype, batch, seq_len, seed; the backend), if known.
        report: the [`ConformanceReport`][seqmem.testing.ConformanceReport] so far, when raised by
            `check_sequence_model`; else `None`.
    """

    def __init__(self, property: str, model: str, detail: str, context: str = "") -> None:
        self.property = property
        self.model = model
        self.detail = detail
        self.context = context
        self.report: Any = None
        where = f" ({context})" if context else ""
        super().__init__(f"{model} fails {property!r}{where}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (pytest-xdist, multiprocessing)
        return (type(self), (self.property, self.model, self.detail, self.context))


def describe_model(model: Any) -> str:
    """`"GRU(3 -> 4, backend='numba')"`: the class, the sizes and the backend of a model."""
    name = type(model).__name__
    ins, outs = getattr(model, "input_size", "?"), getattr(model, "output_size", "?")
    backend = getattr(model, "backend", None)
    extra = f", backend={backend!r}" if isinstance(backend, str) else ""
    return f"{name}({ins} -> {outs}{extra})"


@contextmanager
def property_context(name: str, model: Any, context: str = "") -> Iterator[None]:
    """Turn any error raised inside into a `ConformanceFailure` naming the property."""
    try:
        yield
    except ConformanceFailure:
        raise
    except AssertionError as err:
        raise ConformanceFailure(name, describe_model(model), str(err), context) from err
    except Exception as err:
        raise ConformanceFailure(name, describe_model(model), f"raised {type(err).__name__}: {err}", context) from err


# ---------------------------------------------------------------------------------------------
# comparing, with the float64 referee
# ---------------------------------------------------------------------------------------------


@dataclass
class Mismatch:
    """A failed comparison: the message, the `Diff` of the leaf at fault, and the referee's verdict.

    `rounding` is `True` when the float64 referee finds the two sides equal in float64 (the failure
    is rounding), `False` when they differ there too (a bug), `None` without a referee.
    """

    message: str
    diff: Diff | None = None
    rounding: bool | None = None

    def __str__(self) -> str:
        return self.message

    @property
    def first_t(self) -> int:
        return self.diff.first_t if self.diff is not None and self.diff.first_t is not None else 0


Pair = Callable[[Callable[..., Subject], Tensor], tuple[Any, Any]]
"""Recomputes both sides of a comparison: `pair(twin, x64) -> (expected, actual)`, where `twin(model)`
returns a float64 copy of a model (by default the one under test) as a `Subject`."""


def _leaf(tree: Any, i: int) -> Any:
    return tree if isinstance(tree, Tensor) else state_leaves(tree)[i][1]


class Ctx:
    """One property's run: the model, the input, the tolerance, the seed, and the largest error seen.

    Args:
        model: the model (in `x`'s dtype).
        x: `(batch, seq_len, input_size)` input.
        policy: the tolerance policy (default `Tolerance()`).
        rtol: overrides the policy's rtol.
        atol: overrides the policy's atol.
        long: force the long-scan pair (or the short one); by default from `seq_len`.
        seed: seed of the perturbations and random loss weights.
        subject: the `Subject` wrapping `model`, to share one between properties.
    """

    def __init__(
        self,
        model: Any,
        x: Tensor,
        *,
        policy: Tolerance | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        long: bool | None = None,
        seed: int = 0,
        subject: Subject | None = None,
    ) -> None:
        self.model = model
        self.subject = subject if subject is not None else Subject(model)
        self.x = x
        self.B, self.T = int(x.shape[0]), int(x.shape[1])
        self.dtype = x.dtype
        self.seed = seed
        self.policy = policy if policy is not None else Tolerance()
        self.rtol, self.atol = resolve(x.dtype, rtol, atol, policy=self.policy, seq_len=self.T, long=long)
        self.max_error: float | None = None

    def zero_atol(self, g: Tensor) -> float:
        """What may stand for an exact zero in `g`: atol times the scale of `g` (at least 1)."""
        finite = g.detach()[g.detach().isfinite()]
        return self.atol * max(1.0, float(finite.abs().max())) if finite.numel() else self.atol

    def close(
        self,
        what: str,
        expected: Any,
        actual: Any,
        *,
        time_dim: int | None = None,
        sides: tuple[str, str] = ("the expected side", "the actual side"),
        pair: Pair | None = None,
    ) -> Mismatch | None:
        """Compare two tensors, or two states leaf by leaf; `None` if they agree, else a `Mismatch`.

        With `pair`, a failure in float32 or lower is re-judged in float64 (see the module's text).
        """
        message, leaves = leaf_pairs(what, expected, actual)
        if message is not None:
            return Mismatch(message)
        for i, (name, e, a) in enumerate(leaves):
            td = time_dim if name == what else None
            if not isinstance(e, Tensor):
                if e != a:
                    return Mismatch(f"{name} differs: expected {e!r}, got {a!r}")
                continue
            if e.shape != a.shape:
                return Mismatch(f"{name}: shape mismatch: expected {tuple(e.shape)}, got {tuple(a.shape)}")
            err = max_abs_error(e, a)
            self.max_error = err if self.max_error is None else max(self.max_error, err)
            d = diff(e, a, self.rtol, self.atol, self.dtype, td)
            if d is not None:
                rounding, note = self._referee(pair, i, e, a, sides, td)
                return Mismatch(f"{name} differs: " + "\n  ".join(d.lines()) + note, d, rounding)
        return None

    def twin(self, model: Any = None) -> Subject:
        """A float64 deep copy of `model` (by default the model under test), as a `Subject`."""
        other = copy.deepcopy(self.model if model is None else model)
        return Subject(other.to(torch.float64) or other)

    def _referee(
        self, pair: Pair | None, i: int, e: Tensor, a: Tensor, sides: tuple[str, str], time_dim: int | None
    ) -> tuple[bool | None, str]:
        if pair is None or self.dtype not in _LOW_PRECISION:
            return None, ""
        if not callable(getattr(self.model, "to", None)):
            return None, "\n  (no float64 referee: the model has no .to() to cast it with)"
        try:
            e64, a64 = pair(self.twin, self.x.to(torch.float64))
            e64, a64 = _leaf(e64, i), _leaf(a64, i)
        except Exception as err:
            return None, f"\n  (no float64 referee: re-running in float64 raised {type(err).__name__}: {err})"
        name = dtype_name(self.dtype)
        between = max_abs_error(e64, a64)
        rtol, atol = self.policy.get(torch.float64, seq_len=self.T)
        lead = "\n  float64 referee (the same model and input, in float64):"
        if diff(e64, a64, rtol, atol, torch.float64, time_dim) is not None:
            return False, (
                f"{lead} the two sides differ there too (max abs error {between:.3e}): a bug, not {name} rounding"
            )
        err_e, err_a = max_abs_error(e64, e), max_abs_error(a64, a)
        big, small = max(err_e, err_a), min(err_e, err_a)
        drifted = sides[0] if err_e >= err_a else sides[1]
        ratio = big / small if small > 0 else float("inf")
        times = f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2g}x"
        if ratio <= 2:
            verdict = f"both sides drifted, by similar amounts ({times})"
        else:
            verdict = f"the side that drifted: {drifted}" + (f" ({times} the other's error)" if small > 0 else "")
        return True, (
            f"{lead} the two sides agree there (max abs error {between:.1e}), so this is {name} rounding, not a bug"
            f"\n    {sides[0]} is {err_e:.3e} from its float64 value"
            f"\n    {sides[1]} is {err_a:.3e} from its float64 value"
            f"\n    {verdict}; if that is expected, loosen the {name} tolerance: "
            f"tolerance=Tolerance({name}=(rtol, atol)) or Tolerance(scale=...)"
        )


# ---------------------------------------------------------------------------------------------
# inputs, and the parts properties share
# ---------------------------------------------------------------------------------------------


def check_x(model: Any, x: Any, where: str) -> tuple[int, int]:
    """Misuse of the checks (not a property failure) raises ValueError / TypeError."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: x must be a tensor of shape (batch, seq_len, input_size), got {type(x).__name__}")
    if x.dim() != 3 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{where}: x must have shape (batch >= 1, seq_len >= 1, input_size), got {tuple(x.shape)}")
    size = getattr(model, "input_size", None)
    if isinstance(size, int) and x.shape[2] != size:
        raise ValueError(f"{where}: x must have shape (batch, seq_len, {size}) for this model, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{where}: x must be a floating-point tensor, got {x.dtype}")
    return x.shape[0], x.shape[1]


def _cuts(T: int, cuts: Sequence[int] | None) -> list[int]:
    if cuts is None:
        cuts = (1, T // 2, T - 1)
    return sorted({int(c) for c in cuts if 1 <= int(c) <= T - 1})


def _named_parameters(model: Any) -> list[tuple[str, Tensor]]:
    fn = getattr(model, "named_parameters", None)
    if fn is None:
        return []
    return [(n, p) for n, p in fn() if p.requires_grad]


def _first_change(a: Tensor, b: Tensor) -> tuple[int, ...] | None:
    changed = ~((a == b) | (a.isnan() & b.isnan()))
    if not bool(changed.any()):
        return None
    return tuple(int(i) for i in changed.nonzero()[0])


def _check_state_leaves(what: str, state: Any, x: Tensor) -> None:
    for name, t in state_tensors(state, what):
        if t.device != x.device:
            raise AssertionError(f"{name} is on {t.device} but the input is on {x.device}")
        if t.is_floating_point() and t.dtype != x.dtype:
            raise AssertionError(f"{name} has dtype {t.dtype} but the input is {x.dtype}")


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


@dataclass
class _Start:
    """Where a `step` loop starts: at step `t0` from `state` (`label` says where it came from)."""

    t0: int
    state: Any
    label: str


def _start(s: Subject, x: Tensor) -> _Start | None:
    """`initial_state(B)` at t = 0; without one, `forward(x[:, :1])`'s state at t = 1; else `None`."""
    if s.has_initial_state:
        return _Start(0, s.initial_state(x.shape[0], x), "initial_state")
    if s.returns_state(x):
        return _Start(1, s.forward(x[:, :1], label="forward(x[:, :1])")[1], "forward(x[:, :1])[1]")
    return None


def _steps(s: Subject, x: Tensor, start: _Start) -> tuple[list[Tensor], Any]:
    """`step` over `x[:, t0:]` from `start`: the outputs and the final state."""
    state, ys = start.state, []
    for t in range(start.t0, x.shape[1]):
        y_t, state = s.step(x[:, t], state, label=f"step(x[:, {t}], state)")
        ys.append(y_t)
    return ys, state


def _grad_loss(y: Tensor, state: Any, gen: torch.Generator) -> Tensor:
    """A random linear functional of the output and of every differentiable state tensor."""
    loss = (y * torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device, y.dtype)).sum()
    for _, t in state_tensors(state) if state is not NO_STATE else []:
        if t.requires_grad and t.is_floating_point() and t.numel():
            weights = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype)
            loss = loss + (t * weights).sum()
    return loss


def _no_state_reason(s: Subject, x: Tensor) -> str | None:
    if not s.returns_state(x) and not s.has_step:
        return "the model has no state: forward(x) returns y alone and there is no step()"
    return None


def _step_reason(s: Subject, x: Tensor) -> str | None:
    if not s.has_step:
        return "the model has no step()"
    if not s.has_initial_state and not s.returns_state(x):
        return "step() has no state to start from: no initial_state() and forward(x) returns y alone"
    return None


def skip_reason(name: str, s: Subject, x: Tensor) -> str | None:
    """Why property `name` does not apply to the model (a form it lacks), or `None` when it does."""
    if name == STATE_SHAPES:
        return _no_state_reason(s, x) or (
            None if s.has_initial_state or s.returns_state(x) else _step_reason(s, x)
        )
    if name == STEP_EQUALS_FORWARD:
        return _step_reason(s, x)
    if name == CHUNKED:
        if not s.forward_takes_state:
            return "forward(x) takes no state: a chunk cannot continue from the previous one"
        if not s.returns_state(x):
            return "forward(x) returns no state: a chunk cannot hand one to the next"
    if name == STATE_SIZE:
        return _no_state_reason(s, x)
    return None


def _run_property(
    name: str, fn: Callable[..., str], model: Any, x: Any, where: str, *, tolerance: Tolerance | None = None,
    rtol: float | None = None, atol: float | None = None, long: bool | None = None, seed: int = 0,
    **options: Any,
) -> str:
    """A public `check_*` function: validate `x`, refuse a property that does not apply, run it."""
    check_x(model, x, where)
    ctx = Ctx(model, x, policy=tolerance, rtol=rtol, atol=atol, long=long, seed=seed)
    with property_context(name, model):
        reason = skip_reason(name, ctx.subject, x)
        if reason is None:
            return fn(ctx, **options)
    raise TypeError(f"{where}: {reason}")


# ---------------------------------------------------------------------------------------------
# the properties
# ---------------------------------------------------------------------------------------------


def check_protocol(model: Any) -> str:
    """The protocol's attributes: `input_size` and `output_size` (positive ints) and `forward`;
    `step` and `initial_state` when present must take the protocol's arguments.

    Args:
        model: the object claiming the [`SequenceModel`][seqmem.SequenceModel] protocol, or part of it.

    Returns:
        A one-line summary: the sizes and the forms the model has.

    Raises:
        ConformanceFailure: (an `AssertionError`) naming `PROTOCOL` and the missing or wrong attribute.
    """
    with property_context(PROTOCOL, model):
        for attr in ("input_size", "output_size"):
            if not hasattr(model, attr):
                raise AssertionError(f"the model has no attribute {attr!r} (a positive int)")
            value = getattr(model, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AssertionError(f"{attr} must be a positive int, got {value!r}")
        if not callable(getattr(model, "forward", None)):
            raise AssertionError("the model has no method forward()")
        s = Subject(model)
        if s.has_initial_state and not accepts(model.initial_state, 1, device=None, dtype=None):
            raise AssertionError("initial_state must accept (batch_size, *, device=None, dtype=None)")
        if s.has_step and not accepts(model.step, None, None):
            raise AssertionError("step must accept (x_t, state)")
        return f"input_size={model.input_size}, output_size={model.output_size}; {s.forms()}"


def _shapes(ctx: Ctx) -> str:
    s, x, B, T = ctx.subject, ctx.x, ctx.B, ctx.T
    out = ctx.model.output_size
    with torch.no_grad():
        s0 = s.initial_state(B, x) if s.has_initial_state else NO_STATE
        if s0 is not NO_STATE:
            _check_state_leaves("initial_state(...)", s0, x)
        y, state = s.forward(x)
        _check_output("y = forward(x)[0]" if state is not NO_STATE else "y = forward(x)", y, (B, T, out), x)
        summary = [f"y {tuple(y.shape)}"]
        if state is not NO_STATE:
            _check_state_leaves("forward(x)[1]", state, x)
            summary.append(f"state {describe(state)}")
        if s0 is not NO_STATE and s.forward_takes_state:
            y0, _ = s.forward(x, s0, label="forward(x, initial_state(batch))")
            m = ctx.close("forward(x, initial_state(batch)) against forward(x)", y, y0, time_dim=1)
            if m is not None:
                raise AssertionError(str(m))
            summary.append("forward(x) == forward(x, initial_state(batch))")
        start = _start(s, x) if s.has_step and T > (0 if s.has_initial_state else 1) else None
        if start is not None:
            t = start.t0
            y_t, s1 = s.step(x[:, t], start.state, label=f"step(x[:, {t}], state)")
            _check_output(f"y_t = step(x[:, {t}], state)[0]", y_t, (B, out), x)
            _check_state_leaves(f"step(x[:, {t}], state)[1]", s1, x)
            summary.append(f"step y_t {tuple(y_t.shape)}")
    return ", ".join(summary)


def check_shapes(
    model: Any,
    x: Tensor,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool | None = None,
    tolerance: Tolerance | None = None,
) -> str:
    """Shapes, dtypes and devices of outputs and states, and `state=None` meaning the initial state.

    Checks that `forward(x)` returns `y` of shape `(batch, seq_len, output_size)` in `x`'s dtype,
    finite; that every tensor of the states `forward`, `initial_state(batch, device=, dtype=)` and
    `step` return is on `x`'s device, the floating ones in its dtype; that `forward(x)` equals
    `forward(x, initial_state(batch))` (when `forward` takes a state); and that `step` returns
    `(batch, output_size)`.

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence.
        rtol: relative tolerance, overriding the policy's.
        atol: absolute tolerance, overriding the policy's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.
        tolerance: the tolerance policy; by default `Tolerance()`.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: naming `SHAPES` and the output or state leaf at fault.
        ValueError: if `x` does not fit the model (wrong rank or feature size).
    """
    return _run_property(
        SHAPES, _shapes, model, x, "check_shapes", rtol=rtol, atol=atol, long=long, tolerance=tolerance
    )


def _same_spec(a_label: str, a: Any, b_label: str, b: Any, *, shapes: bool = True) -> None:
    """Raise if two states differ in structure, or in a leaf's shape (if `shapes`), dtype or device."""
    where = first_structure_difference(a, b)
    if where is not None:
        path, a_desc, b_desc = where
        raise AssertionError(f"{path} is {a_desc} after {a_label} but {b_desc} after {b_label}")
    for path, ta, tb in iter_pairs(a, b):
        if not (isinstance(ta, Tensor) and isinstance(tb, Tensor)):
            continue
        for what, va, vb in (("shape", tuple(ta.shape), tuple(tb.shape)), ("dtype", ta.dtype, tb.dtype),
                             ("device", ta.device, tb.device)):
            if what == "shape" and not shapes:
                continue
            if va != vb:
                raise AssertionError(f"{path} has {what} {va} after {a_label} but {vb} after {b_label}")


def _state_shapes(ctx: Ctx) -> str:
    s, x, T = ctx.subject, ctx.x, ctx.T
    one: list[tuple[str, Any]] = []  # states after step 0
    full: list[tuple[str, Any]] = []  # states after all T steps
    with torch.no_grad():
        s0 = s.initial_state(ctx.B, x) if s.has_initial_state else NO_STATE
        if s.returns_state(x):
            one.append(("forward(x[:, :1])", s.forward(x[:, :1], label="forward(x[:, :1])")[1]))
            full.append(("forward(x)", s.forward(x)[1]))
            if s.forward_takes_state and T >= 2:
                k = T // 2
                s_k = s.forward(x[:, :k], label=f"forward(x[:, :{k}])")[1]
                label = f"forward(x[:, {k}:], forward(x[:, :{k}])[1])"
                full.append((label, s.forward(x[:, k:], s_k, label=label)[1]))
        if s.has_step and s0 is not NO_STATE:
            state = s0
            for t in range(T):
                _, state = s.step(x[:, t], state, label=f"step(x[:, {t}], state)")
                if t == 0:
                    one.append(("step(x[:, 0], initial_state)", state))
            full.append((f"{T} steps from initial_state", state))
        for group in (one, full):
            for label, state in group[1:]:
                _same_spec(group[0][0], group[0][1], label, state)
        if s0 is not NO_STATE and s0 is not None and one:
            _same_spec("initial_state(batch)", s0, one[0][0], one[0][1], shapes=False)
        checked = [label for label, _ in one + full]
        if s.has_step and s.returns_state(x) and T >= 2:  # step continues a state that forward left
            k = T // 2
            s_k = s.forward(x[:, :k], label=f"forward(x[:, :{k}])")[1]
            label = f"step(x[:, {k}], forward(x[:, :{k}])[1])"
            _, after = s.step(x[:, k], s_k, label=label)
            ref_label = f"forward(x[:, :{k + 1}])"
            _same_spec(ref_label, s.forward(x[:, : k + 1], label=ref_label)[1], label, after)
            checked.append(label)
    ref = (full or one)[0][1] if (full or one) else s0
    if ref is None:
        return "stateless: every state is None"
    leaves = state_tensors(ref)
    shapes = ", ".join(f"{p} {tuple(t.shape)}" for p, t in leaves[:3]) + (", ..." if len(leaves) > 3 else "")
    n = len(checked) + (s0 is not NO_STATE)
    forms = [name for name, has in (("initial_state", s0 is not NO_STATE), ("forward", s.forward_returns_state),
                                    ("step", s.has_step)) if has]
    return f"{describe(ref)} [{shapes}]: {n} states from {', '.join(forms)} agree"


def check_state_shapes(model: Any, x: Tensor) -> str:
    """The states agree in structure, shapes and dtypes whichever way they were computed.

    The state after one step is computed by `step(x[:, 0], initial_state)` and by
    `forward(x[:, :1])`, the state after all `seq_len` steps by the `step` loop, by `forward(x)` and
    by two chunks; states after the same number of steps must have the same structure and, leaf by
    leaf, the same shape, dtype and device. The initial state must have the structure and dtypes of
    the state after one step (its shapes may differ: a KV cache grows). Then `step` must continue
    from the state `forward` leaves (`step(x[:, k], forward(x[:, :k])[1])`), into a state shaped
    like `forward(x[:, :k + 1])`'s.

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence.

    Returns:
        A one-line summary: the state's structure and the calls compared.

    Raises:
        ConformanceFailure: naming `STATE_SHAPES`, the leaf (`state['conv']`) and the two calls whose
            states differ, or the call that raised.
        TypeError: if the model has no state (`forward` returns `y` alone and there is no `step`).
        ValueError: if `x` does not fit the model.
    """
    return _run_property(STATE_SHAPES, _state_shapes, model, x, "check_state_shapes")


def _inputs_unchanged(ctx: Ctx) -> str:
    s, x = ctx.subject, ctx.x
    with torch.no_grad():
        x_in = x.clone()
        _, warm = s.forward(x_in)
        if (idx := _first_change(x, x_in)) is not None:
            raise AssertionError(f"forward(x) modified x in place (first change at index {idx})")
        if warm is NO_STATE:
            start = _start(s, x) if s.has_step else None
            warm = _steps(s, x_in, start)[1] if start is not None else NO_STATE
        calls: list[tuple[str, Callable[[], Any]]] = []
        if warm is not NO_STATE and s.forward_takes_state:
            calls.append(("forward(x, state)", lambda: s.forward(x_in, warm, label="forward(x, state)")))
        if warm is not NO_STATE and s.has_step:
            calls.append(("step(x[:, 0], state)", lambda: s.step(x_in[:, 0], warm, label="step(x[:, 0], state)")))
        saved = map_state_leaves(warm, lambda t: t.clone()) if warm is not NO_STATE else NO_STATE
        for call, fn in calls:
            fn()
            if (idx := _first_change(x, x_in)) is not None:
                raise AssertionError(f"{call} modified x in place (first change at index {idx})")
            where = first_structure_difference(saved, warm)
            if where is not None:
                raise AssertionError(
                    f"{call} modified the state it was given in place: {where[0]} was {where[1]}, is now "
                    f"{where[2]}; return a new state instead"
                )
            for name, before, now in iter_pairs(saved, warm):
                if isinstance(before, Tensor):
                    changed = before.shape != now.shape or (idx := _first_change(before, now)) is not None
                    at = "its shape" if before.shape != now.shape else f"index {idx}"
                else:
                    changed, at = before != now, f"value {before!r} -> {now!r}"
                if changed:
                    raise AssertionError(
                        f"{call} modified {name} of the state it was given in place (first change at {at}); "
                        f"return a new state instead"
                    )
    if not calls:
        return "x is left untouched by forward (the model takes no state)"
    return "x and the given state are left untouched by " + " and ".join(c.split("(")[0] for c, _ in calls)


def check_inputs_unchanged(model: Any, x: Tensor) -> str:
    """Neither `forward` nor `step` modifies its input `x` or the state it was given in place.

    States are values, as seqmem's `NamedTuple`s are: a state can be reused (to branch a stream, to
    retry a chunk), so the models must not write into it (nor into a list or dict that holds it).

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: naming `INPUTS_UNCHANGED`, the call and the tensor it modified.
        ValueError: if `x` does not fit the model.
    """
    return _run_property(INPUTS_UNCHANGED, _inputs_unchanged, model, x, "check_inputs_unchanged")


def _causal(ctx: Ctx, cuts: Sequence[int] | None = None) -> str:
    s, x, T = ctx.subject, ctx.x, ctx.T
    points = _cuts(T, cuts)
    if not points:
        return "seq_len 1: nothing to check"
    gen = generator(ctx.seed)
    with torch.no_grad():
        y, _ = s.forward(x)
        for t in points:
            x2 = x.clone()
            x2[:, t:] += noise_like(x[:, t:], gen)
            y2, _ = s.forward(x2, label=f"forward(x with x[:, {t}:] changed)")
            m = ctx.close(f"y[:, :{t}]", y[:, :t], y2[:, :t], time_dim=1)
            if m is not None:
                raise AssertionError(
                    f"changing only x[:, {t}:] changed y[:, :{t}]: the output at step {m.first_t} depends on a "
                    f"later input (cut at t={t})\n  {m}"
                )
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        yg, _ = s.forward(xg, label="forward(x) with x requiring grad")
    if not yg.requires_grad:
        return f"values at cuts {points}; gradients not checked (the output is not differentiable)"
    r = torch.randn(yg.shape, generator=gen, dtype=torch.float64).to(yg.device, yg.dtype)
    for t in points:
        (g,) = s.call(
            f"backward of y[:, :{t}]", torch.autograd.grad, (yg[:, :t] * r[:, :t]).sum(), xg,
            retain_graph=True, allow_unused=True,
        )
        if g is None:
            continue
        bad = ~(g[:, t:].abs() <= ctx.zero_atol(g))
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0])
            step = t + idx[1]
            raise AssertionError(
                f"d y[:, :{t}] / d x[:, {t}:] is not zero: the gradient of the outputs before step {t} "
                f"reaches the input at step {step} (index {(idx[0], step, idx[2])}, "
                f"value {float(g[:, t:][idx]):.3e}, allowed {ctx.zero_atol(g):.1e})"
            )
    return f"values and gradients at cuts t in {points}"


def check_causal(
    model: Any,
    x: Tensor,
    *,
    cuts: Sequence[int] | None = None,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool | None = None,
    tolerance: Tolerance | None = None,
) -> str:
    """Causality: the output at step `s` depends on the inputs at steps `<= s` only.

    For each cut `t`, replacing `x[:, t:]` leaves `y[:, :t]` unchanged, and the gradient
    `d y[:, :t] / d x[:, t:]` is zero (checked when the output is differentiable).

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence, `seq_len >= 2` for anything to check.
        cuts: the cut points `t` (`1 <= t < seq_len`); by default `1`, `seq_len // 2`, `seq_len - 1`.
        seed: seed of the perturbation and of the random output weights of the gradient.
        rtol: relative tolerance, overriding the policy's.
        atol: absolute tolerance, overriding the policy's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.
        tolerance: the tolerance policy; by default `Tolerance()`.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: naming `CAUSALITY`, the cut `t` and the first output step that saw the future.
        ValueError: if `x` does not fit the model.
    """
    return _run_property(
        CAUSALITY, _causal, model, x, "check_causal", cuts=cuts, seed=seed, rtol=rtol, atol=atol, long=long,
        tolerance=tolerance,
    )


def _batch_independent(ctx: Ctx) -> str:
    s, x, B = ctx.subject, ctx.x, ctx.B
    gen = generator(ctx.seed + 1)
    with torch.no_grad():
        y, _ = s.forward(x)
        if B >= 2:
            b = B - 1
            x2 = x.clone()
            x2[b] += noise_like(x[b], gen)
            y2, _ = s.forward(x2, label=f"forward(x with row {b} changed)")
            others = [i for i in range(B) if i != b]
            m = ctx.close(f"y[rows != {b}]", y[others], y2[others], time_dim=1)
            if m is not None:
                row = others[m.diff.index[0]] if m.diff is not None and m.diff.index else "?"
                raise AssertionError(
                    f"changing only row {b} of x changed row {row} of y, first at step {m.first_t}: "
                    f"the rows of a batch must not interact\n  {m}"
                )
        for b in range(B):
            y_b, _ = s.forward(x[b : b + 1], label=f"forward(x[{b}:{b + 1}])")

            def alone(twin: Callable[..., Subject], x64: Tensor, b: int = b) -> tuple[Tensor, Tensor]:
                sub = twin()
                with torch.no_grad():
                    return sub.forward(x64)[0][b : b + 1], sub.forward(x64[b : b + 1])[0]

            m = ctx.close(
                f"y[{b}]", y[b : b + 1], y_b, time_dim=1,
                sides=(f"row {b} of the batch", f"row {b} alone"), pair=alone,
            )
            if m is not None:
                raise AssertionError(f"row {b} run alone (batch 1) differs from row {b} of the batch of {B}\n  {m}")
    if B < 2:
        return "batch 1: each row alone only"
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        yg, _ = s.forward(xg, label="forward(x) with x requiring grad")
    if not yg.requires_grad:
        return f"values over a batch of {B}; gradients not checked (the output is not differentiable)"
    r = torch.randn(yg.shape[1:], generator=gen, dtype=torch.float64).to(yg.device, yg.dtype)
    (g,) = s.call("backward of y[0]", torch.autograd.grad, (yg[0] * r).sum(), xg, allow_unused=True)
    if g is not None:
        bad = ~(g[1:].abs() <= ctx.zero_atol(g))
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0])
            raise AssertionError(
                f"d y[0] / d x[{idx[0] + 1}] is not zero: the gradient of row 0 reaches row {idx[0] + 1} "
                f"of the input at step {idx[1]} (value {float(g[1:][idx]):.3e}, allowed {ctx.zero_atol(g):.1e})"
            )
    return f"values and gradients over a batch of {B}, and each row alone"


def check_batch_independent(
    model: Any,
    x: Tensor,
    *,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool | None = None,
    tolerance: Tolerance | None = None,
) -> str:
    """Batch independence: row `b` of the output depends on row `b` of the input only.

    Perturbing one row of `x` leaves the other rows of `y` unchanged (values, and a zero gradient
    across rows), and each row run alone (a batch of 1) gives the row of the batched run.

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence; `batch >= 2` for the cross-row checks.
        seed: seed of the perturbation and of the random output weights of the gradient.
        rtol: relative tolerance, overriding the policy's.
        atol: absolute tolerance, overriding the policy's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.
        tolerance: the tolerance policy; by default `Tolerance()`.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: naming `BATCH_INDEPENDENCE`, the rows involved and the first step at fault.
        ValueError: if `x` does not fit the model.
    """
    return _run_property(
        BATCH_INDEPENDENCE, _batch_independent, model, x, "check_batch_independent", seed=seed, rtol=rtol,
        atol=atol, long=long, tolerance=tolerance,
    )


def _step_run(s: Subject, x: Tensor) -> tuple[Tensor, Any, Tensor, Any, _Start]:
    """`forward(x)` and the `step` loop: `(y, final state, y of the steps, their final state, start)`."""
    y, state = s.forward(x)
    start = _start(s, x)
    assert start is not None  # the property is skipped otherwise
    ys, st = _steps(s, x, start)
    y_steps = torch.stack([*(y[:, t] for t in range(start.t0)), *ys], dim=1)  # (B, T, output_size)
    return y, state, y_steps, st, start


def _step_equals_forward(ctx: Ctx) -> str:
    s, x, T = ctx.subject, ctx.x, ctx.T
    sides = ("forward(x) (one parallel call)", "the step() loop")

    def outputs(twin: Callable[..., Subject], x64: Tensor) -> tuple[Any, Any]:
        with torch.no_grad():
            run = _step_run(twin(), x64)
        return run[0], run[2]

    def states(twin: Callable[..., Subject], x64: Tensor) -> tuple[Any, Any]:
        with torch.no_grad():
            run = _step_run(twin(), x64)
        return run[1], run[3]

    with torch.no_grad():
        y, state, y_steps, st, start = _step_run(s, x)
    m = ctx.close("y from step()", y, y_steps, time_dim=1, sides=sides, pair=outputs)
    if m is not None:
        t = m.first_t
        raise AssertionError(f"at step t={t} (of {T}) the output of step() differs from forward(x)[:, {t}]\n  {m}")
    if state is not NO_STATE:
        m = ctx.close(f"final state after {T} steps", state, st, sides=sides, pair=states)
        if m is not None:
            raise AssertionError(f"the outputs agree but the final states differ\n  {m}")
    origin = "" if start.t0 == 0 else f" from {start.label} (no initial_state())"
    what = "outputs and final state" if state is not NO_STATE else "outputs (forward(x) returns no state)"
    return f"{T - start.t0} steps{origin}, {what}"


def check_step_equals_forward(
    model: Any,
    x: Tensor,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool | None = None,
    tolerance: Tolerance | None = None,
) -> str:
    """The recurrent form equals the parallel form: `step` over `t = 0 .. T-1` equals `forward`.

    Compares every output step and the final state (each of its leaves). The loop starts from
    `initial_state(batch)`; a model without `initial_state` starts from `forward(x[:, :1])`'s state
    at `t = 1`.

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence.
        rtol: relative tolerance, overriding the policy's.
        atol: absolute tolerance, overriding the policy's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.
        tolerance: the tolerance policy; by default `Tolerance()`.

    Returns:
        A one-line summary with the largest difference seen.

    Raises:
        ConformanceFailure: naming `STEP_EQUALS_FORWARD` and the first step that diverges (or the
            state leaf that differs at the end); in float32, with the float64 referee's verdict.
        TypeError: if the model has no `step`, or no state to start it from.
        ValueError: if `x` does not fit the model.
    """
    return _run_property(
        STEP_EQUALS_FORWARD, _step_equals_forward, model, x, "check_step_equals_forward", rtol=rtol, atol=atol,
        long=long, tolerance=tolerance,
    )


def _chunk_run(s: Subject, x: Tensor, ks: Sequence[int]) -> tuple[Tensor, Any]:
    """`forward` over the chunks of `x` cut at `ks`, the state passed along: `(y, final state)`."""
    bounds = [0, *ks, x.shape[1]]
    state, parts = NO_STATE, []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        label = f"forward(x[:, {lo}:{hi}], state)" if lo else f"forward(x[:, :{hi}])"
        y_c, state = s.forward(x[:, lo:hi], state, label=label)
        parts.append(y_c)
    return torch.cat(parts, dim=1), state


def _chunk_grads(s: Subject, x: Tensor, k: int, seed: int) -> tuple[Tensor, Tensor] | None:
    """Gradients w.r.t. `x[:, :k]` of a loss on `y[:, k:]`: one call, then two chunks (`None` if the
    output is not differentiable)."""
    gen = generator(seed + 2)
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y_full, _ = s.forward(xg, label="forward(x) with x requiring grad")
        if not y_full.requires_grad:
            return None
        r = torch.randn(y_full[:, k:].shape, generator=gen, dtype=torch.float64).to(x.device, x.dtype)
        (g_full,) = s.call("backward through forward(x)", torch.autograd.grad, (y_full[:, k:] * r).sum(), xg,
                           allow_unused=True)
        xc = x.detach().clone().requires_grad_(True)
        _, s_k = s.forward(xc[:, :k], label=f"forward(x[:, :{k}]) with x requiring grad")
        y_2, _ = s.forward(xc[:, k:], s_k, label=f"forward(x[:, {k}:], state) with x requiring grad")
        (g_chunk,) = s.call("backward through the two chunks", torch.autograd.grad, (y_2 * r).sum(), xc,
                            allow_unused=True)
    g_full = torch.zeros_like(x) if g_full is None else g_full
    g_chunk = torch.zeros_like(x) if g_chunk is None else g_chunk
    return g_full[:, :k], g_chunk[:, :k]


def _chunked(ctx: Ctx, splits: Sequence[int] | None = None) -> str:
    s, x, T, B = ctx.subject, ctx.x, ctx.T, ctx.B
    points = _cuts(T, splits)
    if not points:
        return "seq_len 1: nothing to split"
    sides = ("forward(x) (one call)", "the chunked run")
    with torch.no_grad():
        y, state = s.forward(x)
        plans: list[tuple[str, list[int]]] = [(f"split at t={k}", [k]) for k in points]
        if len(points) >= 2:
            plans.append((f"{len(points) + 1} chunks split at t in {points}", points))
        for label, ks in plans:

            def chunks(twin: Callable[..., Subject], x64: Tensor, ks: list[int] = ks) -> tuple[Any, Any]:
                sub = twin()
                with torch.no_grad():
                    return sub.forward(x64)[0], _chunk_run(sub, x64, ks)[0]

            def chunk_states(twin: Callable[..., Subject], x64: Tensor, ks: list[int] = ks) -> tuple[Any, Any]:
                sub = twin()
                with torch.no_grad():
                    return sub.forward(x64)[1], _chunk_run(sub, x64, ks)[1]

            y_chunks, s_chunks = _chunk_run(s, x, ks)
            m = ctx.close("y of the chunks", y, y_chunks, time_dim=1, sides=sides, pair=chunks)
            if m is not None:
                raise AssertionError(
                    f"{label}: forward over the chunks, passing the state along, differs from forward(x) "
                    f"from step t={m.first_t}\n  {m}"
                )
            m = ctx.close("final state", state, s_chunks, sides=sides, pair=chunk_states)
            if m is not None:
                raise AssertionError(f"{label}: the outputs agree but the final states differ\n  {m}")
        then = ""
        if s.has_step and s.has_initial_state:
            y0, s1 = s.step(x[:, 0], s.initial_state(B, x), label="step(x[:, 0], initial_state)")
            y_rest, s_end = s.forward(x[:, 1:], s1, label="forward(x[:, 1:], state)")
            m = ctx.close("y", y[:, 1:], y_rest, time_dim=1)
            if m is not None:
                raise AssertionError(
                    f"step(x[:, 0]) then forward(x[:, 1:], state) differs from forward(x) from step "
                    f"t={1 + m.first_t}: the state of step() does not continue forward()\n  {m}"
                )
            m = ctx.close("final state", state, s_end)
            if m is not None:
                raise AssertionError(f"step(x[:, 0]) then forward(x[:, 1:], state): final states differ\n  {m}")
            then = ", step then forward"
    k = points[len(points) // 2]
    grads = _chunk_grads(s, x, k, ctx.seed)
    if grads is None:
        return f"splits at t in {points}{then}; gradients not checked (the output is not differentiable)"

    def chunk_grads(twin: Callable[..., Subject], x64: Tensor) -> tuple[Any, Any]:
        out = _chunk_grads(twin(), x64, k, ctx.seed)
        assert out is not None
        return out

    m = ctx.close(
        f"d loss(y[:, {k}:]) / d x[:, :{k}]", grads[0], grads[1], time_dim=1,
        sides=("the gradient through forward(x) (one call)", "the gradient through the two chunks"),
        pair=chunk_grads,
    )
    if m is not None:
        hint = "" if m.rounding else " (does forward detach the state it is given?)"
        raise AssertionError(
            f"split at t={k}: the gradient of a loss on the second chunk with respect to the first chunk "
            f"differs from the single call's{hint}\n  {m}"
        )
    return f"splits at t in {points}, chained chunks{then}, gradients across t={k}"


def check_chunked(
    model: Any,
    x: Tensor,
    *,
    splits: Sequence[int] | None = None,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool | None = None,
    tolerance: Tolerance | None = None,
) -> str:
    """Chunked streaming is exact: `forward(x2, forward(x1)[1])` equals `forward(cat([x1, x2], 1))`.

    For each split point `k`: the outputs of both chunks and the final state equal the
    single call's, and so do the gradients with respect to the first chunk of a loss on the second
    (the state carries gradients across chunks). Also: all split points chained (three or more
    chunks) and, for a model with `step` and `initial_state`, `step(x[:, 0])` then
    `forward(x[:, 1:], state)`.

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence, `seq_len >= 2` for anything to check.
        splits: the split points (`1 <= k < seq_len`); by default `1`, `seq_len // 2`, `seq_len - 1`.
        seed: seed of the random output weights of the gradient check.
        rtol: relative tolerance, overriding the policy's.
        atol: absolute tolerance, overriding the policy's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.
        tolerance: the tolerance policy; by default `Tolerance()`.

    Returns:
        A one-line summary of what was checked.

    Raises:
        ConformanceFailure: naming `CHUNKED`, the split and the first step that diverges (or the
            state leaf, or the gradient, that differs); in float32, with the float64 referee's
            verdict on which side drifted.
        TypeError: if `forward` takes no state or returns none.
        ValueError: if `x` does not fit the model.
    """
    return _run_property(
        CHUNKED, _chunked, model, x, "check_chunked", splits=splits, seed=seed, rtol=rtol, atol=atol, long=long,
        tolerance=tolerance,
    )


def _gradients(ctx: Ctx, allow_unused: Collection[str] = ()) -> str:
    s, x = ctx.subject, ctx.x
    gen = generator(ctx.seed + 3)
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        y, state = s.forward(xg, label="forward(x) with x requiring grad")
        if not y.requires_grad:
            raise AssertionError("the output of forward does not require grad: nothing is differentiable")
        params = _named_parameters(ctx.model)
        loss = _grad_loss(y, state, gen)
        grads = s.call(
            "backward through forward(x)", torch.autograd.grad, loss, [xg, *(p for _, p in params)],
            allow_unused=True,
        )
    g_x, g_params = grads[0], grads[1:]
    if g_x is None:
        raise AssertionError("the input x gets no gradient: the output does not depend on it through autograd")
    _check_finite("the gradient of x", g_x)
    missing = [n for (n, _), g in zip(params, g_params, strict=True) if g is None and n not in allow_unused]
    if missing:
        raise AssertionError(
            f"parameters that get no gradient: {missing} (detached, unused, or computed under no_grad?)"
        )
    for (n, _), g in zip(params, g_params, strict=True):
        if g is not None:
            _check_finite(f"the gradient of parameter {n!r}", g)
    return f"x and {len(params)} parameter tensors get finite gradients"


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
    return _run_property(GRADIENTS, _gradients, model, x, "check_gradients", seed=seed, allow_unused=allow_unused)


def _check_finite(what: str, g: Tensor) -> None:
    bad = ~g.isfinite()
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(f"{what} is not finite at index {idx}: {float(g[idx])}")


def _with_backend(model: Any, backend: str) -> Any:
    other = copy.deepcopy(model)
    other.backend = backend
    return other


def _parity_run(s: Subject, x: Tensor, seed: int) -> dict[str, Any]:
    """Outputs, states, one step and every gradient of one backend, from a non-zero state."""
    with torch.no_grad():
        _, warm = s.forward(x)
    takes = warm is not NO_STATE and s.forward_takes_state
    s_in = map_state_leaves(warm, lambda t: t.detach().clone().requires_grad_(t.is_floating_point())) if takes else None
    s_leaves = [(n, t) for n, t in state_tensors(s_in) if t.requires_grad] if takes else []
    xg = x.detach().clone().requires_grad_(True)
    params = _named_parameters(s.model)
    with torch.enable_grad():
        y, state = s.forward(xg, s_in, label="forward(x, state)") if takes else s.forward(xg)
        leaves = [xg, *(t for _, t in s_leaves), *(p for _, p in params)]
        names = ["x", *(n for n, _ in s_leaves), *(f"parameter {n!r}" for n, _ in params)]
        loss = _grad_loss(y, state, generator(seed + 4))
        grads = s.call("backward through forward(x, state)", torch.autograd.grad, loss, leaves, allow_unused=True)
    out: dict[str, Any] = {"y": y.detach(), "state": state, "grads": dict(zip(names, grads, strict=True))}
    start = warm if warm is not NO_STATE else (s.initial_state(x.shape[0], x) if s.has_initial_state else NO_STATE)
    if s.has_step and start is not NO_STATE:
        with torch.no_grad():
            out["y_t"], out["state_t"] = s.step(x[:, 0], start, label="step(x[:, 0], state)")
    return out


def _backend_parity(ctx: Ctx, backends: Sequence[str] | None = None, reference: str = "torch") -> str:
    model, x = ctx.model, ctx.x
    available = tuple(getattr(model, "backends", ()))
    chosen = tuple(available if backends is None else backends)
    others = [b for b in chosen if b != reference]
    if not others:
        return f"only {reference!r}: nothing to compare"
    ref_model = _with_backend(model, reference)
    with property_context(BACKEND_PARITY, ref_model):
        ref = _parity_run(Subject(ref_model), x, ctx.seed)
    for name in others:
        m = _with_backend(model, name)
        sides = (f"backend {reference!r}", f"backend {name!r}")

        def pair(twin: Callable[..., Subject], x64: Tensor, key: str, m: Any = m) -> tuple[Any, Any]:
            a, b = _parity_run(twin(ref_model), x64, ctx.seed), _parity_run(twin(m), x64, ctx.seed)
            return a[key], b[key]

        with property_context(BACKEND_PARITY, m, f"backend {name!r} against {reference!r}"):
            got = _parity_run(Subject(m), x, ctx.seed)
            checks: list[Mismatch | str | None] = [
                ctx.close("forward(x, state) output", ref["y"], got["y"], time_dim=1, sides=sides,
                          pair=lambda t, x64: pair(t, x64, "y")),
                ctx.close("forward(x, state) final state", ref["state"], got["state"], sides=sides,
                          pair=lambda t, x64: pair(t, x64, "state")),
            ]
            if "y_t" in ref:
                checks.append(ctx.close("step(x[:, 0], state) output", ref["y_t"], got["y_t"]))
                checks.append(ctx.close("step(x[:, 0], state) state", ref["state_t"], got["state_t"]))
            for gname, g_ref in ref["grads"].items():
                g_got = got["grads"].get(gname)
                if (g_ref is None) != (g_got is None):
                    checks.append(
                        f"gradient of {gname}: {reference!r} gives {'none' if g_ref is None else 'one'}, "
                        f"{name!r} gives {'none' if g_got is None else 'one'}"
                    )
                elif g_ref is not None:
                    checks.append(ctx.close(f"gradient of {gname}", g_ref, g_got, time_dim=1 if gname == "x" else None))
            for msg in checks:
                if msg is not None:
                    raise AssertionError(str(msg))
    return f"{others} against {reference!r}: outputs, states, one step and {len(ref['grads'])} gradients"


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
    tolerance: Tolerance | None = None,
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
        rtol: relative tolerance, overriding the policy's.
        atol: absolute tolerance, overriding the policy's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.
        tolerance: the tolerance policy; by default `Tolerance()`.

    Returns:
        A one-line summary of what was compared.

    Raises:
        ConformanceFailure: naming `BACKEND_PARITY`, the backend, and the output, state leaf or
            gradient that differs.
        ValueError: if `x` does not fit the model, or a backend is not in `model.backends`.
    """
    check_x(model, x, "check_backend_parity")
    available = tuple(getattr(model, "backends", ()))
    for name in (reference, *(available if backends is None else backends)):
        if name not in available:
            raise ValueError(
                f"check_backend_parity: {type(model).__name__} has no backend {name!r}; it lists {list(available)}"
            )
    ctx = Ctx(model, x, policy=tolerance, rtol=rtol, atol=atol, long=long, seed=seed)
    return _backend_parity(ctx, backends=backends, reference=reference)


def _state_size(ctx: Ctx, growth: str = "constant") -> str:
    s, x, T = ctx.subject, ctx.x, ctx.T
    with torch.no_grad():
        _, final = s.forward(x)
        if s.has_step and (start := _start(s, x)) is not None:
            sizes = {start.t0: state_nbytes(start.state)}
            state = start.state
            for t in range(start.t0, T):
                _, state = s.step(x[:, t], state, label=f"step(x[:, {t}], state)")
                sizes[t + 1] = state_nbytes(state)
            via = "steps"
        else:
            sizes = {t: state_nbytes(s.forward(x[:, :t], label=f"forward(x[:, :{t}])")[1]) for t in range(1, T + 1)}
            via = "forward on prefixes"
    if final is not NO_STATE and state_nbytes(final) != sizes[T]:
        raise AssertionError(f"forward's final state holds {state_nbytes(final)} bytes but {T} {via} hold {sizes[T]}")
    t0 = min(sizes)
    initially = "initially" if t0 == 0 else f"after {t0} steps"
    if growth == "constant":
        for t, n in sizes.items():
            if n != sizes[t0]:
                raise AssertionError(
                    f"the state grows: {sizes[t0]} bytes {initially}, {n} bytes after {t} steps (expected constant)"
                )
        return f"constant: {sizes[t0]} bytes at every step"
    if len(sizes) < 2:
        return f"seq_len {T}: one size only, {sizes[t0]} bytes"
    per_step = sizes[t0 + 1] - sizes[t0]
    if per_step <= 0:
        raise AssertionError(f"the state does not grow: {sizes[t0]} bytes {initially}, {sizes[t0 + 1]} one step later")
    for t, n in sizes.items():
        if n != sizes[t0] + (t - t0) * per_step:
            raise AssertionError(
                f"after {t} steps the state holds {n} bytes, expected {sizes[t0]} + {t - t0} * {per_step} "
                f"= {sizes[t0] + (t - t0) * per_step} (linear growth)"
            )
    return f"linear: {sizes[t0]} + {per_step} bytes per step"


def check_state_size(model: Any, x: Tensor, *, growth: str = "constant") -> str:
    """The memory a stream carries: the bytes of the state after each step, constant or linear in `t`.

    The sizes come from the `step` loop (from `initial_state`), or, for a model without `step`, from
    `forward` on each prefix `x[:, :t]`; the final state of `forward` must hold as many bytes as the
    last of them.

    Args:
        model: the model, in `x`'s dtype and on its device.
        x: `(batch, seq_len, input_size)` input sequence.
        growth: `"constant"` (recurrences: the state after every step has the initial state's size)
            or `"linear"` (a KV cache: `nbytes(t) = nbytes(0) + t * nbytes_per_step`, with
            `nbytes_per_step > 0`).

    Returns:
        A one-line summary with the sizes.

    Raises:
        ConformanceFailure: naming `STATE_SIZE` and the step where the size is off.
        TypeError: if the model has no state.
        ValueError: if `growth` is neither `"constant"` nor `"linear"`, or `x` does not fit the model.
    """
    if growth not in ("constant", "linear"):
        raise ValueError(f"check_state_size: growth must be 'constant' or 'linear', got {growth!r}")
    return _run_property(STATE_SIZE, _state_size, model, x, "check_state_size", growth=growth)


IMPLEMENTATIONS: dict[str, Callable[..., str]] = {
    SHAPES: _shapes,
    STATE_SHAPES: _state_shapes,
    INPUTS_UNCHANGED: _inputs_unchanged,
    GRADIENTS: _gradients,
    CAUSALITY: _causal,
    BATCH_INDEPENDENCE: _batch_independent,
    STEP_EQUALS_FORWARD: _step_equals_forward,
    CHUNKED: _chunked,
    BACKEND_PARITY: _backend_parity,
    STATE_SIZE: _state_size,
}
"""The body of each property but `PROTOCOL`: `fn(ctx, **options) -> summary`."""
