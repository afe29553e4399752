"""`seqmem.testing.conformance` and the `seqmem` pytest plugin, run as a user runs them: pytest in a
subprocess, on the documentation's example file and on broken models."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

from seqmem.testing import conformance
from seqmem.testing.plugin import ROW_KEY, property_id

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "test_third_party_models.py"
PLUGIN = "_seqmem_pytestplugin"


def _load_plugin() -> tuple[str, ...]:
    """`-p _seqmem_pytestplugin`, unless an installed seqmem declares it (pytest then loads it itself)."""
    from importlib.metadata import entry_points

    installed = any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))
    return () if installed else ("-p", PLUGIN)


def _pytest(*args: str, cwd: Path, path: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    """pytest in a fresh process, with this checkout (and `path`) on the import path and no cache."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (*path, ROOT))}
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(cwd), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_property_ids():
    assert property_id("step == forward") == "step_equals_forward"
    assert property_id("shapes and dtypes") == "shapes_and_dtypes"


def test_the_plugin_knows_the_row_key():
    import _seqmem_pytestplugin

    assert _seqmem_pytestplugin.ROW_KEY == ROW_KEY


def test_the_entry_point_is_declared():
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    assert project["project"]["entry-points"]["pytest11"] == {"seqmem": PLUGIN}


def test_conformance_makes_one_test_id_per_property_and_dtype(tmp_path):
    out = _pytest("--collect-only", "-q", str(EXAMPLE), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    ids = {line.split("::", 1)[1] for line in out.stdout.splitlines() if "::" in line}
    gru = ["protocol", "shapes_and_dtypes", "state_shapes", "inputs_unchanged", "gradients", "causality",
           "batch_independence", "step_equals_forward", "chunked_streaming", "backend_parity", "state_size"]
    expected = {f"test_torch_gru[{p}-{d}]" for d in ("float64", "float32") for p in gru}
    expected |= {f"test_causal_conv[{p}-{d}]" for d in ("float64", "float32") for p in gru if p != "state_size"}
    assert ids == expected


def test_the_example_passes_and_the_plugin_reports_it(tmp_path):
    markdown = tmp_path / "conformance.md"
    out = _pytest(*_load_plugin(), "-rs", "--seqmem-report", "--seqmem-report-md", str(markdown), str(EXAMPLE),
                  cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "32 passed, 10 skipped" in out.stdout
    assert "step == forward: the model has no step()" in out.stdout  # the skip reasons
    section = out.stdout.split("seqmem conformance", 1)[1]
    assert "TorchGRU(3 -> 8)" in section and "CausalConv(3 -> 5)" in section
    assert re.search(r"chunked streaming\s+float32\s+passed", section)
    assert re.search(r"chunked streaming\s+float32\s+skipped\s+forward\(x\) takes no state", section)
    text = markdown.read_text()
    assert "| property | dtype | status | max error | detail |" in text
    assert "| state size | float64 | passed |  | constant: 384 bytes at every step |" in text


def test_broken_models_fail_with_the_property_in_the_test_id(tmp_path):
    (tmp_path / "test_broken.py").write_text(
        "from seqmem.testing import conformance\n"
        "from tests.testing.models import ForgetfulGRU, PeekingConv\n"
        "test_forgetful_gru = conformance(lambda: ForgetfulGRU(3, 4), dtypes=(__import__('torch').float64,))\n"
        "test_peeking_conv = conformance(lambda: PeekingConv(3, 5), properties={'causality', 'gradients'})\n"
    )
    out = _pytest("-q", *_load_plugin(), "--seqmem-report", "test_broken.py", cwd=tmp_path)
    assert out.returncode == 1
    failed = sorted(line.split(" - ")[0] for line in out.stdout.splitlines() if line.startswith("FAILED"))
    assert failed == [
        "FAILED test_broken.py::test_forgetful_gru[chunked_streaming-float64]",
        "FAILED test_broken.py::test_peeking_conv[causality-float32]",
        "FAILED test_broken.py::test_peeking_conv[causality-float64]",
    ]
    assert "ForgetfulGRU(3 -> 4) fails 'chunked streaming' (float64, batch 3, seq_len 12, seed 0)" in out.stdout
    assert re.search(r"causality\s+float32\s+failed\s+[0-9.e+-]+\s+changing only x\[:, 1:\] changed y", out.stdout)


def test_conformance_refuses_what_it_does_not_know():
    with pytest.raises(ValueError, match=r"unknown properties \['causalty'\]"):
        conformance(torch.nn.GRU, properties={"causalty"})
    with pytest.raises(ValueError, match=r"unknown options \['dtype'\]"):
        conformance(torch.nn.GRU, dtype=torch.float32)
    with pytest.raises(TypeError, match="factory must be callable"):
        conformance(torch.nn.GRU(2, 2).weight_ih_l0)


def test_the_plugin_loads_at_startup_without_torch(tmp_path):
    """Installed, the plugin is loaded by every pytest run: through its entry point (a dist-info written
    here from pyproject's declaration), it must not import torch or seqmem."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        entry = tomllib.load(f)["project"]["entry-points"]["pytest11"]
    site = tmp_path / "site"
    dist = site / "seqmem_plugin_probe-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: seqmem-plugin-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in entry.items()))
    tests = tmp_path / "project"
    tests.mkdir()
    (tests / "test_plain.py").write_text(
        "import sys\n"
        "def test_no_torch(request):\n"
        "    assert request.config.pluginmanager.has_plugin('seqmem')\n"
        "    assert request.config.getoption('seqmem_report') is False\n"
        "    assert 'torch' not in sys.modules and 'seqmem' not in sys.modules\n"
    )
    out = _pytest("-q", "test_plain.py", cwd=tests, path=(site,))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
