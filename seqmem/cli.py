"""The `seqmem` command line (typer + rich): `seqmem compare`, `seqmem list`, and more.

Other modules add their commands to the same `app` with `@app.command()`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .compare import DEFAULTS, RESULTS_FILE, CompareProgress, compare, model_backends, summarize
from .registry import model_names
from .tasks import TASKS, task_names

__all__ = ["app", "main"]

app = typer.Typer(
    name="seqmem",
    help="How does a network remember a sequence? RNN, LSTM, GRU, attention and selective SSMs side by side.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MODEL_DESCRIPTIONS = {
    "rnn": "Elman RNN, h = tanh(W x + U h + b): one state vector, gradients vanish through time",
    "lstm": "LSTM (gates i, f, g, o): an additive cell state, the 'constant error carousel'",
    "gru": "GRU (gates r, z, n): interpolates between the old state and a candidate",
    "transformer": "causal attention with rotary positions: keeps every past step in a KV cache",
    "mamba": "selective state-space model (Mamba, S6): input-dependent step size, B and C",
    "s4d": "the LTI ablation of mamba: fixed step size, B and C (a long convolution)",
}

_stderr = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    """Print a one-line error on stderr and return the exit (code 2, as for a usage error)."""
    _stderr.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _split(value: str, option: str) -> list[str]:
    items = [v.strip() for v in value.split(",")]
    if not value.strip() or any(not v for v in items):
        raise typer.BadParameter(f"expected a comma-separated list, got {value!r}", param_hint=option)
    return items


def _names(value: str, option: str, known: list[str]) -> list[str]:
    items = _split(value, option)
    unknown = [v for v in items if v not in known]
    if unknown:
        raise typer.BadParameter(
            f"unknown name{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(known)}",
            param_hint=option,
        )
    return items


def _ints(value: str, option: str, minimum: int) -> list[int]:
    out = []
    for item in _split(value, option):
        try:
            n = int(item)
        except ValueError:
            raise typer.BadParameter(f"{item!r} is not an integer", param_hint=option) from None
        if n < minimum:
            raise typer.BadParameter(f"{n} is below the minimum {minimum}", param_hint=option)
        out.append(n)
    return out


class _RichProgress(CompareProgress):
    """Two bars on stderr (runs of the sweep; steps of the current run) and a line per finished run."""

    def __init__(self, progress: Progress | None, console: Console) -> None:
        self.progress = progress
        self.console = console
        self.runs: Any = None
        self.steps: Any = None

    def sweep_started(self, total: int) -> None:
        if self.progress is not None:
            self.runs = self.progress.add_task("runs", total=total)
            self.steps = self.progress.add_task("", total=1, visible=False)

    def run_started(self, index: int, total: int, spec: dict[str, Any]) -> None:
        if self.progress is not None:
            label = f"  {spec['model']} seq_len={spec['seq_len']} seed={spec['seed']}"
            self.progress.reset(self.steps, total=spec["steps"], description=label, visible=True)

    def run_step(self, step: int, steps: int, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.steps, completed=step)

    def run_finished(self, index: int, total: int, record: dict[str, Any], resumed: bool) -> None:
        metric = record.get("metric", "accuracy")
        value = record.get(metric)
        shown = "n/a" if value is None else f"{value:.3f}"
        how = "already done" if resumed else f"{record.get('wall_s', 0):.1f} s"
        if record.get("backend", "torch") != "torch":
            how += f", {record['backend']}"
        extra = f", diverged at step {record['diverged_at']}" if record.get("diverged_at") else ""
        line = (
            f"[{index + 1}/{total}] {record['model']} seq_len={record['seq_len']} seed={record['seed']}: "
            f"{metric} {shown} ({how}{extra})"
        )
        (self.progress.console if self.progress is not None else self.console).print(line, highlight=False)
        if self.progress is not None:
            self.progress.advance(self.runs)
            self.progress.update(self.steps, visible=False)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def results_table(records: list[dict[str, Any]], title: str | None = None) -> Table:
    """A rich table of records aggregated over seeds: one row per (model, seq_len).

    Args:
        records: records from `seqmem.compare` or `seqmem.compare.read_results`.
        title: the table's title.

    Returns:
        The `rich.table.Table`: model, seq_len, metric mean (± half its min-max range over seeds),
        held-out loss, parameters, mean wall seconds.
    """
    rows = summarize(records)
    metric = rows[0]["metric"] if rows else "metric"
    table = Table(title=title)
    table.add_column("model")
    table.add_column("seq_len", justify="right")
    table.add_column(metric.replace("_", " "), justify="right")
    table.add_column("loss", justify="right")
    table.add_column("params", justify="right")
    table.add_column("wall s", justify="right")
    multi = any(r["n"] > 1 for r in rows)
    for r in rows:
        value = _fmt(r["mean"])
        if multi and r["mean"] is not None:
            value += f" ± {_fmt((r['max'] - r['min']) / 2)}"
        if r["diverged"]:
            value += f" ({r['diverged']} diverged)"
        table.add_row(
            r["model"], str(r["seq_len"]), value, _fmt(r["loss"]), str(r["params"]), _fmt(r["wall_s"], 1)
        )
    if multi:
        n = max(r["n"] for r in rows)
        table.caption = f"mean ± half the min-max range over {n} seeds"
    return table


@app.command("compare")
def compare_command(
    task: Annotated[str, typer.Option("--task", "-t", help=f"Task: {', '.join(task_names())}.")] = DEFAULTS[
        "task"
    ],
    models: Annotated[
        str, typer.Option("--models", "-m", help=f"Comma-separated models from {', '.join(model_names())}.")
    ] = ",".join(DEFAULTS["models"]),
    seq_lens: Annotated[
        str, typer.Option("--seq-lens", "-T", help="Comma-separated sequence lengths.")
    ] = ",".join(map(str, DEFAULTS["seq_lens"])),
    seeds: Annotated[
        str, typer.Option("--seeds", "-s", help="Comma-separated seeds (ints >= 0).")
    ] = ",".join(map(str, DEFAULTS["seeds"])),
    steps: Annotated[int, typer.Option(min=1, help="Training steps per run.")] = DEFAULTS["steps"],
    params: Annotated[int, typer.Option(min=1, help="Parameter budget per network (within 10%).")] = DEFAULTS[
        "params"
    ],
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per training step.")] = DEFAULTS[
        "batch_size"
    ],
    lr: Annotated[
        float, typer.Option(help="Peak learning rate (AdamW, warm-up then cosine decay).")
    ] = DEFAULTS["lr"],
    corpus: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="UTF-8 text file for --task text (default: Python's help)."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(file_okay=False, help=f"Output directory: {RESULTS_FILE} (resumable) and a plot.")
    ] = Path("runs/compare"),
    backend: Annotated[
        str, typer.Option(help="Backend: torch, or numba for the models that have it (the others use torch).")
    ] = "torch",
    threads: Annotated[int, typer.Option(min=1, help="Torch threads (small models run fastest on 1).")] = 1,
    plot: Annotated[
        bool, typer.Option("--plot/--no-plot", help="Write <out>/<task>.png (needs matplotlib).")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train each model on a task at each sequence length, budgets matched; table, JSON lines, plot.

    Runs already in <out>/results.jsonl are skipped, so an interrupted sweep resumes where it stopped.

    Example: seqmem compare --task xor-echo --models rnn,lstm --seq-lens 10,20 --seeds 0,1 --out runs/a
    """
    if task not in task_names():
        raise typer.BadParameter(
            f"unknown task {task!r}; choose from {', '.join(task_names())}", param_hint="--task"
        )
    if not (math.isfinite(lr) and lr > 0):
        raise typer.BadParameter(f"must be a positive number, got {lr}", param_hint="--lr")
    model_list = _names(models, "--models", model_names())
    known_backends = sorted({b for m in model_names() for b in model_backends(m)})
    if backend not in known_backends:
        raise typer.BadParameter(
            f"unknown backend {backend!r}; choose from {', '.join(known_backends)}", param_hint="--backend"
        )
    lens = _ints(seq_lens, "--seq-lens", 1)
    seed_list = _ints(seeds, "--seeds", 0)
    task_kwargs: dict[str, Any] = {}
    if corpus is not None:
        if task != "text":
            raise typer.BadParameter("--corpus applies to --task text only", param_hint="--corpus")
        task_kwargs["corpus"] = str(corpus)

    progress = None
    if not quiet and _stderr.is_terminal:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=_stderr,
        )
    reporter = _RichProgress(progress, _stderr) if not quiet else None
    try:
        if progress is not None:
            progress.start()
        records = compare(
            task,
            model_list,
            lens,
            seed_list,
            steps=steps,
            params=params,
            batch_size=batch_size,
            lr=lr,
            task_kwargs=task_kwargs,
            backend=backend,
            out=out,
            plot=plot,
            threads=threads,
            progress=reporter,
        )
    except (ValueError, TypeError, OSError) as e:
        raise _fail(str(e)) from None
    finally:
        if progress is not None:
            progress.stop()
    Console().print(results_table(records, title=f"seqmem compare: {task}, {params} params, {steps} steps"))
    if not quiet:
        plot_path = out / f"{task}.png"
        shown = f" and {plot_path}" if plot and plot_path.exists() else ""
        _stderr.print(f"results: {out / RESULTS_FILE}{shown}", highlight=False)


@app.command("bench")
def bench_command(
    models: Annotated[
        str, typer.Option("--models", "-m", help=f"Comma-separated models from {', '.join(model_names())}.")
    ] = ",".join(model_names()),
    backends: Annotated[
        str | None, typer.Option(help="Comma-separated backends to measure (default: every one a model has).")
    ] = None,
    modes: Annotated[
        str, typer.Option(help="Comma-separated modes: forward, train, step.")
    ] = "forward,train,step",
    seq_lens: Annotated[str, typer.Option("--seq-lens", "-T", help="Comma-separated sequence lengths.")] = (
        "64,256,1024"
    ),
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes (step mode uses 1).")] = "32",
    width: Annotated[
        int, typer.Option(min=1, help="hidden_size of RNN/LSTM/GRU, d_model of the others.")
    ] = 64,
    repeats: Annotated[int | None, typer.Option(min=1, help="Timed runs per case (median).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="Torch and numba threads.")] = 1,
    baselines: Annotated[
        bool,
        typer.Option("--baselines/--no-baselines", help="Include torch.nn.RNN/LSTM/GRU and their cells."),
    ] = True,
    memory: Annotated[bool, typer.Option("--memory/--no-memory", help="Measure peak memory.")] = True,
    quick: Annotated[
        bool, typer.Option("--quick", help="A small grid (a smoke test, under 2 minutes).")
    ] = False,
    compare_baselines: Annotated[
        bool, typer.Option("--compare-baselines", help="Also measure the numba speed goals against torch.nn.")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", dir_okay=False, help="Write the records as JSON.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(file_okay=False, help="Folder for the log-log plots (needs matplotlib).")
    ] = None,
) -> None:
    """Time, peak memory and state size against seq_len, for every model x backend and torch.nn baselines.

    Example: seqmem bench --models lstm,transformer,mamba --seq-lens 64,256,1024 --out runs/bench
    """
    from .bench import bench, format_bytes, format_seconds, plot_bench, write_json
    from .bench import compare_baselines as measure_goals

    model_list = _names(models, "--models", model_names())
    mode_list = _names(modes, "--modes", ["forward", "train", "step"])
    lens = _ints(seq_lens, "--seq-lens", 1)
    batches = _ints(batch_sizes, "--batch-sizes", 1)
    backend_list = _split(backends, "--backends") + ["oneDNN"] if backends else None
    progress = Progress(
        TextColumn("{task.description}"), TimeElapsedColumn(), console=_stderr, transient=True
    )
    with progress:
        job = progress.add_task("bench")
        try:
            records = bench(
                model_list,
                backends=backend_list,
                modes=mode_list,
                seq_lens=lens,
                batch_sizes=batches,
                width=width,
                repeats=repeats,
                num_threads=threads,
                baselines=baselines,
                memory=memory,
                quick=quick,
                progress=lambda d: progress.update(job, description=d),
            )
        except (ValueError, TypeError) as e:
            raise _fail(str(e)) from None
    table = Table(title=f"seqmem bench ({threads} thread{'s' if threads > 1 else ''})")
    for col, justify in (
        ("model/backend", "left"),
        ("mode", "left"),
        ("batch", "right"),
        ("seq_len", "right"),
        ("time (per step in step mode)", "right"),
        ("peak memory", "right"),
        ("state", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)
    for r in records:
        shown = format_seconds(r.median_s)
        table.add_row(
            r.label,
            r.mode,
            str(r.batch_size),
            str(r.seq_len),
            shown,
            format_bytes(r.peak_bytes),
            format_bytes(r.state_bytes),
        )
    console = Console(width=None if Console().is_terminal else 160)
    console.print(table)
    goals = []
    if compare_baselines:
        with _stderr.status("measuring the numba speed goals against torch.nn"):
            goals = measure_goals(num_threads=threads, quick=quick)
        gt = Table(title="numba speed goals (ratios baseline / seqmem, one run)")
        for col in ("case", "seqmem", "baseline", "speed-up", "goal", "met", "note"):
            gt.add_column(col)
        for g in goals:
            gt.add_row(
                g.name,
                format_seconds(g.ours_s),
                format_seconds(g.baseline_s),
                f"{g.speedup:.2f}x",
                f">= {g.goal:g}x",
                "yes" if g.met else "[red]no[/]",
                g.note,
            )
        console.print(gt)
    if json_path is not None:
        write_json(records, json_path)
        if goals:
            write_json(goals, json_path.with_name(json_path.stem + "_goals.json"))
        _stderr.print(f"records: {json_path}", highlight=False)
    if out is not None:
        try:
            paths = plot_bench(records, out)
        except ImportError as e:
            _stderr.print(f"[yellow]no plots:[/] {e}", highlight=False)
        else:
            _stderr.print("plots: " + ", ".join(map(str, paths)), highlight=False)


@app.command("list")
def list_command() -> None:
    """List the models and tasks, with one line each."""
    console = Console()
    models = Table(title="models (seqmem.build(name, ...))")
    models.add_column("name")
    models.add_column("description")
    for name in model_names():
        models.add_row(name, MODEL_DESCRIPTIONS.get(name, ""))
    tasks = Table(title="tasks (seqmem.tasks.get_task(name, seq_len))")
    tasks.add_column("name")
    tasks.add_column("description")
    for name in task_names():
        tasks.add_row(name, TASKS[name].description)
    console.print(models)
    console.print(tasks)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"seqmem {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """How does a network remember a sequence? RNN, LSTM, GRU, attention and selective SSMs, side by side."""


def main() -> None:
    """Entry point of the `seqmem` command."""
    app()
