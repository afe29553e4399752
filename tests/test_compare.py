"""`seqmem.compare`: records, resume by content hash, durable appends, torn lines, plots, bad input."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from seqmem.compare import CompareProgress, compare, model_backends, read_results, run_id, summarize
from seqmem.results import ResultsWarning, SkippedLine

TINY = {"steps": 3, "params": 1500, "batch_size": 8, "eval_batches": 1}


def test_records_have_the_promised_fields():
    (rec,) = compare("xor-echo", ["gru"], [4], [0], **TINY)
    for key in ("id", "task", "model", "seq_len", "seed", "params", "steps", "accuracy", "loss", "wall_s",
                "width", "state_bytes", "params_budget", "metric", "chance", "task_config", "version"):
        assert key in rec, key
    assert rec["metric"] == "accuracy" and 0.0 <= rec["accuracy"] <= 1.0
    assert abs(rec["params"] - 1500) <= 150
    assert rec["state_bytes"] == rec["width"] * 4  # one float32 h per sequence
    json.dumps(rec, allow_nan=False)


def test_resume_skips_finished_runs_and_survives_a_torn_line(tmp_path):
    out = tmp_path / "sweep"
    first = compare("xor-echo", ["rnn", "lstm"], [3], [0], out=out, plot=False, **TINY)
    path = out / "results.jsonl"
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2 and [json.loads(x)["id"] for x in lines] == [r["id"] for r in first]

    class Count(CompareProgress):
        def __init__(self):
            self.started, self.resumed = 0, 0

        def run_started(self, index, total, spec):
            self.started += 1

        def run_finished(self, index, total, record, resumed):
            self.resumed += resumed

    count = Count()
    again = compare("xor-echo", ["rnn", "lstm"], [3], [0], out=out, plot=False, progress=count, **TINY)
    assert count.started == 0 and count.resumed == 2  # nothing retrained
    assert again == first and path.read_bytes().splitlines() == lines  # file untouched

    # a crash mid-write leaves a torn last line: ignored on read, and the next append starts afresh
    with open(path, "ab") as f:
        f.write(b'{"id": "abc", "task": "xor-')
    with pytest.warns(ResultsWarning, match=r"results.jsonl:3: a torn last line"):
        assert [r["id"] for r in read_results(out)] == [r["id"] for r in first]
    count = Count()
    with pytest.warns(ResultsWarning, match="torn last line"):  # named on resume too
        third = compare("xor-echo", ["rnn", "lstm", "gru"], [3], [0], out=out, plot=False, progress=count,
                        **TINY)
    assert count.started == 1 and count.resumed == 2
    assert third[:2] == first and third[2]["model"] == "gru"
    with pytest.warns(ResultsWarning, match=r"results.jsonl:3: not JSON"):  # no longer the last line
        assert [r["id"] for r in read_results(path)] == [r["id"] for r in third]
    assert path.read_bytes().endswith(b"\n")


def test_run_id_is_a_content_hash(tmp_path):
    a = compare("xor-echo", ["rnn"], [3], [0, 1], **TINY)
    b = compare("xor-echo", ["rnn"], [3], [0], **{**TINY, "steps": 4})
    ids = {r["id"] for r in a + b}
    assert len(ids) == 3  # seed and steps enter the id
    spec = {"model": "rnn", "seq_len": 3}
    assert run_id(spec) == run_id(dict(reversed(spec.items()))) and len(run_id(spec)) == 16


def test_same_seed_same_result_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = compare("xor-echo", ["lstm"], [3], [0], **TINY)
    assert torch.equal(torch.get_rng_state(), before)
    b = compare("xor-echo", ["lstm"], [3], [0], **TINY)
    assert a[0]["loss"] == b[0]["loss"] and a[0]["accuracy"] == b[0]["accuracy"]


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    compare("xor-echo", ["rnn", "gru"], [3, 4], [0, 1], out=tmp_path, **TINY)
    png = tmp_path / "xor-echo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary left


def test_text_task_through_compare(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 30, encoding="utf-8")
    (rec,) = compare("text", ["gru"], [8], task_kwargs={"corpus": str(corpus)}, **{**TINY, "params": 4000})
    assert rec["metric"] == "bits_per_char" and rec["bits_per_char"] > 0
    assert rec["task_config"]["corpus"] == str(corpus.resolve())


def test_backend_falls_back_to_torch_where_missing():
    assert model_backends("transformer") == ("torch",)
    assert "numba" in {b for m in ("rnn", "lstm", "gru", "mamba") for b in model_backends(m)}
    tiny = {**TINY, "params": 5000}
    (rec,) = compare("xor-echo", ["transformer"], [3], backend="numba", **tiny)
    assert rec["backend"] == "torch"
    (same,) = compare("xor-echo", ["transformer"], [3], **tiny)
    assert same["id"] == rec["id"]  # the same run, whatever was asked for


def test_summarize_over_seeds():
    recs = [
        {"task": "t", "model": "rnn", "seq_len": 5, "seed": s, "metric": "accuracy", "accuracy": a,
         "loss": 0.5, "params": 10, "wall_s": 1.0, "diverged_at": d}
        for s, a, d in ((0, 0.5, None), (1, 0.7, None), (2, None, 3))
    ]
    (row,) = summarize(recs)
    assert row["mean"] == pytest.approx(0.6) and row["min"] == 0.5 and row["max"] == 0.7
    assert row["n"] == 3 and row["diverged"] == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"task": "nope"}, "unknown task"),
    ({"models": ["rnn", "elman"]}, "unknown model"),
    ({"models": []}, "models must not be empty"),
    ({"models": "rnn"}, "list of names"),
    ({"seq_lens": []}, "seq_lens must not be empty"),
    ({"seq_lens": [5, 0]}, "seq_len"),
    ({"seeds": [-1]}, "seed"),
    ({"steps": 0}, "steps"),
    ({"params": -5}, "params"),
    ({"params": 10}, "too small"),
    ({"lr": 0}, "lr"),
    ({"task_kwargs": {"alphabet": 1}}, "alphabet"),
    ({"backend": "cuda-graphs"}, "unknown backend"),
])
def test_bad_input_fails_before_training(tmp_path, kwargs, match):
    args = {"task": "xor-echo", "models": ["rnn"], "seq_lens": [3], "seeds": [0], **TINY, **kwargs}
    with pytest.raises(ValueError, match=match):
        compare(out=tmp_path / "x", **args)
    assert not (tmp_path / "x").exists()



def test_every_skipped_line_is_named_and_a_duplicate_never_counts_twice(tmp_path):
    good = compare("xor-echo", ["rnn", "gru"], [3], [0], out=tmp_path, plot=False, **TINY)
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    junk_model = {**json.loads(lines[0]), "model": 5}
    edited = {**json.loads(lines[0]), "seed": 7}  # its id no longer matches its fields
    no_metric = {k: v for k, v in json.loads(lines[1]).items() if k != "accuracy"}
    path.write_text("\n".join([
        lines[0], "garbage", "[1, 2]", json.dumps(junk_model), lines[0], json.dumps(edited),
        json.dumps({**json.loads(lines[1]), "seq_len": True}), json.dumps(no_metric), lines[1],
    ]) + "\n")
    skipped: list[SkippedLine] = []
    with pytest.warns(ResultsWarning) as caught:
        records = read_results(path, skipped=skipped)
    assert [r["id"] for r in records] == [r["id"] for r in good]
    assert [(s.line, s.reason) for s in skipped] == [
        (2, "not JSON"),
        (3, "a JSON list, not a record (an object)"),
        (4, "'model' is 5, expected str"),
        (5, f"a duplicate of line 1 (run {good[0]['id']})"),
        (6, f"its id {good[0]['id']} does not match its fields (edited by hand, or damaged)"),
        (7, "'seq_len' is True, expected int"),
        (8, "its metric 'accuracy' has no number (got None)"),
    ]
    assert len(caught) == 1 and "skipped 7 lines" in str(caught[0].message) and f"{path}:2: not JSON" in str(
        caught[0].message)
    # the table, the report and a resume see each run once
    rows = summarize(records)
    assert [r["n"] for r in rows] == [1, 1]
    with pytest.warns(ResultsWarning):
        again = compare("xor-echo", ["rnn", "gru"], [3], [0], out=tmp_path, plot=False, **TINY)
    assert [r["id"] for r in again] == [r["id"] for r in good]
    assert read_results(path, warn=False) == records


def test_the_lock_survives_the_results_file_being_replaced(tmp_path):
    from seqmem.results import sweep_lock

    compare("xor-echo", ["rnn"], [3], [0], out=tmp_path, plot=False, **TINY)
    with sweep_lock(tmp_path):
        (tmp_path / "results.jsonl").unlink()  # someone removes the file while a sweep runs
        with pytest.raises(RuntimeError, match="another sweep is writing"):
            compare("xor-echo", ["rnn"], [3], [0], out=tmp_path, plot=False, **TINY)
    assert not (tmp_path / "results.jsonl").exists()  # the refused sweep wrote nothing


# ------------------------------------------------------------------ sizes, weights folder and leftovers, before work
def test_a_sweep_that_cannot_fit_is_refused_before_any_work_unless_forced(tmp_path, monkeypatch):
    import seqmem._memory as memory

    trained, real = [], sys.modules["seqmem.compare"].execute_run
    monkeypatch.setattr(sys.modules["seqmem.compare"], "execute_run", lambda job, callback=None: trained.append(job))
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1_000_000)  # 1 MB free
    with pytest.raises(ValueError, match=r"training rnn \(torch\) at batch 512, seq_len 200, width \d+ needs about "
                                         r".* this machine has 977 KiB available.*pass force=True, --force"):
        compare("xor-echo", ["rnn", "gru"], [10, 200], steps=2, params=3000, batch_size=512, eval_batches=1,
                backend="torch", out=tmp_path, plot=False)
    assert trained == [] and not (tmp_path / "results.jsonl").exists()
    monkeypatch.setattr(sys.modules["seqmem.compare"], "execute_run", real)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1 << 40)
    records = compare("xor-echo", ["gru"], [4], steps=2, params=3000, batch_size=8, eval_batches=1, plot=False)
    assert len(records) == 1  # fits: trains as before
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1_000)
    records = compare("xor-echo", ["gru"], [4], steps=2, params=3000, batch_size=8, eval_batches=1, plot=False,
                      force=True)
    assert len(records) == 1


def test_save_weights_into_a_folder_it_cannot_write_is_refused_before_training(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(sys.modules["seqmem.compare"], "execute_run", lambda job, callback=None: trained.append(job))
    (tmp_path / "weights").write_text("a file where the weights folder goes")
    with pytest.raises(NotADirectoryError, match="cannot write into .*weights: it exists and is not a folder"):
        compare("xor-echo", ["gru"], [4], steps=2, params=3000, out=tmp_path, plot=False, save_weights=True,
                executor="inline")
    assert trained == []


def test_resume_removes_the_temporary_files_of_killed_writes(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    leftover = weights / ".abc123.safetensors.x7k2q9.tmp"
    leftover.write_bytes(b"half a file")
    mine = weights / "notes.txt"  # not a temporary file of seqmem's: kept
    mine.write_text("keep")
    compare("xor-echo", ["gru"], [4], steps=2, params=3000, batch_size=8, eval_batches=1, out=tmp_path,
            plot=False, save_weights=True)
    assert not leftover.exists() and mine.read_text() == "keep"
    assert sorted(p.suffix for p in weights.iterdir() if p.name != "notes.txt") == [".json", ".safetensors"]
