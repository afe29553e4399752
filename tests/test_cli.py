"""The `seqmem` command line through typer's CliRunner: compare (and resume), list, bad options."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from seqmem.cli import app

runner = CliRunner()
TINY = ["--steps", "3", "--params", "1500", "--batch-size", "8", "--no-plot"]


@pytest.fixture(autouse=True)
def keep_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def test_compare_writes_results_and_resumes(tmp_path):
    out = tmp_path / "a"
    args = ["compare", "--task", "xor-echo", "--models", "rnn,gru", "--seq-lens", "3,4", "--seeds", "0",
            "--out", str(out), *TINY]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert {json.loads(x)["model"] for x in lines} == {"rnn", "gru"}
    assert "accuracy" in first.stdout and "gru" in first.stdout  # the results table
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert (out / "results.jsonl").read_text().splitlines() == lines  # nothing retrained
    assert second.stderr.count("already done") == 4


def test_compare_text_with_a_corpus(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be, that is the question. " * 30, encoding="utf-8")
    res = runner.invoke(app, ["compare", "--task", "text", "--corpus", str(corpus), "--models", "gru",
                              "--seq-lens", "8", "--out", str(tmp_path / "t"), "-q", *TINY[:-3], "--params",
                              "4000", "--no-plot"])
    assert res.exit_code == 0, res.output
    assert "bits per char" in res.stdout


def test_list():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0
    for name in ("rnn", "lstm", "gru", "transformer", "mamba", "s4d", "xor-echo", "text"):
        assert name in res.stdout


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.startswith("seqmem ")


@pytest.mark.parametrize("args, message", [
    (["--models", "rnn,elman"], "unknown model 'elman'"),
    (["--task", "sudoku"], "unknown task 'sudoku'"),
    (["--seq-lens", "5,x"], "'x' is not an integer"),
    (["--seq-lens", "0"], "below the minimum"),
    (["--seeds", ""], "comma-separated"),
    (["--steps", "0"], "--steps"),
    (["--backend", "jax"], "unknown backend 'jax'"),
    (["--lr", "0"], "positive"),
    (["--params", "10"], "too small"),
    (["--corpus", "/no/such/file.txt", "--task", "text"], "does not exist"),
    (["--executor", "dask"], "unknown executor 'dask'"),
    (["--address", "ray://head:10001"], "--address needs --executor ray"),
    (["--jobs", "0"], "--jobs"),
    (["--tbptt", "-1"], "--tbptt"),
    (["--clip", "-1"], "--clip"),
    (["--lrs", "1e-3,0"], "positive number"),
    (["--params", "1500,x"], "'x' is not an integer"),
    (["--task-option", "alphabet"], "expected KEY=VALUE"),
    (["--task-option", "alphabet=1"], "alphabet"),
    (["--task-option", "colour=red"], "colour"),
])
def test_bad_options_give_a_clean_message(tmp_path, args, message):
    res = runner.invoke(app, ["compare", "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())  # rich may wrap the box
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_corpus_needs_the_text_task(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc " * 100, encoding="utf-8")
    res = runner.invoke(app, ["compare", "--corpus", str(corpus), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--task text" in " ".join(res.output.split())


def test_compare_training_options_reach_the_records(tmp_path):
    out = tmp_path / "opts"
    res = runner.invoke(app, ["compare", "--task", "xor-echo", "--models", "lstm", "--seq-lens", "6",
                              "--tbptt", "2", "--no-clip", "--weight-decay", "0", "--eval-batches", "1",
                              "-o", "alphabet=3", "--out", str(out), "-q", *TINY])
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert rec["tbptt"] == 2 and rec["clip"] is None and rec["weight_decay"] == 0.0
    assert rec["task_config"] == {"alphabet": 3} and rec["eval_batches"] == 1 and rec["status"] == "ok"
    res = runner.invoke(app, ["compare", "--task", "xor-echo", "--models", "lstm", "--seq-lens", "6",
                              "--tbptt", "2", "--clip", "0", "--weight-decay", "0", "--eval-batches", "1",
                              "-o", "alphabet=3", "--out", str(out), *TINY])
    assert res.exit_code == 0 and "already done" in res.stderr  # --clip 0 is --no-clip: the same run


@pytest.mark.parametrize("kind", ["sequence classification", "per-step labelling", "sequence regression"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_compare_on_your_data_file(tmp_path, kind, with_lengths):
    import numpy as np

    rng = np.random.default_rng(0)
    N, T = 60, 7
    x = rng.normal(size=(N, T, 3)).astype(np.float32)
    y = {"sequence classification": (x[:, 0, 0] > 0).astype(np.int64),
         "per-step labelling": (x[..., 1] > 0).astype(np.int64),
         "sequence regression": x[:, 0, :2].copy()}[kind]
    arrays = {"x": x, "y": y, **({"lengths": rng.integers(2, T + 1, size=N)} if with_lengths else {})}
    np.savez(tmp_path / "mine.npz", **arrays)
    args = ["compare", "--data", str(tmp_path / "mine.npz"), "--models", "gru", "--steps", "3", "--params",
            "2000", "--no-plot", "--out", str(tmp_path / "out")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"data: {tmp_path / 'mine.npz'}: {kind}" in " ".join(res.stderr.split())
    (rec,) = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert rec["task"] == "data" and rec["seq_len"] == T and rec["task_config"]["kind"] == kind
    assert rec["metric"] == ("mse" if "regression" in kind else "accuracy") and rec["chance"] is not None
    res = runner.invoke(app, args)  # resumes: nothing retrained
    assert res.exit_code == 0 and "already done" in res.stderr
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 1


def test_compare_refuses_a_bad_data_file_before_any_work(tmp_path):
    import numpy as np

    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 4, 2), np.float32), y=np.array([0, 1, 0, 1, 7]), n_classes=2)
    res = runner.invoke(app, ["compare", "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "y" in res.output and "[0, 2)" in res.output.replace("\n", " ")
    assert not (tmp_path / "o").exists()
    res = runner.invoke(app, ["compare", "--data", str(tmp_path / "bad.npz"), "--seq-lens", "9",
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
