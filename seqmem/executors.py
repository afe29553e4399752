"""Executors: where the runs of a sweep train, in this process, in a process pool, or on Ray.

An executor maps a picklable, module-level function over jobs and yields each outcome as it
completes. It never touches the results file: `seqmem.compare` appends every finished run itself,
from the parent process, so the durability argument (one write of a full line, flushed and
fsynced) does not depend on where the runs trained.

| name | class | where the runs train |
| --- | --- | --- |
| `"inline"` | `InlineExecutor` | one after the other in this process (progress per training step) |
| `"process"` | `ProcessExecutor(jobs)` | a pool of `jobs` spawned processes, one torch thread each |
| `"ray"` | `RayExecutor(address, num_cpus)` | Ray tasks, on a local instance or an existing cluster |

`make_executor("local", jobs)` picks `"inline"` for one job and `"process"` for more.

Worker processes of the pool ignore Ctrl-C (the parent handles it) and exit by themselves when the
parent process dies, even by `kill -9`, so no orphan keeps training. The processes of a local Ray
instance end with the sweep too: Ray's fate sharing ends most of them, and a small reaper process
(`seqmem/_ray_reaper.py`) ends the rest (Ray's agents otherwise linger for a minute after a `kill -9`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ._module import check_choice

__all__ = [
    "EXECUTORS",
    "Executor",
    "InlineExecutor",
    "Outcome",
    "ProcessExecutor",
    "RayExecutor",
    "make_executor",
]

EXECUTORS = ("local", "inline", "process", "ray")
"""Names `make_executor` accepts."""

StepCallback = Callable[[int, int, float], None]
JobFn = Callable[[Any, "StepCallback | None"], Any]


class Outcome(NamedTuple):
    """One finished job: its position in the submitted list, and its result or its error.

    Attributes:
        index: the job's index in the sequence given to `Executor.run`.
        result: what the function returned, or `None` if it raised.
        error: the exception it raised, or `None`.
    """

    index: int
    result: Any
    error: BaseException | None


class Executor:
    """Runs `fn(job, callback)` for every job and yields `Outcome`s as the jobs finish.

    Subclasses implement `run`. `fn` must be a module-level function (it is pickled by reference
    for the process pool and Ray) taking a job and an optional per-step callback (only the inline
    executor passes one).

    Attributes:
        name: the executor's name (`"inline"`, `"process"`, `"ray"`).
        workers: how many jobs run at the same time.
    """

    name = "executor"
    workers = 1

    def run(
        self,
        fn: JobFn,
        jobs: Sequence[Any],
        on_start: Callable[[int], None] | None = None,
        callback_for: Callable[[int], StepCallback | None] | None = None,
    ) -> Iterator[Outcome]:
        """Run every job; yield an `Outcome` as each one finishes (in completion order).

        Args:
            fn: `fn(job, callback) -> result`, a module-level function.
            jobs: the jobs (picklable).
            on_start: called with a job's index when it starts (inline) or is submitted (pools).
            callback_for: gives the per-step callback of a job's index (inline executor only).

        Returns:
            An iterator of `Outcome`s; an exception inside a job is returned in its `Outcome`,
            not raised, so the other jobs go on.
        """
        raise NotImplementedError


class InlineExecutor(Executor):
    """Runs the jobs one after the other in this process (the default; per-step progress)."""

    name = "inline"

    def run(
        self,
        fn: JobFn,
        jobs: Sequence[Any],
        on_start: Callable[[int], None] | None = None,
        callback_for: Callable[[int], StepCallback | None] | None = None,
    ) -> Iterator[Outcome]:
        """Run the jobs in order, here; see `Executor.run`.

        Args:
            fn: `fn(job, callback) -> result`.
            jobs: the jobs.
            on_start: called with a job's index before it runs.
            callback_for: gives the per-step callback of a job's index.

        Yields:
            An `Outcome` per job, in order.
        """
        for index, job in enumerate(jobs):
            if on_start is not None:
                on_start(index)
            callback = callback_for(index) if callback_for is not None else None
            try:
                result = fn(job, callback)
            except Exception as e:  # a failed run must not stop the sweep; KeyboardInterrupt does
                yield Outcome(index, None, e)
            else:
                yield Outcome(index, result, None)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:  # re-parented: the sweep process is gone (even by kill -9)
            os._exit(1)


def _init_worker(threads: int, parent: int) -> None:
    """Pool worker set-up: torch/numba/BLAS threads, Ctrl-C left to the parent, exit with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ._threads import set_threads

    set_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="seqmem-parent-watch").start()


class ProcessExecutor(Executor):
    """Runs the jobs on a pool of `jobs` spawned worker processes, `threads` threads each (torch, numba, BLAS).

    The `spawn` start method gives every worker a fresh interpreter (safe with threads and
    OpenMP, the same on every OS). As always with `spawn`, a script that starts a sweep must guard
    its entry point with `if __name__ == "__main__":`.

    Args:
        jobs: number of worker processes, a positive int.
        threads: threads per worker, for torch, numba and BLAS alike (1: small networks train fastest on one).
    """

    name = "process"

    def __init__(self, jobs: int, threads: int = 1) -> None:
        for key, value in (("jobs", jobs), ("threads", threads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProcessExecutor: {key} must be a positive int, got {value!r}")
        self.workers = jobs
        self.threads = threads

    def run(
        self,
        fn: JobFn,
        jobs: Sequence[Any],
        on_start: Callable[[int], None] | None = None,
        callback_for: Callable[[int], StepCallback | None] | None = None,
    ) -> Iterator[Outcome]:
        """Submit every job to the pool; yield `Outcome`s as they complete. See `Executor.run`.

        Args:
            fn: `fn(job, None) -> result`, a module-level function.
            jobs: the jobs (picklable).
            on_start: called with a job's index when it is submitted.
            callback_for: ignored (no per-step progress across processes).

        Yields:
            An `Outcome` per job, in completion order.
        """
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        if not jobs:
            return
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(jobs)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.threads, os.getpid()),
        )
        pending: set[Any] = set()
        try:
            futures = {}
            for index, job in enumerate(jobs):
                futures[pool.submit(fn, job, None)] = index
                if on_start is not None:
                    on_start(index)
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=futures.__getitem__):
                    error = fut.exception()
                    yield Outcome(futures[fut], None if error else fut.result(), error)
        finally:
            if pending:  # stopped early (Ctrl-C, an error while recording): do not wait for the runs
                workers = list((getattr(pool, "_processes", None) or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in workers:
                    proc.terminate()
            else:
                pool.shutdown(wait=True)


def _start_reaper(session_dir: str) -> subprocess.Popen[bytes] | None:
    """Start `_ray_reaper.py`: it ends the session's processes once this process closes its stdin or dies."""
    if not os.path.isdir("/proc"):  # it finds the session's processes through /proc (Linux)
        return None
    script = Path(__file__).with_name("_ray_reaper.py")
    return subprocess.Popen(
        [sys.executable, str(script), session_dir], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        start_new_session=True,  # out of the terminal's process group: a Ctrl-C does not stop it first
    )


def _stop_reaper(reaper: subprocess.Popen[bytes] | None) -> None:
    """Close the reaper's stdin (it then ends what `ray.shutdown` left, usually nothing) and wait for it."""
    if reaper is None:
        return
    reaper.stdin.close()  # type: ignore[union-attr]
    try:
        reaper.wait(timeout=30)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait()


def _ray_call(fn: JobFn, job: Any, threads: int) -> Any:
    from seqmem._threads import set_threads

    set_threads(threads)
    return fn(job, None)


class RayExecutor(Executor):
    """Runs the jobs as Ray tasks (one CPU each), on an existing cluster or a local instance.

    Needs the `ray` extra (`pip install "seqmem[ray]"`). With `address`, joins that cluster
    (`ray.init(address=...)`); seqmem must then be importable on its workers (installed there, or
    shipped with `runtime_env={"py_modules": [...]}`). Without, starts a local instance with
    `ray.init(num_cpus=..., include_dashboard=False)` (no network needed, usage statistics off),
    on which this copy of seqmem is importable, and shuts it down afterwards; if this process dies
    first, even by `kill -9`, the instance's processes end within seconds (on Linux). If Ray is
    already initialised in this process, that instance is used and left running.

    Args:
        address: the cluster's address (e.g. `"ray://head:10001"` or `"auto"`), or `None` for a
            local instance.
        num_cpus: CPUs of a local instance (default: `os.cpu_count()`); ignored with `address`.
        threads: threads per task, for torch, numba and BLAS alike.
        runtime_env: Ray's `runtime_env` for the tasks (merged with the local instance's
            `PYTHONPATH`).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        threads: int = 1,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        bad_cpus = isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1
        if num_cpus is not None and bad_cpus:
            raise ValueError(f"RayExecutor: num_cpus must be a positive int or None, got {num_cpus!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"RayExecutor: threads must be a positive int, got {threads!r}")
        self.address = address
        self.num_cpus = num_cpus
        self.threads = threads
        self.runtime_env = dict(runtime_env or {})
        self.workers = num_cpus or os.cpu_count() or 1
        self._reaper: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _import_ray() -> Any:
        try:
            import ray
        except ImportError:
            raise ImportError(
                "the ray executor needs Ray: pip install 'seqmem[ray]' (or pip install 'ray>=2.9')"
            ) from None
        return ray

    def _init(self, ray: Any) -> bool:
        """Connect to or start Ray; returns whether this executor started it (and must stop it)."""
        if ray.is_initialized():
            return False
        import logging

        env = dict(self.runtime_env)
        if self.address is not None:
            ray.init(address=self.address, runtime_env=env or None, logging_level=logging.WARNING,
                     log_to_driver=False)
            return True
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # make this copy of seqmem importable by the local workers, installed or not
        root = str(Path(__file__).resolve().parent.parent)
        env_vars = dict(env.pop("env_vars", {}) or {})
        inherited = env_vars.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        paths = [root, *filter(None, inherited.split(os.pathsep))]
        env_vars["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env["env_vars"] = env_vars
        context = ray.init(num_cpus=self.workers, include_dashboard=False, runtime_env=env,
                           logging_level=logging.WARNING, log_to_driver=False)
        self._reaper = _start_reaper(context.address_info["session_dir"])
        return True

    def run(
        self,
        fn: JobFn,
        jobs: Sequence[Any],
        on_start: Callable[[int], None] | None = None,
        callback_for: Callable[[int], StepCallback | None] | None = None,
    ) -> Iterator[Outcome]:
        """Submit every job as a Ray task; yield `Outcome`s as they complete. See `Executor.run`.

        Args:
            fn: `fn(job, None) -> result`, a module-level function.
            jobs: the jobs (picklable).
            on_start: called with a job's index when it is submitted.
            callback_for: ignored (no per-step progress across processes).

        Yields:
            An `Outcome` per job, in completion order.

        Raises:
            ImportError: if Ray is not installed.
        """
        if not jobs:
            return
        ray = self._import_ray()
        started = self._init(ray)
        refs: dict[Any, int] = {}
        try:
            remote = ray.remote(num_cpus=1, max_retries=0)(_ray_call)
            for index, job in enumerate(jobs):
                refs[remote.remote(fn, job, self.threads)] = index
                if on_start is not None:
                    on_start(index)
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except Exception as e:  # RayTaskError wraps the task's exception
                        cause = getattr(e, "cause", None)
                        yield Outcome(refs[ref], None, cause if isinstance(cause, BaseException) else e)
                    else:
                        yield Outcome(refs[ref], result, None)
        finally:
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # finished already, or the cluster is gone
                    pass
            if started:
                ray.shutdown()
                _stop_reaper(self._reaper)
                self._reaper = None


def make_executor(
    name: str | Executor = "local",
    jobs: int | None = None,
    *,
    address: str | None = None,
    threads: int = 1,
) -> Executor:
    """An executor by name.

    Args:
        name: `"local"` (inline for one job, else a process pool), `"inline"`, `"process"`,
            `"ray"`, or an `Executor` (returned as is).
        jobs: runs at the same time: pool workers (`"local"`, `"process"`; default 1) or the CPUs of
            a local Ray instance (default `os.cpu_count()`).
        address: Ray cluster address (`"ray"` only).
        threads: torch, numba and BLAS threads per worker process (pools and Ray).

    Returns:
        The executor.

    Raises:
        ValueError: for an unknown name, a non-positive `jobs`, or `address` without `"ray"`.
    """
    if isinstance(name, Executor):
        return name
    check_choice("executor", name, EXECUTORS, "make_executor")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"make_executor: jobs must be a positive int, got {jobs!r}")
    if address is not None and name != "ray":
        raise ValueError(f"make_executor: address applies to the ray executor only, got executor {name!r}")
    if name == "ray":
        return RayExecutor(address, num_cpus=jobs, threads=threads)
    if name == "process":
        return ProcessExecutor(jobs or 1, threads)
    if name == "inline" or (jobs or 1) == 1:
        return InlineExecutor()
    return ProcessExecutor(jobs or 1, threads)
