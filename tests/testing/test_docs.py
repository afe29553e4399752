"""The kit's documentation stays true: every public name is on the API page, and the examples in the
docstrings run (the testing page's own code is the example file that test_plugin.py runs)."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

import seqmem.testing

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["tolerances", "pytree", "calls", "properties", "report", "check", "strategies", "fixtures", "plugin"]


def test_every_public_name_is_on_the_api_page():
    page = (ROOT / "docs" / "api" / "testing.md").read_text()
    rendered = set(re.findall(r"^::: seqmem\.testing\.(\w+)$", page, re.M))
    listed = set(re.findall(r"`([A-Z_]+) = \"", page))
    assert set(seqmem.testing.__all__) - rendered - listed == set()
    assert rendered <= set(seqmem.testing.__all__)
    assert {f"`{m}`" for m in MODULES} <= set(re.findall(r"`\w+`", page))


@pytest.mark.parametrize("module", ["tolerances", "pytree", "check", "strategies", "fixtures"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"seqmem.testing.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0
