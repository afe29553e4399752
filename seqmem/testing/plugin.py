"""pytest integration: `conformance(factory)` makes one test per property and dtype.

```python
# test_my_models.py
import torch
from seqmem.testing import conformance

test_my_gru = conformance(lambda: MyGRU(3, 8), dtypes=(torch.float64, torch.float32))
```

collects as `test_my_gru[protocol-float64]`, `test_my_gru[step_equals_forward-float32]`, ...: each
test builds the model (under [`seeded`][seqmem.testing.seeded]), checks one property in one dtype,
fails with the property's `ConformanceFailure`, and is skipped, with the reason, where the property
does not apply (a model without `step`, say). `pytest -k step_equals_forward` runs one property.

The pytest plugin that seqmem installs (the `pytest11` entry point `seqmem`, module
`_seqmem_pytestplugin`) adds `--seqmem-report`, which prints the table of every conformance test
run (model, property, dtype, status, max error, detail) at the end of the session, and
`--seqmem-report-md PATH`, which writes it as Markdown. The plugin imports neither torch nor
seqmem: a pytest run that does not use it pays nothing. `conformance` itself needs no plugin.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch

from .check import check_sequence_model
from .fixtures import callable_name, seeded
from .properties import PROPERTIES, PROTOCOL, STATE_SIZE, ConformanceFailure
from .tolerances import dtype_name

__all__ = ["ROW_KEY", "conformance", "property_id"]

ROW_KEY = "seqmem_conformance"
"""The key under which a conformance test records its row (`item.user_properties`), for the plugin."""


def property_id(name: str) -> str:
    """The test id of a property: `"step == forward"` -> `"step_equals_forward"`."""
    return re.sub(r"[^0-9a-z]+", "_", name.replace("==", "equals")).strip("_")


def conformance(
    factory: Callable[[], Any],
    *,
    dtypes: Sequence[torch.dtype] = (torch.float64, torch.float32),
    properties: Collection[str] | None = None,
    seed: int = 0,
    **options: Any,
) -> Callable[..., None]:
    """A pytest test function that checks a model, one test id per property and dtype.

    Assign it to a `test_*` name in a test module. Each test builds a fresh model with
    `factory()` under `seeded(seed)` (so its initial weights are the same in every test and every
    run) and runs one property of [`check_sequence_model`][seqmem.testing.check_sequence_model] in
    one dtype. The `state size` property is included when `state_growth` is given.

    Args:
        factory: builds the model, without arguments (a class, a `lambda`, a function).
        dtypes: the dtypes to check in, one test each.
        properties: the properties to make tests of; by default all of `PROPERTIES` (but `state
            size` without `state_growth`) minus those in `skip`.
        seed: seeds torch for `factory()`, and the input sequence and perturbations.
        **options: passed to `check_sequence_model`: `batch_size`, `seq_len`, `scale`, `x`,
            `backends`, `skip`, `tolerance`, `state_growth`, `rtol`, `atol`, `long`.

    Returns:
        A test function, parametrized over `(property, dtype)` with ids like
        `"step_equals_forward-float32"`.

    Raises:
        ValueError: for a property that is not in `PROPERTIES`, or an option `check_sequence_model`
            does not take.
        TypeError: if `factory` is not callable.

    Example:
        ```python
        import torch
        from seqmem.testing import conformance

        test_gru = conformance(lambda: TorchGRU(3, 8), dtypes=(torch.float64, torch.float32))
        test_kv_cache = conformance(MyAttention, state_growth="linear", properties={"state size"})
        ```
    """
    import pytest

    if not callable(factory):
        raise TypeError(f"conformance: factory must be callable, got {type(factory).__name__}")
    allowed = {"batch_size", "seq_len", "scale", "x", "backends", "skip", "tolerance", "state_growth", "rtol",
               "atol", "long"}
    wrong = sorted(set(options) - allowed)
    if wrong:
        raise ValueError(f"conformance: unknown options {wrong}; check_sequence_model takes {sorted(allowed)}")
    unknown = sorted(set(properties or ()) - set(PROPERTIES))
    if unknown:
        raise ValueError(f"conformance: unknown properties {unknown}; expected some of {list(PROPERTIES)}")
    skip = set(options.pop("skip", ()))
    names = [
        p for p in PROPERTIES
        if (properties is None or p in properties) and p not in skip
        and (p != STATE_SIZE or options.get("state_growth") is not None or (properties and p in properties))
    ]
    cases = [pytest.param(name, d, id=f"{property_id(name)}-{dtype_name(d)}") for d in dtypes for name in names]
    model_name = callable_name(factory)

    @pytest.mark.parametrize(("seqmem_property", "seqmem_dtype"), cases)
    def test(seqmem_property: str, seqmem_dtype: torch.dtype, record_property: Callable[[str, Any], None]) -> None:
        with seeded(seed):
            model = factory()
        others = [p for p in PROPERTIES if p not in (PROTOCOL, seqmem_property)]
        try:
            report = check_sequence_model(model, dtype=seqmem_dtype, seed=seed, skip=others, **options)
            failure = None
        except ConformanceFailure as err:
            report, failure = err.report, err
        row = report.result(seqmem_property, seqmem_dtype) if failure is None else report.failures[0]
        record_property(ROW_KEY, {
            "model": report.model, "factory": model_name, "property": seqmem_property,
            "dtype": dtype_name(seqmem_dtype), "status": row.status, "max_error": row.max_error,
            "detail": row.summary,
        })
        if failure is not None:
            raise failure
        if row.status == "skipped":
            pytest.skip(f"{seqmem_property}: {row.detail}")

    test.__doc__ = f"Conformance of {model_name}: one test per property and dtype."
    return test
