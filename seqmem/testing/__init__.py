"""Conformance checks, tolerances and hypothesis strategies for sequence models: seqmem's, and yours.

- **Conformance checks** (`check.py`, `properties.py`, `report.py`).
  [`check_sequence_model`][seqmem.testing.check_sequence_model] runs every property of the
  [`SequenceModel`][seqmem.SequenceModel] protocol on any object that has the protocol or part of
  it (a `forward` alone will do; `step` and `initial_state` are used when present), in float64 and
  float32, and raises an `AssertionError` naming the first property that fails and where, or
  returns a report of every property and dtype. Each property is also a function of its own
  (`check_step_equals_forward`, `check_chunked`, `check_causal`, ...). States may be any pytree of
  tensors (`pytree.py`), and every call into the model is labelled (`calls.py`), so an error
  names the call that raised.
- **Tolerances** (`tolerances.py`): one policy by dtype, [`Tolerance`][seqmem.testing.Tolerance]
  (the table is there), serves every comparison ([`assert_close`][seqmem.testing.assert_close]).
- **Hypothesis strategies** (`strategies.py`): [`sequences`][seqmem.testing.sequences] draws
  inputs, [`seeds`][seqmem.testing.seeds] seeds, [`builds`][seqmem.testing.builds] a model of yours
  with torch seeded by hypothesis, [`model_configs`][seqmem.testing.model_configs] seqmem's models.
- **pytest** (`plugin.py`): [`conformance`][seqmem.testing.conformance] turns a model factory into one
  test per property and dtype; the `seqmem` pytest plugin prints their table (`--seqmem-report`).

This package needs hypothesis (`pip install 'seqmem[dev]'`); `import seqmem` does not import it.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without hypothesis
    raise ImportError(
        "seqmem.testing needs hypothesis, which the dev extra installs: "
        "pip install 'seqmem[dev]' (or: pip install hypothesis)"
    ) from err

from .check import check_sequence_model
from .fixtures import one_thread, random_sequence, seeded
from .plugin import conformance
from .properties import (
    BACKEND_PARITY,
    BATCH_INDEPENDENCE,
    CAUSALITY,
    CHUNKED,
    GRADIENTS,
    INPUTS_UNCHANGED,
    PROPERTIES,
    PROTOCOL,
    SHAPES,
    STATE_SHAPES,
    STATE_SIZE,
    STEP_EQUALS_FORWARD,
    ConformanceFailure,
    check_backend_parity,
    check_batch_independent,
    check_causal,
    check_chunked,
    check_gradients,
    check_inputs_unchanged,
    check_protocol,
    check_shapes,
    check_state_shapes,
    check_state_size,
    check_step_equals_forward,
)
from .pytree import state_leaves
from .report import ConformanceReport, PropertyResult
from .strategies import ModelConfig, builds, model_configs, seeds, sequences
from .tolerances import DEFAULT_TOLERANCE, LONG_SEQ_LEN, Tolerance, assert_close, tolerance

__all__ = [
    "BACKEND_PARITY",
    "BATCH_INDEPENDENCE",
    "CAUSALITY",
    "CHUNKED",
    "DEFAULT_TOLERANCE",
    "GRADIENTS",
    "INPUTS_UNCHANGED",
    "LONG_SEQ_LEN",
    "PROPERTIES",
    "PROTOCOL",
    "SHAPES",
    "STATE_SHAPES",
    "STATE_SIZE",
    "STEP_EQUALS_FORWARD",
    "ConformanceFailure",
    "ConformanceReport",
    "ModelConfig",
    "PropertyResult",
    "Tolerance",
    "assert_close",
    "builds",
    "check_backend_parity",
    "check_batch_independent",
    "check_causal",
    "check_chunked",
    "check_gradients",
    "check_inputs_unchanged",
    "check_protocol",
    "check_sequence_model",
    "check_shapes",
    "check_state_shapes",
    "check_state_size",
    "check_step_equals_forward",
    "conformance",
    "model_configs",
    "one_thread",
    "random_sequence",
    "seeded",
    "seeds",
    "sequences",
    "state_leaves",
    "tolerance",
]
