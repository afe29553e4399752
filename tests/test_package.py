"""The top-level package: `import seqmem` is light (no torch), and every public name still resolves."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import seqmem

INIT = Path(seqmem.__file__)


def _run(code: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_import_seqmem_imports_no_torch_until_a_name_is_used():
    out = _run("import sys, seqmem\n"
               "print('torch' in sys.modules, 'numba' in sys.modules, seqmem.__version__)\n"
               "seqmem.LSTM\nprint('torch' in sys.modules, seqmem.LSTM.__module__)")
    assert out == ["False", "False", seqmem.__version__, "True", "seqmem.lstm.module"]


def test_star_import_binds_every_public_name():
    out = _run("from seqmem import *\nimport seqmem\n"
               "g = globals()\nprint(all(g[n] is getattr(seqmem, n) for n in seqmem.__all__), len(seqmem.__all__))")
    assert out == ["True", str(len(seqmem.__all__))]


def test_functions_named_after_their_module_stay_functions():
    # the submodule first (as `seqmem compare` does), then the name: still the function, as before
    out = _run("import seqmem.compare, seqmem.train, seqmem\n"
               "from seqmem import compare, train\n"
               "print(callable(seqmem.compare), seqmem.compare is compare, callable(seqmem.train), train.__name__)\n"
               "import sys; print(sys.modules['seqmem.compare'].compare is compare)")
    assert out == ["True", "True", "True", "train", "True"]


def test_submodules_resolve_as_attributes():
    out = _run("import seqmem\nprint(seqmem.registry.__name__, seqmem.tasks.__name__, seqmem.diagnostics.__name__)\n"
               "print(hasattr(seqmem, 'no_such_name'))")
    assert out == ["seqmem.registry", "seqmem.tasks", "seqmem.diagnostics", "False"]


def test_the_lazy_table_matches_all_and_the_static_imports():
    """`_HOME` (run time), the `if TYPE_CHECKING:` imports (type checkers, the API docs) and `__all__` agree."""
    tree = ast.parse(INIT.read_text())
    (block,) = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    static = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names:
            static[alias.asname or alias.name] = node.module or alias.name  # `from . import tasks`: a submodule
    submodules = {name for name, module in static.items() if module == name and name not in seqmem._HOME}
    assert {n: m for n, m in static.items() if n not in submodules} == seqmem._HOME
    assert set(seqmem.__all__) == {"__version__", *static}
    assert all(getattr(seqmem, name) is not None for name in seqmem.__all__)
