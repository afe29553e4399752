"""The `seqmem` command line (typer + rich): compare, report, bench, gradflow, playground, list.

Other modules add their commands to the same `app` with `@app.command()`. A command follows the house style:

- `seqmem --help` and `seqmem --version` import neither torch nor rich: a command imports what it needs
  (`seqmem.compare`, the registry, the tasks, rich) in its body, and its help texts name no computed model or
  task names (they point to `seqmem list`, the one place that lists them);
- every option that takes a value has a short `metavar` (N, NAME, NAMES, FILE, DIR...) and help that reads
  at 80 columns (the help is plain click text, wrapped, never cut);
- output is plain text: rich markup is off in `_stderr`, `_stdout()`, `_progress()` and `_stderr.status()`,
  so `seqmem[ray]` or a user's bracketed name prints as written (colour through `rich.text.Text` styles);
- bad input is a usage error, `raise typer.BadParameter(..., param_hint="--option")` naming what came
  (`_split`, `_names`, `_ints`, `_floats`): the usage line, then `Error: ...` on stderr, exit code 2; an error
  found later is `raise _fail(message)`: the same `Error: ...` line, exit code 2.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from . import __version__
from ._defaults import DEFAULTS
from .results import RESULTS_FILE

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn
    from rich.status import Status
    from rich.table import Table

    from .registry import ModelSpec

__all__ = ["app", "main"]

_LIST_HINT = "see `seqmem list`"
_TaskOption = Annotated[str, typer.Option("--task", "-t", metavar="NAME", help=f"The task ({_LIST_HINT}).")]
_TaskOptions = Annotated[
    list[str] | None,
    typer.Option("--task-option", "-o", metavar="KEY=VALUE", help="A task option (repeatable), e.g. -o n_tokens=4."),
]


_Context = TyperGroup.context_class
_NBSP, _NBHY = "\u00a0", "\u2011"  # no-break space and hyphen: where the help text must not wrap


class _HelpFormatter(_Context.formatter_class):
    """Click's help layout, wrapped at words only: never inside `xor-echo`, `--seq-lens` or `[default: ...]`."""

    def write_dl(self, rows: Any, *args: Any, **kwargs: Any) -> None:
        def unbreakable(text: str) -> str:
            text = re.sub(r"\[[^\[\]]*\]$", lambda m: m.group().replace(" ", _NBSP), text)
            return text.replace("-", _NBHY)

        super().write_dl([(first, unbreakable(second)) for first, second in rows], *args, **kwargs)

    def getvalue(self) -> str:
        return super().getvalue().replace(_NBSP, " ").replace(_NBHY, "-")


class _PlainContext(_Context):
    formatter_class = _HelpFormatter


class _Group(TyperGroup):
    """seqmem's command group: help wrapped at words (`_HelpFormatter`); a rejected value named in the error.

    The settings reach every command registered on `app` (their contexts are `_PlainContext`).
    """

    context_class = _PlainContext

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            command.context_class = _PlainContext

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as e:
            raise _named(e) from None


def _named(error: typer.BadParameter) -> typer.BadParameter:
    """`error` in the one style of seqmem's usage errors: the option quoted, the rejected value named.

    typer >= 0.20 checks values with pydantic, whose messages (`Input should be greater than or equal
    to 1`) do not say what came; the value is in the pydantic error the `BadParameter` was raised from.
    """
    message = error.message
    errors = getattr(error.__cause__, "errors", None)
    first = errors()[0] if callable(errors) and errors() else {}
    if "input" in first and "msg" in first:
        said, value = str(first["msg"]), first["input"]
        if said.startswith("Input "):  # 'Input should be ...' -> "'-5' should be ..."
            message = f"{value!r} {said.removeprefix('Input ')}"
        else:
            message = f"{said}, got {value!r}"
    hint = error.param_hint
    if isinstance(hint, str) and not hint.startswith("'"):
        hint = f"'{hint}'"
    return typer.BadParameter(message, ctx=error.ctx, param=error.param, param_hint=hint)


app = typer.Typer(
    name="seqmem",
    cls=_Group,
    help="How does a network remember a sequence? RNN, LSTM, GRU, attention and selective SSMs side by side.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help and errors: nothing in brackets is read as markup, text wraps
)


class _LazyConsole:
    """A plain-text `rich.console.Console` (no markup, no highlighting), made on first use.

    Importing rich costs more than `seqmem --version` may take, so the console exists only once a
    command prints. Attribute access goes to the console; `status` shows its message as plain text.
    """

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(markup=False, highlight=False, **self._settings)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)

    def __enter__(self) -> Console:
        return self.console.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.console.__exit__(*exc)

    def status(self, message: str, **kwargs: Any) -> Status:
        from rich.text import Text

        return self.console.status(Text(message), **kwargs)


_stderr = _LazyConsole(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print `Error: message` on stderr and return the exit to raise (code 2, as for a usage error)."""
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code=code)


def _stdout() -> Console:
    """The console for tables: plain text, the terminal's width (or $COLUMNS), else 160 (no truncated names)."""
    from rich.console import Console

    return Console(markup=False, width=None if Console().is_terminal or "COLUMNS" in os.environ else 160)


def _progress(*columns: str | ProgressColumn, **kwargs: Any) -> Progress:
    """A rich `Progress` on stderr whose task descriptions print as plain text."""
    from rich.progress import Progress, TextColumn

    plain = [TextColumn(c, markup=False) if isinstance(c, str) else c for c in columns]
    return Progress(*plain, console=_stderr.console, **kwargs)


def _split(value: str, option: str) -> list[str]:
    items = [v.strip() for v in value.split(",")]
    if not value.strip() or any(not v for v in items):
        raise typer.BadParameter(f"expected a comma-separated list, got {value!r}", param_hint=option)
    return items


def _names(value: str, option: str, known: list[str], what: str = "name") -> list[str]:
    """The comma-separated names in `value`, each one of `known` (else a usage error naming the unknown)."""
    items = _split(value, option)
    unknown = [v for v in items if v not in known]
    if unknown:
        raise typer.BadParameter(
            f"unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(known)}",
            param_hint=option,
        )
    return items


def _choice(value: str, option: str, known: list[str], what: str) -> str:
    """`value` if it is one of `known`, else a usage error: `unknown <what> 'value'; choose from ...`."""
    if value not in known:
        raise typer.BadParameter(f"unknown {what} {value!r}; choose from {', '.join(known)}", param_hint=option)
    return value


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _task(value: str, option: str = "--task") -> str:
    from .tasks import task_names

    return _choice(value, option, task_names(), "task")


def _models(value: str, option: str) -> list[ModelSpec]:
    """Models by registered name or import path `module:attr`, each resolved (and checked) before any work."""
    from .registry import resolve_model

    specs = []
    for item in _split(value, option):
        try:
            specs.append(resolve_model(item))
        except (ValueError, TypeError) as e:
            raise typer.BadParameter(str(e), param_hint=option) from None
    return specs


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


def _floats(value: str, option: str) -> list[float]:
    out = []
    for item in _split(value, option):
        try:
            x = float(item)
        except ValueError:
            raise typer.BadParameter(f"{item!r} is not a number", param_hint=option) from None
        if not (math.isfinite(x) and x > 0):
            raise typer.BadParameter(f"must be a positive number, got {item}", param_hint=option)
        out.append(x)
    return out


def _task_options(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs to task options; a VALUE that parses as JSON (4, 0.5, true) is taken as such."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--task-option")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


class _RichProgress:
    """Two bars on stderr (runs of the sweep; steps of the current run) and a line per finished run.

    Implements every method of `seqmem.compare.CompareProgress` (not subclassed: this module must not
    import `seqmem.compare`, and torch with it, before a command runs). On a parallel executor the step
    bar is hidden (steps are not reported across processes).
    """

    def __init__(self, progress: Progress | None, console: Console | _LazyConsole) -> None:
        self.progress = progress
        self.console = console
        self.runs: Any = None
        self.steps: Any = None
        self.parallel = False

    def sweep_started(self, total: int) -> None:
        if self.progress is not None:
            self.runs = self.progress.add_task("runs", total=total)
            self.steps = self.progress.add_task("", total=1, visible=False)

    def executor_started(self, name: str, workers: int) -> None:
        self.parallel = name != "inline"
        if self.parallel:
            where = f"{workers} worker{'s' if workers > 1 else ''}"
            self.console.print(f"running on the {name} executor ({where})")
            if self.progress is not None:
                self.progress.update(self.runs, description=f"runs ({name}, {where})")

    def run_started(self, index: int, total: int, spec: Any) -> None:
        if self.progress is not None and not self.parallel:
            label = f"  {spec.model} seq_len={spec.seq_len} seed={spec.seed}"
            self.progress.reset(self.steps, total=spec.steps, description=label, visible=True)

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
        lr = f" lr={record['lr']:g}" if isinstance(record.get("lr"), (int, float)) else ""
        line = (
            f"[{index + 1}/{total}] {record['model']} seq_len={record['seq_len']}{lr} seed={record['seed']}: "
            f"{metric} {shown} ({how}{extra})"
        )
        (self.progress.console if self.progress is not None else self.console).print(line)
        if self.progress is not None:
            self.progress.advance(self.runs)
            self.progress.update(self.steps, visible=False)


def results_table(records: list[dict[str, Any]], title: str | None = None) -> Table:
    """A rich table of records aggregated over seeds: one row per (model, seq_len, budget).

    With a learning-rate grid, each row shows the best rate of its cell (by mean held-out metric
    over seeds, `seqmem.compare.best_per_cell`) and that rate's numbers.

    Args:
        records: records from `seqmem.compare` or `seqmem.compare.read_results`.
        title: the table's title.

    Returns:
        The `rich.table.Table`: model, seq_len, (budget), metric mean (± half its min-max range
        over seeds), (best lr), held-out loss, parameters, state bytes, mean wall seconds.
    """
    from rich.table import Table

    from .report import table_rows

    headers, rows, caption = table_rows(records)
    table = Table(title=title, caption=caption or None)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _progress_bars(quiet: bool) -> tuple[Progress | None, _RichProgress | None]:
    progress = None
    if not quiet and _stderr.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn

        progress = _progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return progress, (_RichProgress(progress, _stderr) if not quiet else None)


@app.command("compare")
def compare_command(
    task: _TaskOption = DEFAULTS["task"],
    models: Annotated[
        str,
        typer.Option("--models", "-m", metavar="NAMES",
                     help=f"Comma-separated models ({_LIST_HINT}) or import paths package.module:attr to "
                     "your own model class, factory or ModelSpec."),
    ] = ",".join(DEFAULTS["models"]),
    seq_lens: Annotated[
        str, typer.Option("--seq-lens", "-T", metavar="LENS", help="Comma-separated sequence lengths.")
    ] = ",".join(map(str, DEFAULTS["seq_lens"])),
    seeds: Annotated[
        str, typer.Option("--seeds", "-s", metavar="SEEDS", help="Comma-separated seeds (ints >= 0).")
    ] = ",".join(map(str, DEFAULTS["seeds"])),
    steps: Annotated[int, typer.Option(min=1, metavar="N", help="Training steps per run.")] = DEFAULTS["steps"],
    params: Annotated[
        str,
        typer.Option(metavar="N", help="Parameter budget per network (within 10%); comma-separated for several."),
    ] = str(DEFAULTS["params"]),
    batch_size: Annotated[
        int, typer.Option(min=1, metavar="N", help="Sequences per training step.")
    ] = DEFAULTS["batch_size"],
    lr: Annotated[
        float, typer.Option(metavar="LR", help="Peak learning rate (AdamW, warm-up, cosine decay).")
    ] = DEFAULTS["lr"],
    lrs: Annotated[
        str | None,
        typer.Option(metavar="LRS", help="A learning-rate grid, e.g. 1e-3,3e-3,1e-2, in place of --lr: a run per "
                     "rate, the table shows the best per cell."),
    ] = None,
    weight_decay: Annotated[
        float, typer.Option(min=0.0, metavar="X", help="AdamW weight decay on weight matrices.")
    ] = DEFAULTS["weight_decay"],
    clip: Annotated[
        float, typer.Option(min=0.0, metavar="X", help="Gradient-norm clipping threshold (0: off).")
    ] = DEFAULTS["clip"],
    no_clip: Annotated[bool, typer.Option("--no-clip", help="No gradient clipping (as --clip 0).")] = False,
    tbptt: Annotated[
        int, typer.Option(min=0, metavar="N", help="Truncated BPTT in chunks of N steps (0: full BPTT).")
    ] = 0,
    eval_batches: Annotated[
        int, typer.Option(min=1, metavar="N", help="Held-out batches of 256 sequences per evaluation.")
    ] = DEFAULTS["eval_batches"],
    corpus: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, metavar="FILE",
                     help="UTF-8 text for --task text (default: Python's help)."),
    ] = None,
    task_option: _TaskOptions = None,
    data: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, metavar="FILE",
                     help="Your data set, in place of --task: an .npz with x (N, T, F) features or (N, T) tokens, "
                     "y (labels or targets), optional lengths, x_val, y_val."),
    ] = None,
    out: Annotated[
        Path, typer.Option(file_okay=False, metavar="DIR", help=f"Output folder: {RESULTS_FILE} and the plot.")
    ] = Path("runs/compare"),
    backend: Annotated[
        str, typer.Option(metavar="NAME", help="auto (numba where a model has kernels, else torch), torch, numba.")
    ] = "auto",
    executor: Annotated[
        str,
        typer.Option(metavar="NAME", help="Where runs train: local (this process, or a pool with --jobs > 1), "
                     "inline, process, or ray (pip install 'seqmem[ray]')."),
    ] = "local",
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", "-j", min=1, metavar="N", show_default="1 per CPU",
            help="Runs at once: pool workers or local Ray CPUs.",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(metavar="ADDRESS", help="Ray cluster to join (--executor ray; default: a local one)."),
    ] = None,
    save_weights: Annotated[
        bool,
        typer.Option("--save-weights", help="Save each network: <out>/weights/<id>.safetensors + .json."),
    ] = False,
    threads: Annotated[
        int, typer.Option(min=1, metavar="N", help="Threads (torch, numba, BLAS) per worker; 1 suits small models.")
    ] = 1,
    plot: Annotated[
        bool, typer.Option("--plot/--no-plot", help="Write <out>/<task>.png (needs matplotlib).")
    ] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Train even if the largest run's memory estimate exceeds free memory.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train each model on a task at each sequence length, budgets matched; table, JSON lines, plot.

    Runs already in <out>/results.jsonl are skipped, so an interrupted sweep (even killed) resumes
    where it stopped. `seqmem report <out>` renders the Markdown report and all plots afterwards.

    \b
    Example:
      seqmem compare --task xor-echo --models rnn,lstm --seq-lens 10,20 -j 2
    """
    from .compare import SweepError, compare
    from .executors import EXECUTORS
    from .registry import list_models

    _task(task)
    if not (math.isfinite(lr) and lr > 0):
        raise typer.BadParameter(f"must be a positive number, got {lr}", param_hint="--lr")
    lr_grid = _floats(lrs, "--lrs") if lrs is not None else None
    model_list = _models(models, "--models")
    known_backends = sorted({"auto", "torch", *(b for spec in [*list_models(), *model_list] for b in spec.backends)})
    _choice(backend, "--backend", known_backends, "backend")
    _choice(executor, "--executor", list(EXECUTORS), "executor")
    if address is not None and executor != "ray":
        raise typer.BadParameter("--address needs --executor ray", param_hint="--address")
    lens = _ints(seq_lens, "--seq-lens", 1)
    seed_list = _ints(seeds, "--seeds", 0)
    budgets = _ints(params, "--params", 1)
    task_kwargs = _task_options(task_option or [])
    if corpus is not None:
        if task != "text":
            raise typer.BadParameter("--corpus applies to --task text only", param_hint="--corpus")
        task_kwargs["corpus"] = str(corpus)
    if data is not None:
        lens_given = seq_lens != ",".join(map(str, DEFAULTS["seq_lens"]))
        try:
            from .tasks.arrays import ArrayTask

            described = ArrayTask(None, str(data), **task_kwargs)
        except (ValueError, TypeError, OSError) as e:
            raise _fail(str(e)) from None
        if lens_given and lens != [described.seq_len]:
            raise typer.BadParameter(f"the data's sequences have seq_len {described.seq_len}; leave --seq-lens out",
                                     param_hint="--seq-lens")
        lens, task = [described.seq_len], "data"
        _stderr.print(f"data: {data}: {described.describe()}")

    if jobs is None and executor == "local":  # the machine's CPUs, one run each (1 thread per worker)
        runs = len(model_list) * len(lens) * len(seed_list) * len(budgets) * len(lr_grid or [lr])
        jobs = max(1, min(_usable_cpus(), runs))
    progress, reporter = _progress_bars(quiet)
    try:
        if progress is not None:
            progress.start()
        records = compare(
            task,
            model_list,
            lens,
            seed_list,
            steps=steps,
            params=budgets[0] if len(budgets) == 1 else budgets,
            batch_size=batch_size,
            lr=lr,
            lrs=lr_grid,
            weight_decay=weight_decay,
            clip=None if no_clip or clip == 0 else clip,
            tbptt=tbptt or None,
            eval_batches=eval_batches,
            task_kwargs=task_kwargs,
            data=data,
            backend=backend,
            out=out,
            plot=plot,
            save_weights=save_weights,
            executor=executor,
            jobs=jobs,
            address=address,
            threads=threads,
            force=force,
            progress=reporter,
        )
    except SweepError as e:
        if progress is not None:
            progress.stop()
        if e.records:
            _stdout().print(results_table(e.records, title=f"seqmem compare: {task} (finished runs only)"))
        raise _fail(str(e), code=1) from None
    except (ValueError, TypeError, OSError, ImportError, RuntimeError) as e:
        raise _fail(str(e)) from None
    finally:
        if progress is not None:
            progress.stop()
    budget_text = budgets[0] if len(budgets) == 1 else "/".join(map(str, budgets))
    title = f"seqmem compare: {task}, {budget_text} params, {steps} steps"
    _stdout().print(results_table(records, title=title))
    if not quiet:
        plot_path = out / f"{task}.png"
        shown = f" and {plot_path}" if plot and plot_path.exists() else ""
        _stderr.print(f"results: {out / RESULTS_FILE}{shown}; report: seqmem report {out}")


@app.command("report")
def report_command(
    run_dir: Annotated[
        Path,
        typer.Argument(exists=True, metavar="RUN_DIR", help=f"A sweep's folder (with {RESULTS_FILE}) or that file."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(file_okay=False, metavar="DIR", help="Folder for report.md and the plots (default: RUN_DIR)."),
    ] = None,
    plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Draw the plots (needs matplotlib).")] = True,
) -> None:
    """Render a sweep's table, Markdown report and plots from its results.jsonl, without training.

    Writes report.md, <task>.png (metric vs seq_len), <task>_params.png (metric vs parameters) and
    <task>_state.png (metric vs state bytes per sequence).

    \b
    Example:
      seqmem report runs/compare
    """
    from .compare import read_results
    from .report import write_report

    records = read_results(run_dir)
    if not records:
        raise _fail(f"no records in {run_dir if run_dir.is_file() else run_dir / RESULTS_FILE}")
    by_task: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_task.setdefault(str(rec.get("task")), []).append(rec)
    for name, recs in by_task.items():
        _stdout().print(results_table(recs, title=f"seqmem report: {name} ({len(recs)} runs)"))
    import warnings

    from .results import ResultsWarning

    try:
        with warnings.catch_warnings():  # the skipped lines were named above
            warnings.simplefilter("ignore", ResultsWarning)
            path = write_report(run_dir, out, plot=plot)
    except (OSError, ValueError) as e:
        raise _fail(str(e)) from None
    _stderr.print(f"report: {path}")


@app.command("gradflow")
def gradflow_command(
    model: Annotated[
        str,
        typer.Option("--model", "--models", "-m", metavar="NAMES", help="Models, comma-separated, e.g. rnn,lstm."),
    ] = "rnn,lstm",
    task: _TaskOption = "xor-echo",
    seq_len: Annotated[int, typer.Option("--seq-len", "-T", min=1, metavar="T", help="Sequence length.")] = 50,
    task_option: _TaskOptions = None,
    width: Annotated[
        int, typer.Option(min=1, metavar="N", help="hidden_size of RNN/LSTM/GRU, d_model of the others.")
    ] = 32,
    steps: Annotated[
        int,
        typer.Option(min=0, metavar="N", help="Training steps between the two measurements (0: before only)."),
    ] = 0,
    batch_size: Annotated[int, typer.Option(min=1, metavar="N", help="Sequences per training step.")] = 64,
    lr: Annotated[float, typer.Option(metavar="LR", help="Peak learning rate of the training.")] = 3e-3,
    clip: Annotated[
        float, typer.Option(min=0.0, metavar="X", help="Gradient clipping of the training (0: off).")
    ] = 1.0,
    measure_batch: Annotated[
        int, typer.Option(min=1, metavar="N", help="Sequences in the measured batch.")
    ] = 16,
    seed: Annotated[
        int, typer.Option(min=0, metavar="N", help="Seed of initialisation, data and the measured batch.")
    ] = 0,
    out: Annotated[
        Path, typer.Option(file_okay=False, metavar="DIR", help="Folder for gradflow.json and gradflow.png.")
    ] = Path("runs/gradflow"),
    plot: Annotated[
        bool, typer.Option("--plot/--no-plot", help="Write gradflow.png (needs matplotlib).")
    ] = True,
) -> None:
    """Gradient flow through time for a model on a task batch, before and after training.

    Measures ||dL/dh_t|| (task loss) against t, ||dh_T/dh_t|| against T - t, the spectral radius of
    the recurrent matrix and the LSTM forget-gate product; plots them (log scale) and saves JSON.

    \b
    Example:
      seqmem gradflow --model rnn,lstm --seq-len 50 --width 32 --steps 300
    """
    from rich.table import Table

    from .gradflow import gradflow

    model_list = _models(model, "--model")
    _task(task)
    names = ", ".join(m.name for m in model_list)
    with _stderr.status(f"measuring {names} on {task} (T={seq_len}, {steps} training steps)"):
        try:
            result = gradflow(
                model_list, task, seq_len, width=width, steps=steps, batch_size=batch_size, lr=lr,
                clip=clip or None, measure_batch=measure_batch, seed=seed, out=out, plot=plot,
                task_kwargs=_task_options(task_option or []),
            )
        except (ValueError, TypeError) as e:
            raise _fail(str(e)) from None
    table = Table(title=f"seqmem gradflow: {task}, seq_len {seq_len}, width {width}")
    for col in ("model", "phase", "||dL/dh_0|| / ||dL/dh_T-1||", "||dh_T-1/dh_0||", "spectral radius",
                "forget-gate product", "task loss"):
        table.add_column(col, justify="left" if col in ("model", "phase") else "right")
    for name, entry in result["models"].items():
        for phase in ("before", "after"):
            rep = entry.get(phase)
            if not rep:
                continue
            g = rep["hidden_grad_norm"]
            ratio = g[0] / g[-1] if g[0] is not None and g[-1] else None
            jac = rep.get("jacobian_norm")
            rho = rep.get("spectral_radius")
            fgp = rep.get("forget_gate_product")
            table.add_row(
                name, phase, "n/a" if ratio is None else f"{ratio:.2e}",
                f"{jac[0]:.2e}" if jac and jac[0] is not None else "n/a",
                ", ".join(f"{k} {v:.2f}" for k, v in rho.items()) if rho else "n/a",
                f"{fgp[0]:.2e}" if fgp and fgp[0] is not None else "n/a",
                f"{rep['task_loss']:.3f}" if rep.get("task_loss") is not None else "n/a",
            )
    _stdout().print(table)
    png = out / "gradflow.png"
    _stderr.print(f"results: {out / 'gradflow.json'}" + (f" and {png}" if plot and png.exists() else ""))


@app.command("playground")
def playground_command(
    models: Annotated[
        str, typer.Option("--models", "-m", metavar="NAMES", help="Comma-separated models.")
    ] = "rnn,lstm",
    seq_len: Annotated[
        int, typer.Option("--seq-len", "-T", min=2, metavar="T", help="XOR-echo string length.")
    ] = 20,
    steps: Annotated[int, typer.Option(min=1, metavar="N", help="Training steps per model.")] = 400,
    params: Annotated[int, typer.Option(min=1, metavar="N", help="Parameter budget per network.")] = 10_000,
    lr: Annotated[float, typer.Option(metavar="LR", help="Peak learning rate.")] = 1e-2,
    examples: Annotated[int, typer.Option(min=1, metavar="N", help="Held-out strings to trace.")] = 2,
    seed: Annotated[int, typer.Option(min=0, metavar="N", help="Seed.")] = 0,
    out: Annotated[
        Path, typer.Option(file_okay=False, metavar="DIR", help="Folder for playground.json and playground.png.")
    ] = Path("runs/playground"),
    plot: Annotated[
        bool, typer.Option("--plot/--no-plot", help="Write playground.png (needs matplotlib).")
    ] = True,
) -> None:
    """Train an Elman RNN and an LSTM on XOR-echo; show each one's confidence in the answer, token by token.

    After each prefix, the probability the network gives to the true label (via SequenceNetwork.step).

    \b
    Example:
      seqmem playground --seq-len 20 --steps 400
    """
    from rich.table import Table
    from rich.text import Text

    from .playground import playground

    model_list = _models(models, "--models")
    with _stderr.status(f"training {', '.join(m.name for m in model_list)} on xor-echo (T={seq_len}, {steps} steps)"):
        try:
            result = playground(model_list, seq_len, steps=steps, params=params, lr=lr, examples=examples,
                                seed=seed, out=out, plot=plot)
        except (ValueError, TypeError) as e:
            raise _fail(str(e)) from None
    console = _stdout()
    for k, ex in enumerate(result["examples"]):
        kind = "last == first" if ex["label"] else "last != first"
        table = Table(title=f"example {k + 1}: label {ex['label']} ({kind}); P(true label) after each symbol")
        table.add_column("model")
        for t, tok in enumerate(ex["tokens"]):
            table.add_column(f"{t}:{tok}", justify="right")
        for m, probs in ex["confidence"].items():
            cells = [Text(f"{p:.2f}", style="green" if p > 0.5 else "red") for p in probs]
            acc = result["models"][m]["accuracy"]
            table.add_row(f"{m} (acc {'n/a' if acc is None else f'{acc:.2f}'})", *cells)
        console.print(table)
    png = out / "playground.png"
    _stderr.print(f"results: {out / 'playground.json'}" + (f" and {png}" if plot and png.exists() else ""))


@app.command("bench")
def bench_command(
    models: Annotated[
        str | None,
        typer.Option("--models", "-m", metavar="NAMES", show_default="every registered model",
                     help=f"Comma-separated models ({_LIST_HINT}) or import paths package.module:attr."),
    ] = None,
    backends: Annotated[
        str | None,
        typer.Option(metavar="NAMES", show_default="every one a model has",
                     help="Comma-separated backends to measure, e.g. torch,numba (--baselines adds torch.nn's)."),
    ] = None,
    modes: Annotated[
        str, typer.Option(metavar="NAMES", help="Comma-separated modes: forward, train, step.")
    ] = "forward,train,step",
    seq_lens: Annotated[
        str, typer.Option("--seq-lens", "-T", metavar="LENS", help="Comma-separated sequence lengths.")
    ] = "64,256,1024",
    batch_sizes: Annotated[
        str, typer.Option(metavar="SIZES", help="Comma-separated batch sizes (step mode uses 1).")
    ] = "32",
    width: Annotated[
        int, typer.Option(min=1, metavar="N", help="hidden_size of RNN/LSTM/GRU, d_model of the others.")
    ] = 64,
    repeats: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", show_default="7, fewer for long cases", help="Timed runs per case (median)."),
    ] = None,
    threads: Annotated[int, typer.Option(min=1, metavar="N", help="Threads of torch, numba and BLAS.")] = 1,
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
        Path | None, typer.Option("--json", dir_okay=False, metavar="FILE", help="Write the records as JSON.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(file_okay=False, metavar="DIR", help="Folder for the log-log plots (needs matplotlib)."),
    ] = None,
) -> None:
    """Time, peak memory and state size against seq_len, for every model x backend and torch.nn baselines.

    \b
    Example:
      seqmem bench --models lstm,mamba --seq-lens 64,256,1024 --out runs/bench
    """
    from rich.progress import TimeElapsedColumn
    from rich.table import Table
    from rich.text import Text

    from .bench import bench, format_bytes, format_seconds, plot_bench, write_json
    from .bench import compare_baselines as measure_goals
    from .registry import list_models

    model_list = _models(models, "--models") if models is not None else list_models()
    mode_list = _names(modes, "--modes", ["forward", "train", "step"])
    lens = _ints(seq_lens, "--seq-lens", 1)
    batches = _ints(batch_sizes, "--batch-sizes", 1)
    known_backends = sorted({b for spec in model_list for b in spec.backends})
    backend_list = _names(backends, "--backends", known_backends, "backend") + ["oneDNN"] if backends else None
    progress = _progress("{task.description}", TimeElapsedColumn(), transient=True)
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
    console = _stdout()
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
                "yes" if g.met else Text("no", style="red"),
                g.note,
            )
        console.print(gt)
    if json_path is not None:
        write_json(records, json_path)
        if goals:
            write_json(goals, json_path.with_name(json_path.stem + "_goals.json"))
        _stderr.print(f"records: {json_path}")
    if out is not None:
        try:
            paths = plot_bench(records, out)
        except ImportError as e:
            _stderr.print(f"no plots: {e}")
        else:
            _stderr.print("plots: " + ", ".join(map(str, paths)))


@app.command("generate")
def generate_command(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="A network saved by `seqmem compare --task text --save-weights`: its .safetensors, .json or stem."
        ),
    ],
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", metavar="TEXT", help="The text to continue (at least one character).")
    ],
    tokens: Annotated[int, typer.Option("--tokens", "-n", min=0, metavar="N", help="Characters to generate.")] = 200,
    temperature: Annotated[
        float,
        typer.Option(min=0.0, metavar="X", help="Sampling temperature: below 1 sharper, above 1 flatter; 0: greedy."),
    ] = 0.8,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, metavar="K", help="Sample among the k most likely characters only.")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, metavar="N", help="Seed of the sampling.")] = 0,
) -> None:
    """Sample text from a character-level language model, one token per stream push; print the text and tokens/s.

    The layers that have a numba backend stream on it (one compiled call per token for the whole
    network). The text goes to stdout, the speed to stderr.

    Example: seqmem generate runs/text/weights/<id>.safetensors --prompt "The " --tokens 200 --top-k 10
    """
    import sys

    from .generate import generate, load_char_lm

    try:
        net, task = load_char_lm(checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from None

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    write(prompt)
    try:
        result = generate(net, task, prompt, tokens, temperature=temperature, top_k=top_k, seed=seed, on_text=write)
    except ValueError as e:
        raise _fail(str(e)) from None
    write("\n")
    how = "fused numba stream" if result.fused else "torch stream"
    _stderr.print(
        f"{result.tokens} tokens in {result.seconds:.3f} s: {result.tokens_per_second:,.0f} tokens/s "
        f"({net.model}, {net.num_parameters():,} parameters, {how})",
        highlight=False,
        soft_wrap=True,
    )


@app.command("list")
def list_command() -> None:
    """List the models and tasks, with one line each."""
    from rich.table import Table

    from .registry import list_models, list_tasks

    console = _stdout()
    models = Table(title="models (seqmem.build(name, ...))")
    models.add_column("name")
    models.add_column("description")
    models.add_column("backends")
    for spec in list_models():
        models.add_row(spec.name, spec.description, ", ".join(spec.backends))
    tasks = Table(title="tasks (seqmem.tasks.get_task(name, seq_len))")
    tasks.add_column("name")
    tasks.add_column("description")
    for task_spec in list_tasks():
        tasks.add_row(task_spec.name, task_spec.description)
    console.print(models)
    console.print(tasks)


@app.command("warmup")
def warmup_command(
    models: Annotated[
        str | None,
        typer.Option("--models", "-m", metavar="NAMES",
                     help="Comma-separated models (default: every model with a numba backend)."),
    ] = None,
    dtypes: Annotated[
        str, typer.Option(metavar="DTYPES", help="Comma-separated dtypes: float32, float64.")
    ] = "float32,float64",
) -> None:
    """Compile the numba kernels ahead of time (once per machine; later processes load them from the cache).

    Example: seqmem warmup --models lstm,mamba --dtypes float32
    """
    from ._warmup import numba_models, warmup

    model_list = _names(models, "--models", numba_models()) if models is not None else None
    dtype_list = _names(dtypes, "--dtypes", ["float32", "float64"])
    with _stderr.status("compiling numba kernels") as status:
        records = warmup(model_list, dtype_list, progress=lambda d: status.update(f"compiling numba kernels: {d}"))
    for r in records:
        done = f"compiled {r.compiled} kernels" if r.compiled else "loaded from the cache"
        typer.echo(f"{r.model:<12} {r.dtype:<8} {r.seconds:6.1f} s  {done}")


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


def _format_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"seqmem: warning: {message}\n"


def main() -> None:
    """Entry point of the `seqmem` command (warnings print as one plain `seqmem: warning:` paragraph)."""
    import warnings

    warnings.formatwarning = _format_warning
    app()
