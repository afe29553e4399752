"""Sweeps: executors agree, a sweep killed with SIGKILL loses and repeats nothing, Ray, lr grids, reports."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqmem.cli import app
from seqmem.compare import SweepError, best_per_cell, compare, read_results, run_id, summarize
from seqmem.results import sweep_lock

compare_mod = importlib.import_module("seqmem.compare")  # the module (seqmem.compare is also the function)
runs_mod = importlib.import_module("seqmem.runs")  # where execute_run calls train
ROOT = Path(__file__).resolve().parent.parent
TINY = {"steps": 4, "params": 1500, "batch_size": 8, "eval_batches": 1}
VOLATILE = {"wall_s", "cpu_s", "finished"}  # timings differ from run to run; nothing else may
runner = CliRunner()


def _stable(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


# ------------------------------------------------------------------------------------------ executors
def test_inline_and_process_pool_give_the_same_records_and_record_nan_with_its_step(tmp_path):
    # lr=1e30 overflows float32 after the first update: the loss is NaN at step 2, every time
    kwargs = dict(task="xor-echo", models=["rnn", "lstm"], seq_lens=[4], seeds=[0, 1], lrs=[1e-2, 1e30],
                  clip=None, weight_decay=0.0, plot=False, **TINY)
    inline = compare(out=tmp_path / "inline", **kwargs)
    pool = compare(out=tmp_path / "pool", executor="local", jobs=2, **kwargs)
    assert len(inline) == 8 and [r["id"] for r in pool] == [r["id"] for r in inline]
    assert _stable(pool) == _stable(inline)
    # the files hold the same records (in completion order for the pool)
    on_disk = {r["id"]: r for r in read_results(tmp_path / "pool")}
    assert _stable([on_disk[r["id"]] for r in inline]) == _stable(inline)
    diverged = [r for r in pool if r["lr"] == 1e30]
    assert len(diverged) == 4
    for r in diverged:
        assert r["status"] == "diverged" and r["diverged_at"] == 2 and "nan" in r["diverged"]
        assert r["steps_done"] == 1
    assert all(r["status"] == "ok" and r["diverged_at"] is None for r in pool if r["lr"] == 1e-2)
    rows = best_per_cell(summarize(pool))
    assert {r["lr"] for r in rows} == {1e-2}  # a diverged rate never wins


def test_a_run_that_raises_is_not_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real_train = runs_mod.train

    def flaky(net, task, *args, **kwargs):
        if net.model == "gru":
            raise RuntimeError("out of memory (simulated)")
        return real_train(net, task, *args, **kwargs)

    monkeypatch.setattr(runs_mod, "train", flaky)
    args = dict(task="xor-echo", models=["rnn", "gru", "lstm"], seq_lens=[3], out=tmp_path, plot=False, **TINY)
    with pytest.raises(SweepError, match="1 run of the sweep failed") as info:
        compare(**args)
    assert [r["model"] for r in info.value.records] == ["rnn", "lstm"]
    assert [r["model"] for r in read_results(tmp_path)] == ["rnn", "lstm"]
    monkeypatch.setattr(runs_mod, "train", real_train)
    again = compare(**args)  # retries the failed run only
    assert [r["model"] for r in again] == ["rnn", "gru", "lstm"]
    assert [r["model"] for r in read_results(tmp_path)] == ["rnn", "lstm", "gru"]


def test_a_second_sweep_on_the_same_folder_is_refused(tmp_path):
    with sweep_lock(tmp_path), pytest.raises(RuntimeError, match="another sweep"):
        compare("xor-echo", ["rnn"], [3], out=tmp_path, plot=False, **TINY)
    compare("xor-echo", ["rnn"], [3], out=tmp_path, plot=False, **TINY)  # the lock is released


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_mid_sweep_loses_no_finished_run_and_repeats_none(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "seqmem", "compare", "--task", "xor-echo", "--models", "rnn,gru",
           "--seq-lens", "4,6", "--seeds", "0,1", "--steps", "80", "--params", "1500", "--batch-size", "8",
           "--eval-batches", "1", "--no-plot", "--jobs", "2", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    path = out / "results.jsonl"
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (path.exists() and b"\n" in path.read_bytes()):
            assert proc.poll() is None, "the sweep ended before writing a result"
            assert time.monotonic() < deadline, "no result after 120 s"
            time.sleep(0.005)
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    before = path.read_bytes()
    complete = before[: before.rfind(b"\n") + 1]
    n_done = complete.count(b"\n")
    assert 1 <= n_done < 8, "the sweep was not killed mid-way"
    # the pool's workers notice that their parent is gone and exit (no orphan keeps training)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers), "orphaned workers survived the sweep process"

    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("already done") == n_done  # the finished runs were not trained again
    after = path.read_bytes()
    assert after.startswith(complete)  # append only: every finished line kept byte for byte
    records = read_results(path)
    ids = [r["id"] for r in records]
    assert len(ids) == 8 and len(set(ids)) == 8  # every run exactly once
    assert {(r["model"], r["seq_len"], r["seed"]) for r in records} == {
        (m, T, s) for m in ("rnn", "gru") for T in (4, 6) for s in (0, 1)
    }
    assert after.endswith(b"\n") and len(after.splitlines()) in (8, 9)  # 9: a torn line left in place


@pytest.mark.ray
def test_ray_executor_runs_a_sweep_on_a_local_instance(tmp_path):
    pytest.importorskip("ray")
    args = ["compare", "--task", "xor-echo", "--models", "rnn,gru", "--seq-lens", "3,4", "--steps", "4",
            "--params", "1500", "--batch-size", "8", "--eval-batches", "1", "--no-plot"]
    res = runner.invoke(app, [*args, "--executor", "ray", "--jobs", "2", "--out", str(tmp_path / "ray")])
    assert res.exit_code == 0, res.output
    assert "ray executor" in res.stderr
    by_ray = read_results(tmp_path / "ray")
    assert len(by_ray) == 4
    inline = compare("xor-echo", ["rnn", "gru"], [3, 4], **TINY)
    got = {r["id"]: r for r in by_ray}
    assert set(got) == {r["id"] for r in inline}
    assert _stable([got[r["id"]] for r in inline]) == _stable(inline)


def test_executor_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown executor"):
        compare("xor-echo", ["rnn"], [3], executor="dask", out=tmp_path / "x", **TINY)
    with pytest.raises(ValueError, match="address"):
        compare("xor-echo", ["rnn"], [3], address="ray://h:1", out=tmp_path / "x", **TINY)
    with pytest.raises(ValueError, match="jobs"):
        compare("xor-echo", ["rnn"], [3], jobs=0, out=tmp_path / "x", **TINY)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------- lr grids
def _rec(model, T, lr, seed, acc, **extra):
    return {"id": f"{model}{T}{lr}{seed}", "task": "t", "model": model, "seq_len": T, "params_budget": 100,
            "lr": lr, "seed": seed, "metric": "accuracy", "accuracy": acc, "loss": 1.0 - (acc or 0),
            "params": 100, "wall_s": 1.0, "diverged_at": None, **extra}


def test_best_lr_per_cell_by_mean_over_seeds():
    recs = [
        # lstm T=5: lr 1e-3 has the best single seed (0.99) but 3e-3 the best mean (0.9 > 0.75)
        _rec("lstm", 5, 1e-3, 0, 0.99), _rec("lstm", 5, 1e-3, 1, 0.51),
        _rec("lstm", 5, 3e-3, 0, 0.90), _rec("lstm", 5, 3e-3, 1, 0.90),
        # lstm T=9: a rate with a diverged seed (no metric) loses to any complete one
        _rec("lstm", 9, 1e-3, 0, 0.60), _rec("lstm", 9, 1e-3, 1, 0.60),
        _rec("lstm", 9, 1e-2, 0, 1.00), _rec("lstm", 9, 1e-2, 1, None, diverged_at=7),
        _rec("rnn", 5, 1e-3, 0, 0.55), _rec("rnn", 5, 1e-3, 1, 0.57),
    ]
    rows = summarize(recs)
    assert len(rows) == 5
    best = {(r["model"], r["seq_len"]): r for r in best_per_cell(rows)}
    assert best["lstm", 5]["lr"] == 3e-3 and best["lstm", 5]["mean"] == pytest.approx(0.9)
    assert best["lstm", 9]["lr"] == 1e-3
    assert best["lstm", 5]["lrs"] == [1e-3, 3e-3] and best["rnn", 5]["lrs"] == [1e-3]
    # lower is better for a loss-like metric
    mse = [{**_rec("gru", 5, lr, 0, None), "metric": "mse", "mse": v, "higher_is_better": False}
           for lr, v in ((1e-3, 0.2), (1e-2, 0.05))]
    (row,) = best_per_cell(summarize(mse))
    assert row["lr"] == 1e-2


def test_lr_grid_runs_each_rate_and_the_table_shows_the_best(tmp_path):
    res = runner.invoke(app, ["compare", "--task", "xor-echo", "--models", "gru", "--seq-lens", "3",
                              "--lrs", "1e-3,3e-2", "--steps", "4", "--params", "1500", "--batch-size", "8",
                              "--eval-batches", "1", "--no-plot", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    recs = read_results(tmp_path)  # (a line per run as it finishes: one worker per CPU)
    assert sorted(r["lr"] for r in recs) == [1e-3, 3e-2] and len({r["id"] for r in recs}) == 2
    for rec in recs:
        spec = {k: v for k, v in rec.items() if k in (
            "version", "task", "task_config", "model", "seq_len", "seed", "steps", "params_budget", "batch_size",
            "lr", "weight_decay", "clip", "eval_batches", "backend")}
        assert run_id(spec) == rec["id"]  # the lr is part of the content hash
    assert "best lr" in res.stdout
    (best,) = best_per_cell(summarize(recs))
    assert f"{best['lr']:g}" in res.stdout


def test_bad_lr_grid():
    with pytest.raises(ValueError, match="lrs"):
        compare("xor-echo", ["rnn"], [3], lrs=[1e-3, -1.0], **TINY)
    res = runner.invoke(app, ["compare", "--lrs", "1e-3,x"])
    assert res.exit_code == 2 and "'x' is not a number" in res.output


# ---------------------------------------------------------------------------------------- report
def test_report_renders_from_results_without_training(tmp_path, monkeypatch):
    compare("xor-echo", ["rnn", "transformer"], [3, 6], [0, 1], params=[3000, 7000], steps=4, batch_size=8,
            eval_batches=1, out=tmp_path, plot=False)
    lines = (tmp_path / "results.jsonl").read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("seqmem report must not train")

    monkeypatch.setattr(importlib.import_module("seqmem.train"), "train", no_training)
    monkeypatch.setattr(runs_mod, "train", no_training)
    monkeypatch.setattr(compare_mod, "execute_run", no_training)
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "budget" in res.stdout and "transformer" in res.stdout
    report = (tmp_path / "report.md").read_text()
    assert "| model | seq_len | budget | accuracy |" in report
    assert report.count("| transformer |") == 4 and report.count("| rnn |") == 4
    for name in ("xor-echo.png", "xor-echo_params.png", "xor-echo_state.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
        assert f"]({name})" in report
    assert (tmp_path / "results.jsonl").read_bytes() == lines  # untouched
    res = runner.invoke(app, ["report", str(tmp_path / "nothing-here")])
    assert res.exit_code == 2


def test_report_shows_the_state_growing_for_attention_only(tmp_path):
    recs = compare("xor-echo", ["gru", "transformer"], [3, 6], **{**TINY, "params": 3000})
    state = {(r["model"], r["seq_len"]): r["state_bytes"] for r in recs}
    assert state["gru", 3] == state["gru", 6]
    assert state["transformer", 6] == 2 * state["transformer", 3]
    from seqmem.report import markdown_table

    table = markdown_table(recs)
    assert table.splitlines()[0] == "| model | seq_len | accuracy | loss | params | state | wall s |"


def test_tbptt_and_clip_enter_the_records(tmp_path):
    (plain,) = compare("xor-echo", ["rnn"], [6], **TINY)
    (no_clip,) = compare("xor-echo", ["rnn"], [6], clip=0, **TINY)
    (none,) = compare("xor-echo", ["rnn"], [6], clip=None, **TINY)
    (trunc,) = compare("xor-echo", ["rnn"], [6], tbptt=2, **TINY)
    assert plain["tbptt"] is None and trunc["tbptt"] == 2 and no_clip["clip"] is None
    assert no_clip["id"] == none["id"] != plain["id"] and trunc["id"] != plain["id"]
    assert plain["clipped_steps"] <= plain["steps_done"] and none["clipped_steps"] == 0
    assert plain["max_grad_norm"] > 0
    json.dumps(trunc, allow_nan=False)


def test_an_mse_is_printed_with_significant_digits_and_plotted_on_a_log_axis(monkeypatch, tmp_path):
    from seqmem import report as report_mod
    from seqmem.report import format_metric, markdown_table

    assert format_metric(3.28e-5, "mse") == "3.28e-05" and format_metric(0.163, "mse") == "0.163"
    assert format_metric(0.9374, "accuracy") == "0.937" and format_metric(float("nan"), "mse") == "n/a"
    recs = compare("adding", ["rnn"], [6, 12], **TINY)
    for r, mse in zip(recs, (2.5e-5, 0.16), strict=True):
        r["mse"] = mse
    table = markdown_table(recs)
    assert "| rnn | 6 | 2.5e-05 |" in table and "| rnn | 12 | 0.16 |" in table
    from seqmem import plotstyle

    figures = []
    for mod, name in ((plotstyle, "save_figure"),):  # plots and report save through plotstyle
        monkeypatch.setattr(mod, name, lambda fig, path: figures.append(fig) or path)
    compare_mod.plot_results(recs, tmp_path / "a.png")
    report_mod.plot_metric_vs(recs, tmp_path / "b.png", "params")
    assert [fig.axes[0].get_yscale() for fig in figures] == ["log", "log"]
    figures.clear()
    acc = compare("xor-echo", ["rnn"], [6], **TINY)
    compare_mod.plot_results(acc, tmp_path / "c.png")
    assert figures[0].axes[0].get_yscale() == "linear"


def test_a_results_file_written_before_runspec_keeps_resuming_and_reporting(tmp_path, monkeypatch):
    """`tests/data/results_before_runspec.jsonl` was written by seqmem 0.1.0 before runs became `RunSpec`s
    (two sweeps: an lr grid over two models, two lengths and two seeds; and one with truncated BPTT)."""
    import shutil

    shutil.copy(Path(__file__).parent / "data" / "results_before_runspec.jsonl", tmp_path / "results.jsonl")
    before = (tmp_path / "results.jsonl").read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("every run of these sweeps is in the file already")

    monkeypatch.setattr(compare_mod, "execute_run", no_training)
    # the same sweeps as then; the default backend was "torch" (now "auto"), so it is given
    tiny = {"steps": 3, "params": 2000, "eval_batches": 1, "out": tmp_path, "plot": False, "backend": "torch"}
    grid = compare("xor-echo", ["rnn", "gru"], [4, 6], [0, 1], lrs=[1e-2, 3e-3], **tiny)
    trunc = compare("adding", ["lstm"], [5], [0], tbptt=2, **tiny)
    assert len(grid) == 16 and len(trunc) == 1 and trunc[0]["tbptt"] == 2
    assert (tmp_path / "results.jsonl").read_bytes() == before  # nothing appended, nothing rewritten
    res = runner.invoke(app, ["report", str(tmp_path), "--no-plot"])
    assert res.exit_code == 0, res.output
    assert "| gru |" in (tmp_path / "report.md").read_text()
