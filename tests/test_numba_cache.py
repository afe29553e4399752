"""The numba runtime settings (`seqmem._numba`): a one-line notice when kernels compile (cold cache) and
none when they load (warm cache); a read-only install and HOME run uncached after a one-line warning;
`seqmem warmup` compiles ahead of time.

Each case runs in a fresh Python process (the cache folder is chosen once, when numba is imported), with
the environment pointing numba at temporary folders. Root may write anywhere, so "read-only" folders are
made unusable the way root also cannot use them: their path runs through a regular file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import seqmem
from seqmem.cli import app

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
needs_jit = pytest.mark.skipif(NO_JIT, reason="NUMBA_DISABLE_JIT=1: nothing is compiled or cached")

# a kernel of the RNN family and a function of the shared math, each compiled in float32 only (seconds)
CODE = """
import torch
from seqmem import _kernels
from seqmem.rnn.numba_scan import rnn_step_numba
_kernels._sigmoid(0.5)
with torch.no_grad():
    h = rnn_step_numba(torch.ones(1, 3), torch.zeros(1, 4), torch.ones(4, 3), torch.zeros(4, 4))
assert h.shape == (1, 4)
import numba
print("CACHE_DIR=" + str(numba.config.CACHE_DIR))
"""


def _run(env: dict[str, str], cwd: Path, code: str = CODE) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "SEQMEM_CACHE_DIR", "XDG_CACHE_HOME")}
    return subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=900
    )


def _notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("seqmem: compiling numba kernels for ")]


@needs_jit
def test_compiling_prints_one_line_per_family_and_loading_prints_nothing(tmp_path):
    cache = tmp_path / "cache"
    env = {"NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(Path(seqmem.__file__).parents[1])}
    cold = _run(env, tmp_path)
    assert cold.returncode == 0, cold.stderr
    assert _notices(cold.stderr) == [
        "seqmem: compiling numba kernels for shared math (once per dtype, ~10 s; cached afterwards)",
        "seqmem: compiling numba kernels for rnn (once per dtype, ~10 s; cached afterwards)",
    ], cold.stderr
    assert any(cache.rglob("*.nbi")), "nothing was cached"
    warm = _run(env, tmp_path)
    assert warm.returncode == 0, warm.stderr
    assert _notices(warm.stderr) == [] and "seqmem:" not in warm.stderr, warm.stderr


def _read_only_install(tmp_path: Path) -> Path:
    """A copy of the package whose kernel folders cannot hold a `__pycache__` (it is a regular file)."""
    root = tmp_path / "site"
    shutil.copytree(Path(seqmem.__file__).parent, root / "seqmem", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in [root / "seqmem", *(d for d in (root / "seqmem").iterdir() if d.is_dir())]:
        (folder / "__pycache__").write_text("not a folder")
    return root


@needs_jit
def test_read_only_install_and_home_run_uncached_with_a_warning(tmp_path):
    root = _read_only_install(tmp_path)
    blocked = tmp_path / "file"
    blocked.write_text("")
    env = {"PYTHONPATH": str(root), "HOME": str(blocked / "home"), "XDG_CACHE_HOME": str(blocked / "xdg"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    res = _run(env, tmp_path)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("seqmem: warning:")]
    assert len(warnings) == 1 and "no writable folder for numba's cache" in warnings[0], res.stderr
    assert str(root / "seqmem") in warnings[0] and "SEQMEM_CACHE_DIR" in warnings[0]
    assert "(once per dtype, ~10 s; not cached: no writable cache folder)" in res.stderr

    # with a writable SEQMEM_CACHE_DIR the same install caches there, silently
    cache = tmp_path / "user-cache"
    res = _run({**env, "SEQMEM_CACHE_DIR": str(cache)}, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "seqmem: warning" not in res.stderr and f"CACHE_DIR={cache}" in res.stdout
    assert any(cache.rglob("*.nbi"))


def test_warmup_command_runs_every_numba_path_and_rejects_other_models():
    runner = CliRunner()
    res = runner.invoke(app, ["warmup", "--models", "rnn", "--dtypes", "float32"])
    assert res.exit_code == 0, res.output
    lines = [line.split() for line in res.output.splitlines() if line.startswith("rnn")]
    assert len(lines) == 1 and lines[0][:2] == ["rnn", "float32"] and float(lines[0][2]) >= 0
    res = runner.invoke(app, ["warmup", "--models", "transformer"])
    assert res.exit_code == 2 and "unknown name 'transformer'" in res.output


def test_warmup_api_records_each_model_and_dtype():
    import seqmem
    from seqmem._warmup import numba_models, warmup

    assert {"rnn", "lstm", "gru", "mamba", "s4d"} <= set(numba_models())
    assert set(numba_models()) == {s.name for s in seqmem.list_models() if "numba" in s.backends}
    seen = []
    records = warmup(["gru"], ["float64"], progress=seen.append)
    assert seen == ["gru float64"]
    assert [(r.model, r.dtype) for r in records] == [("gru", "float64")] and records[0].compiled >= 0
    with pytest.raises(ValueError, match="has no numba backend"):
        warmup(["transformer"])
