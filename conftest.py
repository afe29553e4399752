"""pytest configuration for the docstring examples of `seqmem/` (the tests' own is `tests/conftest.py`).

An example that needs an optional extra is skipped, saying which, when the extra is not installed
(as the tests of the `data` extra are); with the extra, it runs.
"""

from __future__ import annotations

import importlib.util

import pytest

# docstring examples (module, or module.object) -> the packages they need and the extra that brings them
NEEDS_EXTRA = {
    "seqmem.tasks.datasets.Digits": (("sklearn",), "data"),
    "seqmem.tasks.datasets.JapaneseVowels": (("sktime",), "data"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        needs = NEEDS_EXTRA.get(item.name)
        if needs is None:
            continue
        modules, extra = needs
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            item.add_marker(pytest.mark.skip(
                reason=f"needs {', '.join(missing)}: pip install 'seqmem[{extra}]'"
            ))
