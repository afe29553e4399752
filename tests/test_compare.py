"""`seqmem.compare`: records, resume by content hash, durable appends, torn lines, plots, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from seqmem.compare import CompareProgress, compare, model_backends, read_results, run_id, summarize

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
    assert [r["id"] for r in read_results(out)] == [r["id"] for r in first]
    count = Count()
    third = compare("xor-echo", ["rnn", "lstm", "gru"], [3], [0], out=out, plot=False, progress=count, **TINY)
    assert count.started == 1 and count.resumed == 2
    assert third[:2] == first and third[2]["model"] == "gru"
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

