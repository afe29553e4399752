"""`seqmem.compare`: train every model on a task at every sequence length, budgets matched, and record.

One run = one (model, seq_len, parameter budget, learning rate, seed): size a `SequenceNetwork` to
the budget, train it, evaluate it on held-out data, and append one JSON line to
`<out>/results.jsonl`. Each line carries an `id`, a content hash of everything that defines the
run (`seqmem.runs.RunSpec`), so a sweep that is interrupted and started again skips what is done:
finished runs are never lost nor repeated.

A sweep is three steps, each its own function: check every argument (`_check`, before any work),
plan the runs (`_tasks`, `_plan`: tasks built, networks sized, one `RunJob` per run) and run them (`_run`: resume
from `results.jsonl`, hand the rest to an executor, record each finished run). Where the runs train is
the executor's business (`seqmem.executors`: this process, a process pool, or Ray); what reaches the
disk is the parent's alone (`seqmem.results`: one complete line per finished run, flushed and
fsynced; a lock keeps two sweeps apart).

A learning-rate grid (`lrs=[...]`) makes each rate its own run (the rate is part of the id);
`best_per_cell` then keeps, for every (model, seq_len, budget), the rate with the best held-out
metric averaged over seeds, as the Zoology benchmark does (Arora et al. 2023, sec. 3). The metric
that selects is the one reported, so with many rates the reported value is slightly optimistic.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._defaults import DEFAULTS
from ._threads import threads as thread_limit
from .executors import Executor, RayExecutor, make_executor
from .network import ModelRef, size_for_budget
from .plots import LOG_SCALE_METRICS, plot_results
from .registry import ModelSpec, list_models, model_names, model_spec, resolve_model, resolve_models
from .results import RECORD_VERSION, RESULTS_FILE, WEIGHTS_DIR, append_record, read_results, sweep_lock
from .runs import RunJob, RunSpec, execute_run, run_id
from .summary import best_per_cell, summarize
from .tasks import get_task, task_names

__all__ = [
    "DEFAULTS",
    "LOG_SCALE_METRICS",
    "RECORD_VERSION",
    "RESULTS_FILE",
    "WEIGHTS_DIR",
    "CompareProgress",
    "RunJob",
    "RunSpec",
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


class SweepError(RuntimeError):
    """Some runs of a sweep raised an error (not NaN: that is recorded as `status="diverged"`).

    The other runs were trained and recorded; the failed ones were not, so running the sweep
    again retries them.

    Attributes:
        failures: `(RunSpec, exception)` pairs, in sweep order.
        records: the records of the runs that finished, in sweep order.
    """

    def __init__(self, failures: list[tuple[RunSpec, BaseException]], records: list[dict[str, Any]]):
        self.failures = failures
        self.records = records
        lines = [f"{spec.describe()}: {type(e).__name__}: {e}" for spec, e in failures[:5]]
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

    def run_started(self, index: int, total: int, spec: RunSpec) -> None:
        """Called before run `index` (0-based) trains (or, on a parallel executor, when it is queued)."""

    def run_step(self, step: int, steps: int, loss: float) -> None:
        """Called after every training step of the current run (`step` is 1-based; inline executor only)."""

    def run_finished(self, index: int, total: int, record: dict[str, Any], resumed: bool) -> None:
        """Called after run `index` finished, or was found in `results.jsonl` (`resumed=True`)."""


def model_backends(model: ModelRef) -> tuple[str, ...]:
    """The backends a model supports (its spec's `backends`), e.g. `("torch", "numba")`.

    Args:
        model: a model name, import path, `ModelSpec` or class.

    Returns:
        The backend names.

    Raises:
        ValueError: for an unknown model name.
    """
    return resolve_model(model, check=False).backends


# ------------------------------------------------------------------------------------------ checks
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


def _check_importable(spec: ModelSpec, runner: Executor) -> None:
    """A model that runs in other processes must be importable there: not from `__main__`, picklable."""
    if runner.name == "inline":
        return
    module = getattr(spec.factory, "__module__", None)
    problem = None
    if module == "__main__":
        problem = "it is defined in __main__ (a script or notebook)"
    else:
        try:
            pickle.dumps(spec)
        except Exception as e:  # a lambda, a local class, an unpicklable default
            problem = f"it cannot be pickled ({type(e).__name__}: {e})"
    if problem is not None:
        raise ValueError(
            f"compare: model {spec.name!r} cannot run on the {runner.name} executor: {problem}; "
            f"worker processes import models by name. Put it in an importable module, or use executor='inline'"
        )


@dataclass(frozen=True)
class _Sweep:
    """The checked arguments of `compare`."""

    task: str
    models: list[ModelSpec]
    seq_lens: list[int]
    seeds: list[int]
    budgets: list[int]
    lrs: list[float]
    steps: int
    batch_size: int
    weight_decay: float
    clip: float | None
    tbptt: int | None
    eval_batches: int
    task_kwargs: dict[str, Any]
    backends: dict[str, str]
    runner: Executor
    out: Path | None
    plot: bool
    save_weights: bool
    threads: int | None
    force: bool = False


def _data_task(task: str, seq_lens: Any, task_kwargs: Any, data: Any) -> tuple[str, Any, dict[str, Any]]:
    """`data=PATH`: the task `data` on that file, at the file's sequence length (checked, before any work)."""
    task_kwargs = dict(task_kwargs or {})
    if data is None:
        return task, DEFAULTS["seq_lens"] if seq_lens is None else seq_lens, task_kwargs
    if task not in (DEFAULTS["task"], "data"):
        raise ValueError(f"compare: data= trains on your file (task 'data'); it cannot be combined with task={task!r}")
    from .tasks.arrays import ArrayTask

    task_kwargs["path"] = os.fspath(data)
    T = ArrayTask(None, **task_kwargs).seq_len  # reads and checks the whole file
    if seq_lens is not None and list(seq_lens) != [T]:
        raise ValueError(f"compare: the data's sequences have seq_len {T}; got seq_lens={list(seq_lens)}")
    return "data", [T], task_kwargs


def _backend_for(spec: ModelSpec, backend: str) -> str:
    """The backend a model runs on in a sweep: `"auto"` takes numba where the model has it (the sweep
    trains on the CPU); a backend the model lacks falls back to torch."""
    if backend == "auto":
        return "numba" if "numba" in spec.backends else "torch"
    return backend if backend in spec.backends else "torch"


def _check(*, task: str, models: Any, seq_lens: Any, seeds: Any, params: Any, lr: Any, lrs: Any,
           weight_decay: Any, clip: Any, tbptt: Any, steps: Any, batch_size: Any, eval_batches: Any,
           task_kwargs: Any, backend: Any, out: Any, plot: bool, save_weights: bool, executor: Any,
           jobs: Any, address: Any, threads: Any, force: bool = False) -> _Sweep:
    """Every argument of `compare` checked, before any work; see `compare` for what each means."""
    if task not in task_names():
        get_task(task, seq_len=1)  # raises the registry's error, listing the known tasks
    if isinstance(models, (str, ModelSpec)):
        raise ValueError(f"compare: models must be a list of names (or import paths, specs, classes), got {models!r}")
    specs = resolve_models(models, "compare")
    budgets = [_positive_int("params", params)] if isinstance(params, int) else _int_list("params", params, 1)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_batches", eval_batches)):
        _positive_int(name, value)
    if not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"compare: weight_decay must be >= 0, got {weight_decay!r}")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip >= 0):
        raise ValueError(f"compare: clip must be a number >= 0 (0: no clipping) or None, got {clip!r}")
    for name, value in (("tbptt", tbptt), ("threads", threads), ("jobs", jobs)):
        if value is not None:
            _positive_int(name, value)
    if save_weights and out is None:
        raise ValueError("compare: save_weights needs an output folder (out=...)")
    runner = make_executor(executor, jobs, address=address, threads=threads or 1)
    if isinstance(runner, RayExecutor):
        runner._import_ray()  # fail before any work without Ray
    for spec in specs:
        _check_importable(spec, runner)
    known = sorted({"auto", "torch", *(b for spec in [*list_models(), *specs] for b in spec.backends)})
    if backend not in known:
        raise ValueError(f"compare: unknown backend {backend!r}; expected one of {known}")
    return _Sweep(
        task=task, models=specs, seq_lens=_int_list("seq_lens", seq_lens, 1), seeds=_int_list("seeds", seeds, 0),
        budgets=budgets, lrs=_lr_list(lr, lrs), steps=steps, batch_size=batch_size, weight_decay=float(weight_decay),
        clip=None if clip is None or clip == 0 else float(clip), tbptt=tbptt, eval_batches=eval_batches,
        task_kwargs=dict(task_kwargs or {}),
        backends={s.name: _backend_for(s, backend) for s in specs},
        runner=runner, out=Path(out) if out is not None else None, plot=plot, save_weights=save_weights,
        threads=threads, force=bool(force),
    )


# ------------------------------------------------------------------------------------------- plan
def _variant_kwargs(spec: ModelSpec) -> dict[str, Any] | None:
    """A spec's fixed arguments when it is not the registered model of its name (they enter the run id)."""
    if spec.name in model_names() and model_spec(spec.name) is spec:
        return None
    return {k: v for k, v in sorted(spec.kwargs.items())} or None


def _tasks(sweep: _Sweep) -> dict[int, Any]:
    """The sweep's task at each of its sequence lengths, built once (a data task reads its file)."""
    return {T: get_task(sweep.task, seq_len=T, **sweep.task_kwargs) for T in sweep.seq_lens}


def _plan(sweep: _Sweep, tasks: dict[int, Any]) -> list[RunJob]:
    """One `RunJob` per (model, seq_len, budget, lr, seed), in that nesting order; every network sized."""
    jobs = []
    for m in sweep.models:
        for T in sweep.seq_lens:
            for budget in sweep.budgets:
                width = size_for_budget(m, budget, tasks[T]).width
                for rate in sweep.lrs:
                    for seed in sweep.seeds:
                        spec = RunSpec(
                            task=sweep.task, task_config=tasks[T].config(), model=m.name, seq_len=T, seed=seed,
                            steps=sweep.steps, params_budget=budget, batch_size=sweep.batch_size, lr=rate,
                            weight_decay=sweep.weight_decay, clip=sweep.clip, eval_batches=sweep.eval_batches,
                            backend=sweep.backends[m.name], tbptt=sweep.tbptt, model_kwargs=_variant_kwargs(m),
                        )
                        jobs.append(RunJob(spec, width, m, sweep.task_kwargs, sweep.save_weights))
    return jobs


def _check_sizes(sweep: _Sweep, jobs: list[RunJob], tasks: dict[int, Any]) -> None:
    """Refuse, before any work, a sweep whose largest training step cannot fit in memory (unless
    `force`): per model, the run with the longest sequence and the one with the widest network,
    estimated by `seqmem._memory` (parameters, AdamW's state, the batch, activations)."""
    from ._memory import check_fits, estimate_train_bytes
    from .network import SequenceNetwork

    if sweep.force:
        return
    picks: dict[int, RunJob] = {}
    for name in dict.fromkeys(job.model.name for job in jobs):
        mine = [job for job in jobs if job.model.name == name]
        longest = max(mine, key=lambda j: (j.spec.seq_len, j.width))
        widest = max(mine, key=lambda j: (j.width, j.spec.seq_len))
        picks.update({id(longest): longest, id(widest): widest})
    for job in picks.values():
        spec, task = job.spec, tasks[job.spec.seq_len]
        kwargs = {"backend": spec.backend} if len(job.model.backends) > 1 or spec.backend != "torch" else {}

        def make(width: int, job: RunJob = job, task: Any = task, kwargs: dict[str, Any] = kwargs) -> Any:
            return SequenceNetwork.for_task(job.model, task, width, **kwargs)

        estimate = estimate_train_bytes(make, spec.batch_size, spec.seq_len, job.width, tbptt=spec.tbptt,
                                        optimizer_states=2)
        what = (f"compare: training {spec.model} ({spec.backend}) at batch {spec.batch_size}, seq_len "
                f"{spec.seq_len}, width {job.width}")
        check_fits(estimate, what=what, force_hint="pass force=True, --force on the command line,")


# -------------------------------------------------------------------------------------------- run
def _record_outcome(sweep: _Sweep, result: dict[str, Any]) -> dict[str, Any]:
    """Write a finished run's weights (if any) and append its record; return the record."""
    record = result["record"]
    if result["weights"] is not None and sweep.out is not None:
        from .io import write_network

        rel = f"{WEIGHTS_DIR}/{record['id']}"
        write_network(sweep.out / rel, *result["weights"], metadata=record)
        record["weights"] = f"{rel}.safetensors"
    if sweep.out is not None:
        append_record(sweep.out / RESULTS_FILE, record)
    return record


def _warn_unsaved(sweep: _Sweep, records: list[dict[str, Any] | None]) -> None:
    if not (sweep.save_weights and sweep.out is not None):
        return
    unsaved = [r for r in records if r is not None and not (sweep.out / str(r.get("weights", ""))).is_file()]
    if unsaved:
        warnings.warn(
            f"compare: {len(unsaved)} finished run(s) in {sweep.out / RESULTS_FILE} have no saved weights "
            f"(trained without save_weights); delete their lines to train them again", stacklevel=3,
        )


def _run(sweep: _Sweep, jobs: list[RunJob], progress: CompareProgress) -> list[dict[str, Any]]:
    """Resume what `results.jsonl` holds, train the rest on the executor, record each finished run."""
    total = len(jobs)
    records: list[dict[str, Any] | None] = [None] * total
    failures: list[tuple[int, BaseException]] = []
    with contextlib.ExitStack() as stack:
        done: dict[str, dict[str, Any]] = {}
        if sweep.out is not None:
            sweep.out.mkdir(parents=True, exist_ok=True)
            stack.enter_context(sweep_lock(sweep.out))
            done = {rec["id"]: rec for rec in read_results(sweep.out / RESULTS_FILE)}
            if sweep.save_weights:  # before any run trains: a folder it cannot write into, and leftovers
                from .io import check_writable_folder, remove_temp_files

                check_writable_folder(sweep.out / WEIGHTS_DIR)
                remove_temp_files(sweep.out / WEIGHTS_DIR)
        progress.sweep_started(total)
        todo = []
        for index, job in enumerate(jobs):
            if job.id in done:
                records[index] = done[job.id]
                progress.run_finished(index, total, done[job.id], True)
            else:
                todo.append(index)
        _warn_unsaved(sweep, records)
        if todo:
            if sweep.threads is not None and sweep.runner.name == "inline":
                stack.enter_context(thread_limit(sweep.threads))
            progress.executor_started(sweep.runner.name, sweep.runner.workers)
            outcomes = sweep.runner.run(
                execute_run,
                [jobs[i] for i in todo],
                on_start=lambda k: progress.run_started(todo[k], total, jobs[todo[k]].spec),
                callback_for=lambda k: progress.run_step,
            )
            if hasattr(outcomes, "close"):  # a generator: stop its workers on any exit
                stack.callback(outcomes.close)
            for k, result, error in outcomes:
                if error is not None:
                    failures.append((todo[k], error))
                    continue
                records[todo[k]] = _record_outcome(sweep, result)
                progress.run_finished(todo[k], total, records[todo[k]], False)
    finished = [r for r in records if r is not None]
    if sweep.out is not None and sweep.plot and finished:
        plot_results(finished, sweep.out / f"{sweep.task}.png")
    if failures:
        failures.sort(key=lambda f: f[0])
        raise SweepError([(jobs[i].spec, e) for i, e in failures], finished) from failures[0][1]
    return finished


def compare(
    task: str = DEFAULTS["task"],
    models: Sequence[ModelRef] = DEFAULTS["models"],
    seq_lens: Sequence[int] | None = None,
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
    data: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    out: str | os.PathLike[str] | None = None,
    plot: bool = True,
    save_weights: bool = False,
    executor: str | Executor = "local",
    jobs: int | None = None,
    address: str | None = None,
    threads: int | None = None,
    force: bool = False,
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
        models: the models: registered names (`seqmem.model_names()`), import paths
            `"package.module:attr"` (a class, factory or `ModelSpec`), `ModelSpec`s or classes, in one
            list (`seqmem.registry.resolve_model`). A model that is not registered runs in worker
            processes only if it is importable there (not defined in `__main__`).
        seq_lens: sequence lengths, positive ints (default `DEFAULTS["seq_lens"]`; with `data`,
            the file's sequence length).
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
        data: your own data set, an `.npz` file (see `seqmem.tasks.arrays`: `x`, `y`, optional
            `lengths`, `x_val`, `y_val`): the sweep trains on the task `data` at the file's
            sequence length; `task_kwargs` then takes its `val_fraction`, `seed` and `kind`.
        backend: the backend to run the models on: `"auto"` (the default: each model's numba kernels
            where it has them, torch otherwise), `"torch"`, or `"numba"` (for the models that have
            it; the others run on `"torch"`). Each record says which ran.
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
        force: train even if the memory estimate of the largest run exceeds the memory available
            (the estimate errs on the side of too much).
        progress: a `CompareProgress` to report to.

    Returns:
        One record per run, in sweep order (runs found in `results.jsonl` included).

    Raises:
        ValueError: for an unknown task, model, backend or executor, a data file that is not a valid
            data set (the message names the key and the shape), a model import path that does not
            import, a model that a process pool cannot import, an empty or invalid list, a
            non-positive `steps`, `params`, `batch_size`, `eval_batches`, `jobs`, `tbptt` or `lr`,
            bad task options, `save_weights` without `out`, a budget that some model cannot
            meet, or (without `force`) a run whose estimated memory exceeds the memory available;
            all before any training.
        OSError: if `save_weights` and `<out>/weights` cannot be written into (before any training).
        FileNotFoundError: for a missing corpus file (`text`).
        RuntimeError: if another sweep holds the lock on `out`.
        SweepError: after the sweep, if some runs raised an error.
        TypeError: for a model that does not satisfy `SequenceModel` or has no width argument.
        ImportError: for `executor="ray"` without Ray installed.

    Example:
        >>> from seqmem.compare import compare
        >>> records = compare("xor-echo", ["gru"], [4], steps=5, params=2000, eval_batches=1)
        >>> sorted(k for k in records[0] if k in ("accuracy", "loss", "model", "params", "seq_len"))
        ['accuracy', 'loss', 'model', 'params', 'seq_len']
    """
    task, seq_lens, task_kwargs = _data_task(task, seq_lens, task_kwargs, data)
    sweep = _check(
        task=task, models=models, seq_lens=seq_lens, seeds=seeds, params=params, lr=lr, lrs=lrs,
        weight_decay=weight_decay, clip=clip, tbptt=tbptt, steps=steps, batch_size=batch_size,
        eval_batches=eval_batches, task_kwargs=task_kwargs, backend=backend, out=out, plot=plot,
        save_weights=save_weights, executor=executor, jobs=jobs, address=address, threads=threads, force=force,
    )
    tasks = _tasks(sweep)
    planned = _plan(sweep, tasks)
    _check_sizes(sweep, planned, tasks)
    return _run(sweep, planned, progress or CompareProgress())
