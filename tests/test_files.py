"""Atomic writes (`seqmem._files`): all or nothing, and the permissions a plain `open()` would give."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from seqmem._files import atomic_open, atomic_write_bytes

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


@pytest.fixture
def umask():
    """Set the process umask for one test, and restore it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@posix_only
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_a_new_file_gets_what_open_would_give(tmp_path, umask, mask):
    umask(mask)
    atomic_write_bytes(tmp_path / "atomic.bin", b"x")
    with open(tmp_path / "plain.bin", "wb") as f:
        f.write(b"x")
    assert mode(tmp_path / "atomic.bin") == mode(tmp_path / "plain.bin") == 0o666 & ~mask


@posix_only
def test_replacing_a_file_keeps_its_permissions(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "results.md"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o640


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.md"
    target.write_bytes(b"the old report")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"the old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_folders_are_created_and_the_path_returned(tmp_path):
    out = atomic_write_bytes(tmp_path / "a" / "b" / "c.json", b"{}")
    assert out == tmp_path / "a" / "b" / "c.json" and json.loads(out.read_text()) == {}
    assert [p.name for p in out.parent.iterdir()] == ["c.json"]


@posix_only
def test_what_report_and_bench_write_is_readable_by_the_group(tmp_path, umask):
    """`seqmem report`'s Markdown and plots, and `seqmem bench`'s JSON and plots (mkstemp made them 0600)."""
    pytest.importorskip("matplotlib")
    from seqmem.bench import BenchRecord, plot_bench, write_json
    from seqmem.report import plot_metric_vs, write_report

    umask(0o022)
    from seqmem.runs import RunSpec

    def record(m: str, T: int, a: float) -> dict:
        spec = RunSpec(task="copy", task_config={}, model=m, seq_len=T, seed=0, steps=10, params_budget=20000,
                       batch_size=8, lr=3e-3, weight_decay=0.01, clip=1.0, eval_batches=1, backend="torch")
        return {"id": spec.id, **spec.to_dict(), "metric": "accuracy", "accuracy": a, "loss": 0.1, "params": 20000,
                "state_bytes": 8 * T, "wall_s": 1.0}

    recs = [record(m, T, a) for m, a in (("lstm", 0.9), ("mamba", 0.5)) for T in (10, 20)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    written = [write_report(tmp_path, plot=False), plot_metric_vs(recs, tmp_path / "copy_state.png", "state_bytes")]
    bench = [BenchRecord("lstm", "torch", "forward", 2, T, 8, 1e-3 * T, 1e-3 * T, 1, 100 * T, 64, 1, 500)
             for T in (4, 8)]
    written += [write_json(bench, tmp_path / "bench.json"), *plot_bench(bench, tmp_path / "plots")]
    assert written and all(mode(p) == 0o644 for p in written), {p.name: oct(mode(p)) for p in written}
