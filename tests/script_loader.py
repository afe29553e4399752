"""Import a script of `scripts/` by path, for the tests of that script."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def loaded_script(name: str) -> Iterator[ModuleType]:
    """Yield `scripts/<name>.py` as a module, and forget it afterwards (for a module-scoped fixture)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script_under_test", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)
