"""`seqmem.compare`: train every model on a task at every sequence length, budgets matched, and record.

One run = one (model, seq_len, parameter budget, learning rate, seed): size a `SequenceNetwork` to
the budget, train it, evaluate it on held-out data, and append one JSON line to
`<out>/results.jsonl`. Each line carries an `id`, a content hash of everything that defines the
run, so a sweep that is interrupted and started again skips what is done: finished runs are never
lost nor repeated.

Where the runs train is the executor's business (`seqmem.executors`: this process, a process pool,
or Ray); what reaches the disk is the parent's alone. Only the process that called `compare`
writes `results.jsonl`, one complete line per finished run in a single `write`, flushed and
fsynced before the next run is recorded. So a sweep killed at any moment (even `kill -9`) keeps
every run that finished; at worst the line being written is torn, and a torn last line is ignored
on reading and closed with a newline before the next append. An advisory lock on `results.jsonl` keeps
two sweeps from appending to the same file at once.

A learning-rate grid (`lrs=[...]`) makes each rate its own run (the rate is part of the id);
`best_per_cell` then keeps, for every (model, seq_len, budget), the rate with the best held-out
metric averaged over seeds, as the Zoology benchmark does (Arora et al. 2023, sec. 3). The metric
that selects is the one reported, so with many rates the reported value is slightly optimistic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from ._module import check_choice
from ._threads import threads as thread_limit
from .executors import Executor, RayExecutor, make_executor
from .network import SequenceNetwork, size_for_budget
from .registry import build, model_names
from .tasks import get_task, task_names
from .tasks.base import Task
from .train import StepCallback, derive_seed, train

__all__ = [
    "DEFAULTS",
    "RECORD_VERSION",
    "RESULTS_FILE",
    "CompareProgress",
    "RunJob",
    "SweepError",
    "best_per_cell",
    "compare",
    "execute_run",
    "model_backends",
    "plot_results",
    "read_results",
    "run_id",
    "summarize",
]

RECORD_VERSION = 1
"""Version of the record format; it enters every run id, so a new format reruns everything."""

RESULTS_FILE = "results.jsonl"
"""The name of the results file in a sweep's folder."""

WEIGHTS_DIR = "weights"
"""The folder, inside a sweep's folder, of the networks saved with `save_weights=True`."""

LOG_SCALE_METRICS = frozenset({"mse"})
"""Metrics that span decades (an MSE from 1e-5 to the chance level 1/6): plotted on a log axis and
printed with significant digits rather than three decimals."""

DEFAULTS: dict[str, Any] = {
    "task": "xor-echo",
    "models": ("rnn", "lstm", "gru", "transformer", "mamba"),
    "seq_lens": (5, 10, 20, 40),
    "seeds": (0,),
    "steps": 800,
    "params": 20_000,
    "batch_size": 64,
    "lr": 1e-2,
    "weight_decay": 0.01,
    "clip": 1.0,
    "eval_batches": 8,
}
"""The defaults of `compare` and `seqmem compare`, sized so the default sweep (xor-echo, 5 models x
4 lengths) runs in minutes on two CPU cores."""


class SweepError(RuntimeError):
    """Some runs of a sweep raised an error (not NaN: that is recorded as `status="diverged"`).

    The other runs were trained and recorded; the failed ones were not, so running the sweep
    again retries them.

    Attributes:
        failures: `(run spec, exception)` pairs, in sweep order.
        records: the records of the runs that finished, in sweep order.
    """

    def __init__(self, failures: list[tuple[dict[str, Any], BaseException]], records: list[dict[str, Any]]):
        self.failures = failures
        self.records = records
        lines = [
            f"{spec['model']} seq_len={spec['seq_len']} lr={spec['lr']:g} seed={spec['seed']}: "
            f"{type(e).__name__}: {e}"
            for spec, e in failures[:5]
        ]
        more = f"\n  ... and {len(failures) - 5} more" if len(failures) > 5 else ""
        super().__init__(
            f"{len(failures)} run{'s' if len(failures) > 1 else ''} of the sweep failed (not recorded; "
            f"run the sweep again to retry them):\n  " + "\n  ".join(lines) + more
        )


class CompareProgress:
    """Receives `compare`'s progress; subclass it and override what you need (all no-ops here).

    `seqmem compare` uses one to drive its progress bars.
    """

    def sweep_started(self, total: int) -> None:
        """Called once, with the number of runs in the sweep (resumed ones included)."""

    def executor_started(self, name: str, workers: int) -> None:
        """Called once before the first run trains, with the executor's name and parallelism."""

    def run_started(self, index: int, total: int, spec: dict[str, Any]) -> None:
        """Called before run `index` (0-based) trains (or, on a parallel executor, when it is queued)."""

    def run_step(self, step: int, steps: int, loss: float) -> None:
        """Called after every training step of the current run (`step` is 1-based; inline executor only)."""

    def run_finished(self, index: int, total: int, record: dict[str, Any], resumed: bool) -> None:
        """Called after run `index` finished, or was found in `results.jsonl` (`resumed=True`)."""


def run_id(spec: dict[str, Any]) -> str:
    """The content hash of a run spec: 16 hex digits of the SHA-256 of its canonical JSON.

    Args:
        spec: the run spec (task, task config, model, seq_len, seed, steps, budget, optimiser
            settings, record version).

    Returns:
        The id.
    """
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the records of a `results.jsonl`, skipping lines that are not complete records.

    A run killed while writing leaves a torn last line; it is ignored (and re-run by `compare`).

    Args:
        path: the file, or a directory holding `results.jsonl`.

    Returns:
        The records, in file order; an empty list if the file does not exist.
    """
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.exists():
        return []
    records = []
    with open(p, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue
            if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                records.append(rec)
    return records


def _append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line durably: a single write, flush, fsync; never rewrite the file."""
    line = (json.dumps(record, allow_nan=False) + "\n").encode("utf-8")
    new = not path.exists()
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:  # after a torn line, start a fresh one
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = b"\n" + line
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    if new:  # make the new file's name durable too
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _sweep_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `<folder>/results.jsonl` (creating it; released if killed)."""
    path = folder / RESULTS_FILE
    new = not path.exists()
    with open(path, "ab") as f:
        if new:
            _fsync_dir(folder)
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"compare: another sweep is writing to {path} (it holds a lock on it); "
                f"wait for it to finish or choose another output folder"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def model_backends(model: str) -> tuple[str, ...]:
    """The backends a model supports (its class's `backends`), e.g. `("torch", "numba")`.

    Args:
        model: one of `seqmem.model_names()`.

    Returns:
        The backend names.

    Raises:
        ValueError: for an unknown model name.
    """
    check_choice("model", model, model_names(), "model_backends")
    with torch.random.fork_rng(devices=[]):
        instance = build(model, 8) if model not in ("rnn", "lstm", "gru") else build(model, 2, 2)
    return tuple(getattr(instance, "backends", ("torch",)))


def _finite(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"compare: {name} must be a positive int, got {value!r}")
    return value


def _int_list(name: str, values: Any, minimum: int) -> list[int]:
    if isinstance(values, (int, str)) or not isinstance(values, Iterable):
        raise ValueError(f"compare: {name} must be a list of ints, got {values!r}")
    out = list(dict.fromkeys(values))  # drop duplicates, keep the order
    if not out:
        raise ValueError(f"compare: {name} must not be empty")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"compare: every {name[:-1]} must be an int >= {minimum}, got {v!r}")
    return out


def _lr_list(lr: Any, lrs: Any) -> list[float]:
    values = [lr] if lrs is None else lrs
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"compare: lrs must be a list of positive numbers, got {lrs!r}")
    values = list(values)
    if not values:
        raise ValueError("compare: lrs must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            name = "lr" if lrs is None else "every lr of lrs"
            raise ValueError(f"compare: {name} must be a positive number, got {v!r}")
    return list(dict.fromkeys(float(v) for v in values))


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs to train one run (picklable; sent to pool or Ray workers).

    Attributes:
        id: the run id (`run_id(spec)`).
        spec: the run spec (what the id hashes).
        width: the network width that meets the budget.
        task_kwargs: the task's options, to rebuild it in the worker.
        save_weights: whether to return the trained network's weights.
    """

    id: str
    spec: dict[str, Any]
    width: int
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    save_weights: bool = False


def execute_run(job: RunJob, callback: StepCallback | None = None) -> dict[str, Any]:
    """Train and evaluate one run; the function every executor runs (in the worker).

    Rebuilds the task from the spec (and checks its config is the one hashed), seeds the
    initialisation with `derive_seed(seed, "init")`, trains, evaluates and measures the state size.
    Touches no file.

    Args:
        job: the run.
        callback: per-step progress, `callback(step, steps, loss)`.

    Returns:
        `{"record": record, "weights": (safetensors bytes, config) or None}`.

    Raises:
        ValueError: if the task rebuilt here has another config than the spec (e.g. a corpus file
            that differs on a remote worker).
    """
    spec = job.spec
    task = get_task(spec["task"], seq_len=spec["seq_len"], **job.task_kwargs)
    if task.config() != spec["task_config"]:
        raise ValueError(
            f"compare: the task rebuilt in the worker has config {task.config()}, not the sweep's "
            f"{spec['task_config']} (is the same data available there?)"
        )
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(derive_seed(spec["seed"], "init"))
        kwargs = {"backend": spec["backend"]} if spec["backend"] != "torch" else {}
        net = SequenceNetwork.for_task(spec["model"], task, job.width, **kwargs)
        result = train(
            net, task, spec["steps"], batch_size=spec["batch_size"], lr=spec["lr"],
            weight_decay=spec["weight_decay"], clip=spec["clip"], seed=spec["seed"],
            eval_batches=spec["eval_batches"], tbptt=spec.get("tbptt"), callback=callback,
        )
        x = task.sample(1, torch.Generator().manual_seed(0), split="eval").x
        state_bytes = net.state_bytes(x)
    metric = task.metric_name
    record = {
        "id": job.id,
        **spec,
        "tbptt": spec.get("tbptt"),
        "status": "ok" if result.diverged_at is None else "diverged",
        "steps_done": result.steps,
        "params": net.num_parameters(),
        "width": job.width,
        "n_layers": net.n_layers,
        "n_heads": net.n_heads,
        "metric": metric,
        metric: _finite(result.metric),
        "higher_is_better": task.higher_is_better,
        "chance": task.chance,
        "loss": _finite(result.eval_loss),
        "train_loss": _finite(result.train_loss),
        "wall_s": round(result.wall_s, 3),
        "cpu_s": round(result.cpu_s, 3),
        "state_bytes": state_bytes,
        "diverged_at": result.diverged_at,
        "diverged": result.diverged,
        "max_grad_norm": _finite(result.max_grad_norm),
        "clipped_steps": result.clipped_steps,
        "threads": torch.get_num_threads(),
        "seqmem": __version__,
        "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    weights = None
    if job.save_weights:
        from .io import weights_bytes

        weights = weights_bytes(net)
    return {"record": record, "weights": weights}


def compare(
    task: str = DEFAULTS["task"],
    models: Sequence[str] = DEFAULTS["models"],
    seq_lens: Sequence[int] = DEFAULTS["seq_lens"],
    seeds: Sequence[int] = DEFAULTS["seeds"],
    *,
    steps: int = DEFAULTS["steps"],
    params: int | Sequence[int] = DEFAULTS["params"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    lrs: Sequence[float] | None = None,
    weight_decay: float = DEFAULTS["weight_decay"],
    clip: float | None = DEFAULTS["clip"],
    tbptt: int | None = None,
    eval_batches: int = DEFAULTS["eval_batches"],
    task_kwargs: dict[str, Any] | None = None,
    backend: str = "torch",
    out: str | os.PathLike[str] | None = None,
    plot: bool = True,
    save_weights: bool = False,
    executor: str | Executor = "local",
    jobs: int | None = None,
    address: str | None = None,
    threads: int | None = None,
    progress: CompareProgress | None = None,
) -> list[dict[str, Any]]:
    """Train each model on a task at each sequence length, budget, learning rate and seed.

    For every (model, seq_len, budget, lr, seed), in that nesting order: build the task, size a
    `SequenceNetwork` to the budget (`size_for_budget`, within 10%), seed its initialisation with
    `derive_seed(seed, "init")`, `train` it for `steps` steps and evaluate it on held-out data
    (the same evaluation set for every run of a seq_len). All input is checked, and every network
    sized, before the first run trains.

    With `out`, each finished run is appended to `<out>/results.jsonl` at once, by this process
    (one line, flushed and fsynced; the file is never rewritten), runs whose id is already there
    are skipped (read back instead), and `<out>/<task>.png` plots the metric against `seq_len`,
    one line per model (mean over seeds at the best learning rate, min-max band), if matplotlib is
    installed. `seqmem.report.write_report(out)` renders the full report later, without training.

    A run whose loss or gradient turns NaN or inf stops there and is recorded with
    `status="diverged"` and the step (`diverged_at`); the sweep goes on. A run that raises an
    error is not recorded (so a second sweep retries it); the others go on, and `SweepError` is
    raised at the end.

    Record fields: `id`, `version`, `task`, `task_config`, `model`, `seq_len`, `seed`, `steps`
    (asked), `steps_done`, `params` (actual count), `params_budget`, `width`, `n_layers`,
    `n_heads`, `batch_size`, `lr`, `weight_decay`, `clip`, `tbptt`, `eval_batches`, `backend`,
    `status` (`"ok"` or `"diverged"`), `metric` (its name), the metric under its own name (e.g.
    `accuracy`), `higher_is_better`, `chance` (the metric of a guess that ignores the input),
    `loss` (held-out), `train_loss`, `wall_s`, `cpu_s` (CPU seconds of the worker, all threads),
    `state_bytes` (state carried per sequence after `seq_len` steps), `diverged_at`, `diverged`
    (what was non-finite), `max_grad_norm` (largest gradient norm before clipping),
    `clipped_steps`, `threads`, `seqmem`, `torch`, `finished` (UTC time), and `weights` (the
    saved network's path relative to `out`, with `save_weights`). Non-finite numbers are written
    as `null`.

    Args:
        task: one of `seqmem.tasks.task_names()`.
        models: model names, from `seqmem.model_names()`.
        seq_lens: sequence lengths, positive ints.
        seeds: seeds, ints >= 0; each gives another initialisation and data order.
        steps: training steps per run.
        params: parameter budget per network (embedding and head included), or a list of budgets.
        batch_size: sequences per training step.
        lr: peak learning rate (AdamW, warm-up then cosine decay; see `seqmem.train.train`).
        lrs: a grid of peak learning rates, each its own run (replaces `lr`); `best_per_cell`
            picks the best per (model, seq_len, budget).
        weight_decay: AdamW weight decay on weight matrices.
        clip: gradient-norm clipping threshold, or `None` (or 0) for no clipping.
        tbptt: truncated BPTT over chunks of this many steps (`seqmem.train.backward_loss`), or
            `None` for full BPTT.
        eval_batches: held-out batches of 256 sequences per evaluation.
        task_kwargs: options of the task (e.g. `{"corpus": "book.txt"}` for `text`).
        backend: the backend to run the models on (`"torch"`, or `"numba"` for the models that
            have it; the others run on `"torch"`, and each record says which ran).
        out: directory for `results.jsonl` and the plot (created if needed); `None` keeps the
            results in memory only (no resume).
        plot: write the plot (with `out` and matplotlib).
        save_weights: save each trained network as `<out>/weights/<id>.safetensors` plus
            `<id>.json` (`seqmem.load` rebuilds it); needs `out`.
        executor: where the runs train: `"local"` (this process, or a process pool when
            `jobs > 1`), `"inline"`, `"process"`, `"ray"`, or a `seqmem.executors.Executor`.
        jobs: runs at the same time (pool workers, or the CPUs of a local Ray instance).
        address: the Ray cluster to join (`executor="ray"`); `None` starts a local instance.
        threads: threads of torch, numba and BLAS: of this process for the inline executor (restored
            afterwards; `None` leaves the current setting), of each worker otherwise (`None`: 1).
            Networks this small often run fastest on one thread.
        progress: a `CompareProgress` to report to.

    Returns:
        One record per run, in sweep order (runs found in `results.jsonl` included).

    Raises:
        ValueError: for an unknown task, model, backend or executor, an empty or invalid list, a
            non-positive `steps`, `params`, `batch_size`, `eval_batches`, `jobs`, `tbptt` or `lr`,
            bad task options, `save_weights` without `out`, or a budget that some model cannot
            meet; all before any training.
        FileNotFoundError: for a missing corpus file (`text`).
        RuntimeError: if another sweep holds the lock on `out`.
        SweepError: after the sweep, if some runs raised an error.
        ImportError: for `executor="ray"` without Ray installed.

    Example:
        >>> from seqmem.compare import compare
        >>> records = compare("xor-echo", ["gru"], [4], steps=5, params=2000, eval_batches=1)
        >>> sorted(k for k in records[0] if k in ("accuracy", "loss", "model", "params", "seq_len"))
        ['accuracy', 'loss', 'model', 'params', 'seq_len']
    """
    # ---------------------------------------------------------------- check everything first
    check_choice("task", task, task_names(), "compare")
    if isinstance(models, str) or not isinstance(models, Iterable):
        raise ValueError(f"compare: models must be a list of names, got {models!r}")
    models = list(dict.fromkeys(models))
    if not models:
        raise ValueError(f"compare: models must not be empty; choose from {model_names()}")
    for m in models:
        check_choice("model", m, model_names(), "compare")
    seq_lens = _int_list("seq_lens", seq_lens, 1)
    seeds = _int_list("seeds", seeds, 0)
    budgets = [_positive_int("params", params)] if isinstance(params, int) else _int_list("params", params, 1)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_batches", eval_batches)):
        _positive_int(name, value)
    lr_grid = _lr_list(lr, lrs)
    if not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"compare: weight_decay must be >= 0, got {weight_decay!r}")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip >= 0):
        raise ValueError(f"compare: clip must be a number >= 0 (0: no clipping) or None, got {clip!r}")
    clip = None if clip is None or clip == 0 else float(clip)
    if tbptt is not None:
        _positive_int("tbptt", tbptt)
    if threads is not None:
        _positive_int("threads", threads)
    if jobs is not None:
        _positive_int("jobs", jobs)
    if save_weights and out is None:
        raise ValueError("compare: save_weights needs an output folder (out=...)")
    runner = make_executor(executor, jobs, address=address, threads=threads or 1)
    if isinstance(runner, RayExecutor):
        runner._import_ray()  # fail before any work without Ray
    supported = {m: model_backends(m) for m in model_names()}
    check_choice("backend", backend, sorted({b for bs in supported.values() for b in bs}), "compare")
    backends = {m: backend if backend in supported[m] else "torch" for m in models}
    task_kwargs = dict(task_kwargs or {})
    tasks: dict[int, Task] = {T: get_task(task, seq_len=T, **task_kwargs) for T in seq_lens}
    sizes = {(m, T, b): size_for_budget(m, b, tasks[T]) for m in models for T in seq_lens for b in budgets}

    out_dir = Path(out) if out is not None else None
    specs = []
    for m in models:
        for T in seq_lens:
            for b in budgets:
                for rate in lr_grid:
                    for s in seeds:
                        spec = {
                            "version": RECORD_VERSION,
                            "task": task,
                            "task_config": tasks[T].config(),
                            "model": m,
                            "seq_len": T,
                            "seed": s,
                            "steps": steps,
                            "params_budget": b,
                            "batch_size": batch_size,
                            "lr": rate,
                            "weight_decay": float(weight_decay),
                            "clip": clip,
                            "eval_batches": eval_batches,
                            "backend": backends[m],
                        }
                        if tbptt is not None:  # only when set, so the ids of earlier sweeps stay valid
                            spec["tbptt"] = tbptt
                        specs.append(spec)
    run_jobs = [
        RunJob(run_id(spec), spec, sizes[spec["model"], spec["seq_len"], spec["params_budget"]].width,
               task_kwargs, save_weights)
        for spec in specs
    ]

    # ---------------------------------------------------------------- run
    progress = progress or CompareProgress()
    total = len(run_jobs)
    records: list[dict[str, Any] | None] = [None] * total
    failures: list[tuple[int, BaseException]] = []
    with contextlib.ExitStack() as stack:
        results_path = None
        done: dict[str, dict[str, Any]] = {}
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_sweep_lock(out_dir))
            results_path = out_dir / RESULTS_FILE
            done = {rec["id"]: rec for rec in read_results(results_path)}
        progress.sweep_started(total)
        todo = []
        for index, job in enumerate(run_jobs):
            if job.id in done:
                records[index] = done[job.id]
                progress.run_finished(index, total, done[job.id], True)
            else:
                todo.append(index)
        if save_weights and out_dir is not None:
            unsaved = [r for r in records
                       if r is not None and not (out_dir / str(r.get("weights", ""))).is_file()]
            if unsaved:
                warnings.warn(
                    f"compare: {len(unsaved)} finished run(s) in {results_path} have no saved weights "
                    f"(trained without save_weights); delete their lines to train them again", stacklevel=2,
                )
        if todo:
            if threads is not None and runner.name == "inline":
                stack.enter_context(thread_limit(threads))
            progress.executor_started(runner.name, runner.workers)
            outcomes = runner.run(
                execute_run,
                [run_jobs[i] for i in todo],
                on_start=lambda k: progress.run_started(todo[k], total, run_jobs[todo[k]].spec),
                callback_for=lambda k: progress.run_step,
            )
            if hasattr(outcomes, "close"):  # a generator: stop its workers on any exit
                stack.callback(outcomes.close)
            for k, result, error in outcomes:
                index = todo[k]
                if error is not None:
                    failures.append((index, error))
                    continue
                record = result["record"]
                if result["weights"] is not None and out_dir is not None:
                    from .io import write_network

                    rel = f"{WEIGHTS_DIR}/{record['id']}"
                    write_network(out_dir / rel, *result["weights"], metadata=record)
                    record["weights"] = f"{rel}.safetensors"
                if results_path is not None:
                    _append_record(results_path, record)
                records[index] = record
                progress.run_finished(index, total, record, False)
    finished = [r for r in records if r is not None]
    if out_dir is not None and plot and finished:
        plot_results(finished, out_dir / f"{task}.png")
    if failures:
        failures.sort(key=lambda f: f[0])
        raise SweepError([(specs[i], e) for i, e in failures], finished) from failures[0][1]
    return finished


# -------------------------------------------------------------------------------------- summaries
def _higher_is_better(rec: dict[str, Any]) -> bool:
    flag = rec.get("higher_is_better")
    return flag if isinstance(flag, bool) else rec.get("metric", "accuracy") == "accuracy"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate records over seeds: one row per (task, model, seq_len, budget, lr), first-seen order.

    Args:
        records: records from `compare` or `read_results`.

    Returns:
        Rows with `task`, `model`, `seq_len`, `params_budget`, `lr`, `metric` (name),
        `higher_is_better`, `mean`, `min`, `max` (of the metric over seeds with a finite value),
        `loss` (mean held-out loss), `params`, `state_bytes`, `wall_s` (mean), `n` (seeds),
        `missing` (seeds without a finite metric) and `diverged` (seeds that hit NaN/inf).
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in records:
        key = (rec.get("task"), rec.get("model"), rec.get("seq_len"), rec.get("params_budget"), rec.get("lr"))
        groups.setdefault(key, []).append(rec)
    rows = []
    for (task, model, T, budget, rate), recs in groups.items():
        name = recs[0].get("metric", "accuracy")
        values = [r[name] for r in recs if isinstance(r.get(name), (int, float))]
        losses = [r["loss"] for r in recs if isinstance(r.get("loss"), (int, float))]
        walls = [r["wall_s"] for r in recs if isinstance(r.get("wall_s"), (int, float))]
        rows.append({
            "task": task,
            "model": model,
            "seq_len": T,
            "params_budget": budget,
            "lr": rate,
            "metric": name,
            "higher_is_better": _higher_is_better(recs[0]),
            "mean": _mean(values),
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "loss": _mean(losses),
            "params": recs[0].get("params"),
            "state_bytes": recs[0].get("state_bytes"),
            "wall_s": _mean(walls),
            "n": len(recs),
            "missing": len(recs) - len(values),
            "diverged": sum(1 for r in recs if r.get("diverged_at") is not None),
        })
    return rows


def best_per_cell(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep, for each (task, model, seq_len, budget), the learning rate with the best mean metric.

    "Best" is the highest mean over seeds for accuracy, the lowest for losses (`mse`,
    `bits_per_char`); a rate with seeds that have no finite metric (diverged beyond evaluation)
    ranks after every rate without, and ties go to the rate seen first. With a single rate per
    cell this returns the rows unchanged (plus the `lrs` field).

    Args:
        rows: rows of `summarize`.

    Returns:
        One row per cell, in first-seen order, each with `lrs`: the sorted list of rates tried.

    References:
        Arora, S. et al. (2023). Zoology: measuring and improving recall in efficient language
        models. arXiv:2312.04927, sec. 3 (the best learning rate of a sweep per configuration).
    """
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["task"], row["model"], row["seq_len"], row.get("params_budget"))
        cells.setdefault(key, []).append(row)
    out = []
    for group in cells.values():
        def rank(row: dict[str, Any]) -> tuple[int, float]:
            mean = row["mean"]
            if mean is None:
                return (1, 0.0)
            return (int(row.get("missing", 0) > 0), -mean if row["higher_is_better"] else mean)

        best = min(group, key=rank)
        lrs = sorted({r["lr"] for r in group if r.get("lr") is not None})
        out.append({**best, "lrs": lrs})
    return out


# ------------------------------------------------------------------------------------------ plots
def _save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically (temporary file + `os.replace`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("seqmem: matplotlib is not installed; no plot (pip install 'seqmem[plot]')", file=sys.stderr)
        return None
    return Figure


def plot_results(records: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path | None:
    """Plot the metric against `seq_len`, one line per model: mean over seeds, min-max band.

    With a learning-rate grid, each point is the best rate of its cell (`best_per_cell`); with
    several budgets, each (model, budget) gets its own line. The PNG is written to a temporary file
    beside `path` and moved into place (`os.replace`), so a reader never sees half a plot. Without
    matplotlib, nothing is written and a note goes to stderr.

    Args:
        records: records of one task (from `compare` or `read_results`).
        path: where to write the PNG.

    Returns:
        The path written, or `None` (no matplotlib, or no records).
    """
    Figure = _figure_class()
    rows = best_per_cell(summarize(records))
    if Figure is None or not rows:
        return None
    path = Path(path)
    metric = rows[0]["metric"]
    fig = Figure(figsize=(6.4, 4.2), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    markers = "osD^vPX*"
    budgets = list(dict.fromkeys(r.get("params_budget") for r in rows))
    lines = list(dict.fromkeys((r["model"], r.get("params_budget")) for r in rows))
    for i, (model, budget) in enumerate(lines):
        pts = sorted((r["seq_len"], r["mean"], r["min"], r["max"]) for r in rows
                     if (r["model"], r.get("params_budget")) == (model, budget) and r["mean"] is not None)
        if not pts:
            continue
        xs, means, lows, highs = zip(*pts, strict=True)
        size = max(4.0, 10.0 - 1.5 * i)  # earlier lines drawn larger, so overlapping ones stay visible
        label = model if len(budgets) == 1 else f"{model} ({budget} params)"
        (line,) = ax.plot(xs, means, marker=markers[i % len(markers)], markersize=size,
                          linewidth=max(1.0, 3.0 - 0.4 * i), label=label, zorder=2 + i)
        if any(lo != hi for lo, hi in zip(lows, highs, strict=True)):
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    first = records[0]
    chance = first.get("chance")
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance")
    if metric in LOG_SCALE_METRICS and all(r["min"] > 0 for r in rows if r["mean"] is not None):
        ax.set_yscale("log")  # an MSE from 1e-5 to the chance level of 0.17 is flat on a linear axis
    seq_lens = sorted({r["seq_len"] for r in rows})
    if len(seq_lens) > 1 and seq_lens[-1] / seq_lens[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(seq_lens, [str(t) for t in seq_lens])
    ax.set_xlabel("seq_len")
    ax.set_ylabel(metric.replace("_", " "))
    seeds = len({r.get("seed") for r in records})
    n_lrs = max(len(r["lrs"]) for r in rows)
    budget_text = f"{budgets[0]} params" if len(budgets) == 1 else f"{len(budgets)} budgets"
    ax.set_title(
        f"{first['task']}: {budget_text}, {first.get('steps', '?')} steps, "
        f"{seeds} seed{'s' if seeds != 1 else ''}" + (f", best of {n_lrs} lrs" if n_lrs > 1 else "")
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return _save_figure(fig, path)
