"""`seqmem.compare`: train every model on a task at every sequence length, budgets matched, and record.

One run = one (model, seq_len, seed): size a `SequenceNetwork` to the parameter budget, train it,
evaluate it on held-out data, and append one JSON line to `<out>/results.jsonl`. Each line carries
an `id`, a content hash of everything that defines the run, so a sweep that is interrupted and
started again skips what is done: finished runs are never lost nor repeated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from ._module import check_choice
from .network import SequenceNetwork, size_for_budget
from .registry import build, model_names
from .tasks import get_task, task_names
from .tasks.base import Task
from .train import derive_seed, train

__all__ = [
    "DEFAULTS",
    "RECORD_VERSION",
    "CompareProgress",
    "compare",
    "model_backends",
    "plot_results",
    "read_results",
    "run_id",
    "summarize",
]

RECORD_VERSION = 1
"""Version of the record format; it enters every run id, so a new format reruns everything."""

RESULTS_FILE = "results.jsonl"

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


class CompareProgress:
    """Receives `compare`'s progress; subclass it and override what you need (all no-ops here).

    `seqmem compare` uses one to drive its progress bars.
    """

    def sweep_started(self, total: int) -> None:
        """Called once, with the number of runs in the sweep (resumed ones included)."""

    def run_started(self, index: int, total: int, spec: dict[str, Any]) -> None:
        """Called before run `index` (0-based) trains; `spec` holds its model, seq_len, seed, steps."""

    def run_step(self, step: int, steps: int, loss: float) -> None:
        """Called after every training step of the current run (`step` is 1-based)."""

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
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:  # after a torn line, start a fresh one
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = b"\n" + line
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


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


def compare(
    task: str = DEFAULTS["task"],
    models: Sequence[str] = DEFAULTS["models"],
    seq_lens: Sequence[int] = DEFAULTS["seq_lens"],
    seeds: Sequence[int] = DEFAULTS["seeds"],
    *,
    steps: int = DEFAULTS["steps"],
    params: int = DEFAULTS["params"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    weight_decay: float = DEFAULTS["weight_decay"],
    clip: float | None = DEFAULTS["clip"],
    eval_batches: int = DEFAULTS["eval_batches"],
    task_kwargs: dict[str, Any] | None = None,
    backend: str = "torch",
    out: str | os.PathLike[str] | None = None,
    plot: bool = True,
    threads: int | None = None,
    progress: CompareProgress | None = None,
) -> list[dict[str, Any]]:
    """Train each model on a task at each sequence length and seed, with matched parameter budgets.

    For every (model, seq_len, seed), in that nesting order: build the task, size a
    `SequenceNetwork` to `params` parameters (`size_for_budget`, within 10%), seed its
    initialisation with `derive_seed(seed, "init")`, `train` it for `steps` steps and evaluate it on
    held-out data (the same evaluation set for every run of a seq_len). All input is checked, and
    every network sized, before the first run trains.

    With `out`, each finished run is appended to `<out>/results.jsonl` at once (one line, flushed
    and fsynced; the file is never rewritten), runs whose id is already there are skipped (read
    back instead), and `<out>/<task>.png` plots the metric against `seq_len`, one line per model
    (mean over seeds, min-max band), if matplotlib is installed.

    Record fields: `id`, `version`, `task`, `task_config`, `model`, `seq_len`, `seed`, `steps`
    (asked), `steps_done`, `params` (actual count), `params_budget`, `width`, `n_layers`,
    `n_heads`, `batch_size`, `lr`, `weight_decay`, `clip`, `eval_batches`, `backend`, `metric` (its name),
    the metric under its own name (e.g. `accuracy`), `chance` (the metric of a guess that ignores
    the input), `loss` (held-out), `train_loss`, `wall_s`, `cpu_s` (CPU seconds, all threads),
    `state_bytes` (state carried per sequence after `seq_len` steps), `diverged_at`,
    `threads`, `seqmem`, `torch`, `finished` (UTC time). Non-finite numbers are written as `null`.

    Args:
        task: one of `seqmem.tasks.task_names()`.
        models: model names, from `seqmem.model_names()`.
        seq_lens: sequence lengths, positive ints.
        seeds: seeds, ints >= 0; each gives another initialisation and data order.
        steps: training steps per run.
        params: parameter budget per network (embedding and head included).
        batch_size: sequences per training step.
        lr: peak learning rate (AdamW, warm-up then cosine decay; see `seqmem.train.train`).
        weight_decay: AdamW weight decay on weight matrices.
        clip: gradient-norm clipping threshold, or `None`.
        eval_batches: held-out batches of 256 sequences per evaluation.
        task_kwargs: options of the task (e.g. `{"corpus": "book.txt"}` for `text`).
        backend: the backend to run the models on (`"torch"`, or `"numba"` for the models that
            have it; the others run on `"torch"`, and each record says which ran).
        out: directory for `results.jsonl` and the plot (created if needed); `None` keeps the
            results in memory only (no resume).
        plot: write the plot (with `out` and matplotlib).
        threads: torch intra-op threads during the sweep (restored afterwards); `None` leaves the
            current setting. Networks this small often run fastest on one thread.
        progress: a `CompareProgress` to report to.

    Returns:
        One record per run, in sweep order (runs found in `results.jsonl` included).

    Raises:
        ValueError: for an unknown task, model or backend, an empty or invalid list, a non-positive
            `steps`, `params`, `batch_size`, `eval_batches` or `lr`, bad task options, or a budget
            that some model cannot meet; all before any training.
        FileNotFoundError: for a missing corpus file (`text`).

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
    for name, value in (("steps", steps), ("params", params), ("batch_size", batch_size),
                        ("eval_batches", eval_batches)):
        _positive_int(name, value)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"compare: lr must be a positive number, got {lr!r}")
    if not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"compare: weight_decay must be >= 0, got {weight_decay!r}")
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"compare: clip must be a positive number or None, got {clip!r}")
    if threads is not None:
        _positive_int("threads", threads)
    supported = {m: model_backends(m) for m in model_names()}
    check_choice("backend", backend, sorted({b for bs in supported.values() for b in bs}), "compare")
    backends = {m: backend if backend in supported[m] else "torch" for m in models}
    task_kwargs = dict(task_kwargs or {})
    tasks: dict[int, Task] = {T: get_task(task, seq_len=T, **task_kwargs) for T in seq_lens}
    sizes = {(m, T): size_for_budget(m, params, tasks[T]) for m in models for T in seq_lens}

    out_dir = Path(out) if out is not None else None
    results_path = None
    done: dict[str, dict[str, Any]] = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        results_path = out_dir / RESULTS_FILE
        done = {rec["id"]: rec for rec in read_results(results_path)}

    specs = []
    for m in models:
        for T in seq_lens:
            for s in seeds:
                spec = {
                    "version": RECORD_VERSION,
                    "task": task,
                    "task_config": tasks[T].config(),
                    "model": m,
                    "seq_len": T,
                    "seed": s,
                    "steps": steps,
                    "params_budget": params,
                    "batch_size": batch_size,
                    "lr": float(lr),
                    "weight_decay": float(weight_decay),
                    "clip": None if clip is None else float(clip),
                    "eval_batches": eval_batches,
                    "backend": backends[m],
                }
                specs.append(spec)

    # ---------------------------------------------------------------- run
    progress = progress or CompareProgress()
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    records: list[dict[str, Any]] = []
    try:
        progress.sweep_started(len(specs))
        for index, spec in enumerate(specs):
            rid = run_id(spec)
            if rid in done:
                records.append(done[rid])
                progress.run_finished(index, len(specs), done[rid], True)
                continue
            progress.run_started(index, len(specs), spec)
            record = _run(spec, rid, tasks[spec["seq_len"]], sizes[spec["model"], spec["seq_len"]].width,
                          progress)
            if results_path is not None:
                _append_record(results_path, record)
            records.append(record)
            progress.run_finished(index, len(specs), record, False)
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
    if out_dir is not None and plot:
        plot_results(records, out_dir / f"{task}.png")
    return records


def _run(spec: dict[str, Any], rid: str, task: Task, width: int, progress: CompareProgress) -> dict[str, Any]:
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(derive_seed(spec["seed"], "init"))
        kwargs = {"backend": spec["backend"]} if spec["backend"] != "torch" else {}
        net = SequenceNetwork.for_task(spec["model"], task, width, **kwargs)
        result = train(
            net, task, spec["steps"], batch_size=spec["batch_size"], lr=spec["lr"],
            weight_decay=spec["weight_decay"], clip=spec["clip"], seed=spec["seed"],
            eval_batches=spec["eval_batches"], callback=progress.run_step,
        )
        x = task.sample(1, torch.Generator().manual_seed(0), split="eval").x
        state_bytes = net.state_bytes(x)
    metric = task.metric_name
    return {
        "id": rid,
        **spec,
        "steps_done": result.steps,
        "params": net.num_parameters(),
        "width": width,
        "n_layers": net.n_layers,
        "n_heads": net.n_heads,
        "metric": metric,
        metric: _finite(result.metric),
        "chance": task.chance,
        "loss": _finite(result.eval_loss),
        "train_loss": _finite(result.train_loss),
        "wall_s": round(result.wall_s, 3),
        "cpu_s": round(result.cpu_s, 3),
        "state_bytes": state_bytes,
        "diverged_at": result.diverged_at,
        "threads": torch.get_num_threads(),
        "seqmem": __version__,
        "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def summarize(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate records over seeds: one row per (task, model, seq_len), in first-seen order.

    Args:
        records: records from `compare` or `read_results`.

    Returns:
        Rows with `task`, `model`, `seq_len`, `metric` (name), `mean`, `min`, `max` (of the
        metric over seeds with a finite value), `loss` (mean held-out loss), `params`, `wall_s`
        (mean), `n` (seeds) and `diverged` (seeds that hit NaN/inf).
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec.get("task"), rec.get("model"), rec.get("seq_len")), []).append(rec)
    rows = []
    for (task, model, T), recs in groups.items():
        name = recs[0].get("metric", "accuracy")
        values = [r[name] for r in recs if isinstance(r.get(name), (int, float))]
        losses = [r["loss"] for r in recs if isinstance(r.get("loss"), (int, float))]
        walls = [r["wall_s"] for r in recs if isinstance(r.get("wall_s"), (int, float))]
        rows.append({
            "task": task,
            "model": model,
            "seq_len": T,
            "metric": name,
            "mean": sum(values) / len(values) if values else None,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "loss": sum(losses) / len(losses) if losses else None,
            "params": recs[0].get("params"),
            "wall_s": sum(walls) / len(walls) if walls else None,
            "n": len(recs),
            "diverged": sum(1 for r in recs if r.get("diverged_at") is not None),
        })
    return rows


def plot_results(records: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path | None:
    """Plot the metric against `seq_len`, one line per model: mean over seeds, min-max band.

    The PNG is written to a temporary file beside `path` and moved into place (`os.replace`), so a
    reader never sees half a plot. Without matplotlib, nothing is written and a note goes to stderr.

    Args:
        records: records of one task (from `compare` or `read_results`).
        path: where to write the PNG.

    Returns:
        The path written, or `None` (no matplotlib, or no records).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("seqmem: matplotlib is not installed; no plot (pip install 'seqmem[plot]')", file=sys.stderr)
        return None
    rows = summarize(records)
    if not rows:
        return None
    path = Path(path)
    metric = rows[0]["metric"]
    fig = Figure(figsize=(6.4, 4.2), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    markers = "osD^vPX*"
    for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        pts = sorted((r["seq_len"], r["mean"], r["min"], r["max"]) for r in rows
                     if r["model"] == model and r["mean"] is not None)
        if not pts:
            continue
        xs, means, lows, highs = zip(*pts, strict=True)
        size = max(4.0, 10.0 - 1.5 * i)  # earlier lines drawn larger, so overlapping ones stay visible
        (line,) = ax.plot(xs, means, marker=markers[i % len(markers)], markersize=size,
                          linewidth=max(1.0, 3.0 - 0.4 * i), label=model, zorder=2 + i)
        if any(lo != hi for lo, hi in zip(lows, highs, strict=True)):
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    first = records[0]
    chance = first.get("chance")
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance")
    seq_lens = sorted({r["seq_len"] for r in rows})
    if len(seq_lens) > 1 and seq_lens[-1] / seq_lens[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(seq_lens, [str(t) for t in seq_lens])
    ax.set_xlabel("seq_len")
    ax.set_ylabel(metric.replace("_", " "))
    seeds = len({r.get("seed") for r in records})
    ax.set_title(
        f"{first['task']}: {first.get('params_budget', '?')} params, {first.get('steps', '?')} steps, "
        f"{seeds} seed{'s' if seeds != 1 else ''}"
    )
    ax.grid(alpha=0.3)
    ax.legend()
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
