"""`check_sequence_model`: every property, in every dtype asked for, into one report."""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .calls import Subject
from .fixtures import random_sequence
from .properties import (
    BACKEND_PARITY,
    GRADIENTS,
    IMPLEMENTATIONS,
    PROPERTIES,
    PROTOCOL,
    STATE_SIZE,
    ConformanceFailure,
    Ctx,
    check_protocol,
    check_x,
    describe_model,
    property_context,
    skip_reason,
)
from .report import FAILED, PASSED, SKIPPED, ConformanceReport, PropertyResult
from .tolerances import DEFAULT_TOLERANCE, Tolerance, dtype_name

__all__ = ["check_sequence_model"]

_GROWTHS = (None, "constant", "linear")


def resolve_dtypes(dtype: torch.dtype | Sequence[torch.dtype] | None, x: Tensor | None) -> tuple[torch.dtype, ...]:
    """The dtypes to check in: `dtype` (one or several); by default `x`'s, else float64 then float32."""
    if dtype is None:
        return (x.dtype,) if isinstance(x, Tensor) else (torch.float64, torch.float32)
    dtypes = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
    bad = [d for d in dtypes if not (isinstance(d, torch.dtype) and d.is_floating_point)]
    if not dtypes or bad:
        raise TypeError(
            f"check_sequence_model: dtype must be a floating torch.dtype, a sequence of them, or None; got {dtype!r}"
        )
    return dtypes


def _policies(tolerance: Tolerance | Mapping[str, Tolerance] | None) -> dict[str, Tolerance]:
    if tolerance is None or isinstance(tolerance, Tolerance):
        return dict.fromkeys(PROPERTIES, tolerance or DEFAULT_TOLERANCE)
    if not isinstance(tolerance, Mapping):
        raise TypeError(
            "check_sequence_model: tolerance must be a Tolerance or a mapping from property names to "
            f"Tolerance, got {type(tolerance).__name__}"
        )
    unknown = [k for k in tolerance if k not in PROPERTIES]
    wrong = [k for k, v in tolerance.items() if not isinstance(v, Tolerance)]
    if unknown or wrong:
        raise ValueError(
            f"check_sequence_model: tolerance maps property names to Tolerance; unknown properties {unknown}, "
            f"values that are not a Tolerance for {wrong}; the properties are {list(PROPERTIES)}"
        )
    return {name: tolerance.get(name, DEFAULT_TOLERANCE) for name in PROPERTIES}


def _device_of(model: Any) -> torch.device | None:
    params = getattr(model, "parameters", None)
    if params is None:
        return None
    first = next(iter(params()), None)
    return None if first is None else first.device


def _cast(model: Any, dtype: torch.dtype) -> Any:
    m = copy.deepcopy(model)
    if callable(getattr(m, "to", None)):
        m = m.to(dtype) or m
    return m


def check_sequence_model(
    model: Any,
    *,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    seed: int = 0,
    batch_size: int = 3,
    seq_len: int = 12,
    scale: float = 1.0,
    x: Tensor | None = None,
    backends: Sequence[str] | None = None,
    skip: Collection[str] = (),
    tolerance: Tolerance | Mapping[str, Tolerance] | None = None,
    state_growth: str | None = None,
    raise_on_failure: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    long: bool | None = None,
) -> ConformanceReport:
    """Check that a model keeps the [`SequenceModel`][seqmem.SequenceModel] protocol, or the part it has.

    Runs the properties in this order, in each dtype:

    1. `protocol`: `input_size`, `output_size` and `forward` exist; `step` and `initial_state`, when
       present, take the protocol's arguments.
    2. `shapes and dtypes`: of outputs and states; `forward(x)` equals `forward(x, initial_state(B))`.
    3. `state shapes`: the states of `initial_state`, `forward` and `step` agree in structure,
       shapes and dtypes after the same number of steps; `step` continues a state `forward` left.
    4. `inputs unchanged`: `forward` and `step` leave `x` and the given state untouched.
    5. `gradients`: backward works; `x` and every parameter get a finite gradient.
    6. `causality`: changing `x[:, t:]` leaves `y[:, :t]` unchanged; `d y[:, :t] / d x[:, t:] = 0`.
    7. `batch independence`: row `b` of `y` depends on row `b` of `x` only.
    8. `step == forward`: `step` over `t = 0 .. T-1` gives `forward`'s outputs and final state.
    9. `chunked streaming`: `forward(x2, forward(x1)[1])` equals `forward(cat([x1, x2], 1))`,
       gradients across the split included.
    10. `backend parity`: every backend in `backends` equals the `"torch"` one (outputs, states,
        all gradients); skipped for a model without a `backends` attribute or with one backend.
    11. `state size`: the state's bytes are constant (or grow linearly) along the stream; only
        with `state_growth`.

    A model need not have every form: without `step`, or with a `forward(x)` that takes no state or
    returns `y` alone, or without `initial_state`, every property that applies runs and the others
    are reported as skipped, with the reason. A state may be any pytree of tensors (a tensor, a
    tuple, list, dict, `NamedTuple` or dataclass of them, or `None`); it is compared leaf by leaf.

    The model is checked on a deep copy cast to each dtype (yours is not modified); put a model
    with dropout in eval mode first. A float32 comparison that fails is re-run in float64 (the
    same parameters, the same input) to say whether it is rounding, and which side drifted.

    Args:
        model: the model to check.
        dtype: the dtype to check in, or several; by default `x`'s dtype when `x` is given, else
            float64 (where the comparisons are tight) then float32.
        seed: seed of the input sequence and of the perturbations.
        batch_size: batch `B` of the input sequence.
        seq_len: length `T` of the input sequence.
        scale: standard deviation of the input entries (large values saturate gates).
        x: `(batch, seq_len, input_size)` input to use instead of a random one (cast to each dtype).
        backends: backends to compare with `"torch"`; by default all of `model.backends`, none for a
            model without that attribute. Pass `()` to skip.
        skip: names of properties not to check, e.g. `{"batch independence"}` for a model with
            batch normalisation.
        tolerance: the tolerance policy (see [`Tolerance`][seqmem.testing.Tolerance]), or a mapping
            from property names to policies (the others get `Tolerance()`), e.g.
            `{"chunked streaming": Tolerance(scale=4)}`.
        state_growth: check the state's size along the stream: `"constant"` (a recurrence) or
            `"linear"` (a KV cache); `None` skips the `state size` property.
        raise_on_failure: raise the first failure (the default); with `False`, run every property
            in every dtype and return the report, failures included.
        rtol: relative tolerance for every dtype and property, overriding the policy's.
        atol: absolute tolerance for every dtype and property, overriding the policy's.
        long: use the long-scan tolerances; by default for `seq_len >= LONG_SEQ_LEN`.

    Returns:
        A `ConformanceReport`: one row per property and dtype, passed, failed or skipped (`print` it,
        or `report.to_markdown()`, or `rich.print(report)`).

    Raises:
        ConformanceFailure: with `raise_on_failure`, an `AssertionError` whose message names the
            model, the first property that fails, the setting (dtype, batch, seq_len, seed) and
            where: which call, which step, which state leaf or parameter, and by how much. Its
            `report` attribute holds the rows so far.
        ValueError: for a `skip` entry or a `tolerance` key that is not a property name, a
            `state_growth` other than `"constant"`, `"linear"` or `None`, or an `x` that does not fit.
        TypeError: for a `dtype` that is not a floating dtype, or a `tolerance` of the wrong type.

    Example:
        A hand-written leaky integrator, $h_t = a \\odot h_{t-1} + W x_t$, with no seqmem base class
        and a bare tensor for its state:

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
        ...         return torch.zeros(batch_size, self.output_size, device=device, dtype=dtype)
        ...     def step(self, x_t, h):
        ...         h = self.decay * h + self.proj(x_t)
        ...         return h, h
        ...     def forward(self, x, h=None):
        ...         if h is None:
        ...             h = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        ...         ys = []
        ...         for t in range(x.shape[1]):
        ...             y_t, h = self.step(x[:, t], h)
        ...             ys.append(y_t)
        ...         return torch.stack(ys, dim=1), h
        >>> report = check_sequence_model(Leaky(3, 5))
        >>> report.passed, report.skipped
        (True, ['backend parity', 'state size'])
    """
    unknown = [s for s in skip if s not in PROPERTIES]
    if unknown:
        raise ValueError(
            f"check_sequence_model: unknown properties in skip: {unknown}; expected some of {list(PROPERTIES[1:])}"
        )
    if PROTOCOL in skip:
        raise ValueError("check_sequence_model: the protocol cannot be skipped: every other property needs it")
    if state_growth not in _GROWTHS:
        raise ValueError(
            f"check_sequence_model: state_growth must be 'constant', 'linear' or None, got {state_growth!r}"
        )
    policies = _policies(tolerance)
    dtypes = resolve_dtypes(dtype, x)
    B, T = (int(x.shape[0]), int(x.shape[1])) if isinstance(x, Tensor) and x.dim() == 3 else (batch_size, seq_len)
    report = ConformanceReport(describe_model(model), dtypes, B, T, seed)

    def fail(err: ConformanceFailure, context: str) -> ConformanceFailure:
        where = "; ".join(c for c in (err.context, context) if c)
        failure = ConformanceFailure(err.property, err.model, err.detail, where)
        failure.__cause__ = err
        failure.report = report
        return failure

    try:
        protocol = check_protocol(model)
    except ConformanceFailure as err:
        failure = fail(err, "")
        for d in dtypes:
            report.results.append(PropertyResult(PROTOCOL, FAILED, err.detail, d, failure=failure))
            report.results += [PropertyResult(n, SKIPPED, "not run: the protocol failed", d) for n in PROPERTIES[1:]]
        if raise_on_failure:
            raise failure from err
        return report
    if x is not None:
        check_x(model, x, "check_sequence_model")
    has_backends = hasattr(model, "backends") and hasattr(model, "backend")
    options: dict[str, dict[str, Any]] = {BACKEND_PARITY: {"backends": backends}, STATE_SIZE: {"growth": state_growth}}
    for d in dtypes:
        m = _cast(model, d)
        x_d = x.to(d) if x is not None else random_sequence(
            batch_size, seq_len, model.input_size, dtype=d, seed=seed, scale=scale, device=_device_of(m)
        )
        check_x(m, x_d, "check_sequence_model")
        context = f"{dtype_name(d)}, batch {B}, seq_len {T}, seed {seed}"
        subject = Subject(m)
        protocol_row = PropertyResult(PROTOCOL, PASSED, protocol, d)
        report.results.append(protocol_row)
        for name in PROPERTIES[1:]:
            if name in skip:
                report.results.append(PropertyResult(name, SKIPPED, "skipped on request", d))
                continue
            if name == BACKEND_PARITY and not has_backends:
                report.results.append(PropertyResult(name, SKIPPED, "the model has no `backends` attribute", d))
                continue
            if name == STATE_SIZE and state_growth is None:
                report.results.append(
                    PropertyResult(name, SKIPPED, "not requested (state_growth='constant' or 'linear' checks it)", d)
                )
                continue
            ctx = Ctx(m, x_d, policy=policies[name], rtol=rtol, atol=atol, long=long, seed=seed, subject=subject)
            reason = detail = None
            try:
                with property_context(name, m):
                    reason = skip_reason(name, subject, x_d)
                    if reason is None:
                        detail = IMPLEMENTATIONS[name](ctx, **options.get(name, {}))
            except ConformanceFailure as err:
                failure = fail(err, context)
                report.results.append(PropertyResult(name, FAILED, err.detail, d, ctx.max_error, failure))
                if raise_on_failure:
                    raise failure from err
                continue
            if reason is not None:
                report.results.append(PropertyResult(name, SKIPPED, reason, d))
            elif name == BACKEND_PARITY and detail is not None and detail.endswith("nothing to compare"):
                report.results.append(PropertyResult(name, SKIPPED, detail, d))
            else:
                max_error = ctx.max_error if name not in (GRADIENTS,) else None
                report.results.append(PropertyResult(name, PASSED, str(detail), d, max_error))
        if subject.forward_returns_state is not None:
            protocol_row.detail = f"{protocol.split(';', 1)[0]}; {subject.forms()}"
    return report

