"""The `seqmem` command line through typer's CliRunner: compare (and resume), list, bad options."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys

import pytest
import torch
import typer.main
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


# ------------------------------------------------------------------------------ how the CLI reads
COMMANDS = ["compare", "report", "gradflow", "playground", "bench", "list"]


def _help(*args, width=80):
    res = runner.invoke(app, [*args, "--help"], terminal_width=width, env={"COLUMNS": str(width)})
    assert res.exit_code == 0, res.output
    return res.stdout


def _error_line(res):
    """The one `Error: ...` line of a failed command, its wrapped lines joined."""
    assert res.exit_code == 2, res.output
    text = res.stderr
    assert "Error: " in text and not res.stdout.strip(), res.output
    return " ".join(text[text.index("Error: "):].split())


def test_bracketed_text_prints_as_written(tmp_path, monkeypatch):
    assert "pip install 'seqmem[ray]'" in " ".join(_help("compare").split())
    listed = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and listed.stdout.count("(accuracy; seqmem[data])") == 2
    monkeypatch.setitem(sys.modules, "ray", None)  # as without the ray extra
    res = runner.invoke(app, ["compare", "--executor", "ray", "--out", str(tmp_path / "o"), *TINY])
    assert "pip install 'seqmem[ray]'" in _error_line(res)


def _params(command):
    """The command's click object, a context and its parameters (help included)."""
    cmd = typer.main.get_command(app).get_command(None, command)
    ctx = cmd.make_context(command, [], resilient_parsing=True)
    return ctx, cmd.get_params(ctx)


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_take_no_value_in_the_help(command):
    text = _help(command)
    assert "<bool>" not in text
    ctx, params = _params(command)
    flags = [p.get_help_record(ctx)[0] for p in params if getattr(p, "is_flag", False)]
    assert flags
    for names in flags:  # e.g. "--plot / --no-plot": then straight to the help text, no value
        assert re.search(rf"^  {re.escape(names)}  +[A-Z]", text, re.M), (names, text)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_at_80_columns(command):
    text = _help(command)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in text
    ctx, params = _params(command)
    for param in params:
        record = param.get_help_record(ctx)
        extra = re.search(r"\[[^\[\]]*\]$", record[1]) if record else None
        if extra:  # every default and range, whole on one line: never cut, never split
            assert any(extra.group() in line for line in lines), (extra.group(), text)
    # the help column starts by column 32: at least 46 columns of text at 80
    starts = [len(m.group(1)) for m in re.finditer(r"^(  -.*?  +)\S", text, re.M) if len(m.group(1)) < 40]
    assert starts and max(starts) <= 32, starts


@pytest.mark.parametrize("option, value", [("--steps", "-5"), ("--steps", "x"), ("--batch-size", "0"),
                                           ("--jobs", "0"), ("--clip", "-1"), ("--tbptt", "-3")])
def test_range_errors_name_the_value(tmp_path, option, value):
    line = _error_line(runner.invoke(app, ["compare", "--out", str(tmp_path / "o"), option, value]))
    said = line.split(":", 2)[2]  # after "Error: Invalid value for '--steps':"
    assert f"'{option}'" in line and re.search(rf"(?<![\w-]){re.escape(value)}(?!\w)", said), line


@pytest.mark.parametrize("args", [
    ["compare", "--steps", "-5"],               # typer's own check
    ["compare", "--task", "sudoku"],            # seqmem's check of a value
    ["compare", "--bogus"],                     # click's parser
    ["bench", "--modes", "forwards"],
    ["gradflow", "--task", "sudoku"],
])
def test_usage_errors_are_plain_lines(tmp_path, args):
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "o")] if args[0] != "bench" else args)
    line = _error_line(res)
    assert not set("╭╮╰╯│─") & set(res.output), res.output
    assert res.stderr.startswith("Usage: ") and "--help' for help." in res.stderr
    if "--bogus" not in args:
        assert re.match(r"Error: Invalid value for '--[a-z-]+': ", line), line


def test_errors_found_after_parsing_are_the_same_plain_line(tmp_path):
    import numpy as np

    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 4, 2), np.float32), y=np.array([0, 1, 0, 1, 7]), n_classes=2)
    res = runner.invoke(app, ["compare", "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o")])
    assert _error_line(res).startswith("Error: ") and not set("╭╮╰╯│") & set(res.output)
    assert res.stderr.startswith("Error: ")  # no usage line: the command line was right, the data was not
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "results.jsonl").write_text("")
    res = runner.invoke(app, ["report", str(tmp_path / "empty"), "--no-plot"])
    assert _error_line(res).startswith("Error: no records in") and not set("╭╮╰╯│") & set(res.output)


@pytest.mark.parametrize("args, available", [
    (["--backends", "cuda"], "numba, torch"),
    (["--models", "transformer", "--backends", "numba"], "torch"),
    (["--models", "rnn,lstm", "--backends", "torch,jax"], "numba, torch"),
])
def test_bench_refuses_a_backend_no_model_has(monkeypatch, args, available):
    import seqmem.bench

    monkeypatch.setattr(seqmem.bench, "bench", lambda *a, **k: pytest.fail("bench ran"))
    line = _error_line(runner.invoke(app, ["bench", *args]))
    unknown = [b for b in args[-1].split(",") if b not in available.split(", ")]
    assert f"unknown backend {unknown[0]!r}" in line and line.endswith(f"choose from {available}"), line


def test_the_progress_reporter_implements_compare_progress():
    from seqmem.cli import _RichProgress
    from seqmem.compare import CompareProgress

    hooks = {n for n in vars(CompareProgress) if not n.startswith("_")}
    assert hooks and hooks <= {n for n in vars(_RichProgress) if not n.startswith("_")}


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["compare", "--help"], ["bench", "--help"]])
def test_version_and_help_import_neither_torch_nor_rich(args):
    code = ("import sys\nfrom seqmem.cli import app\n"
            f"try:\n    app({args!r}, prog_name='seqmem')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('torch', 'numba', 'numpy', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]", out


@pytest.mark.parametrize(("given", "cpus", "runs_args", "expected"), [
    ([], 2, ["--models", "rnn,gru", "--seq-lens", "3,4"], 2),      # one worker per CPU
    ([], 8, ["--models", "rnn", "--seq-lens", "3,4"], 2),          # never more workers than runs
    (["-j", "1"], 8, ["--models", "rnn,gru", "--seq-lens", "3,4"], 1),  # as given
    (["--executor", "inline"], 8, ["--models", "rnn", "--seq-lens", "3"], None),
])
def test_compare_runs_one_run_per_cpu_by_default(monkeypatch, tmp_path, given, cpus, runs_args, expected):
    import seqmem.cli as cli

    seen = {}
    monkeypatch.setattr(cli, "_usable_cpus", lambda: cpus)
    monkeypatch.setattr(importlib.import_module("seqmem.compare"), "compare", lambda *a, **kw: seen.update(kw) or [])
    res = runner.invoke(app, ["compare", *runs_args, *given, "--quiet", "--no-plot", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert seen["jobs"] == expected
