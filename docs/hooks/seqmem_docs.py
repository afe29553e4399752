"""mkdocs hooks of the seqmem site: everything generated at build time, so nothing goes stale.

- `on_config`: puts the repository first on `sys.path` and `PYTHONPATH`, so mkdocstrings and the notebook
  kernels (mkdocs-jupyter runs them in subprocesses) import this checkout of seqmem.
- `on_files`: adds the notebooks of `notebooks/*.py` (at the repository root) as pages, to be
  executed and rendered by mkdocs-jupyter, and the figures of the Concepts pages (`_figures.py`) and of
  the committed results (`docs/results/`) as generated PNG files under `figures/`.
- `on_page_markdown`: expands the `<!-- seqmem:NAME key=value ... -->` markers of the pages into
  Markdown (tables of results, the CLI reference, the parameter-count table, the API index), and
  replaces a `::: module` block whose module does not exist in this checkout by a visible note.
- `on_post_page`: removes the MathJax loader (a CDN script) that nbconvert puts in notebook pages;
  the site renders all math with the KaTeX vendored in `docs/assets/katex`.

Markers (in the pages' Markdown; paths relative to `docs/`):

| marker | renders |
| --- | --- |
| `<!-- seqmem:summary [T=1024] [bench=...] [xor=...] [copy=...] [selective=...] -->` | one row per model |
| `<!-- seqmem:tasks dirs="Selective copy=results/a;Recall=results/b" [models=...] [bench=...] [T=1024] -->` | model x task |
| `<!-- seqmem:bench file=results/bench.json cmd="..." [mode=...] [show=...] [collapsed=true] -->` | bench tables |
| `<!-- seqmem:bench-plot file=results/bench.json -->` | `seqmem.bench.plot_bench` figures |
| `<!-- seqmem:speedups file=results/bench.json -->` | numba vs torch, and vs torch.nn, per case |
| `<!-- seqmem:targets file=results/targets.json cmd="..." -->` | `TargetRecord` table |
| `<!-- seqmem:compare dir=results/compare-xor-echo cmd="..." [mse=0.01] [plot=state] -->` | table over seeds + plot |
| `<!-- seqmem:solved dir=results/claims/copy [mse=0.01] -->` | longest seq_len most seeds solve |
| `<!-- seqmem:success-rate dir=results/claims/forget-init cmd="..." -->` | solved seeds per model and length |
| `<!-- seqmem:cell dir=results/claims/adding-long model=lstm T=1000 [budget=N] [mse=0.01] -->` | one cell, inline |
| `<!-- seqmem:gradflow dir=results/claims/gradflow cmd="..." -->` | gradient decay table (over seeds) + plot |
| `<!-- seqmem:cli -->` | every command and option of `seqmem.cli:app` |
| `<!-- seqmem:param-table -->` | parameter counts of RNN/GRU/LSTM against the formulas |
| `<!-- seqmem:output file=results/getting-started/compare.txt -->` | a command's committed output |
| `<!-- seqmem:api-rest -->` | `::: seqmem.NAME` for every name of `seqmem.__all__` not yet on the page |

The command shown beside a result is the marker's `cmd`, unless a sidecar file records the one that
was really run: `<file>.cmd` for a file, `<dir>/command.txt` for a compare folder.

Sweep markers summarise over seeds with `scripts/claims.py`'s tables (`seqmem.summary`): the mean of the
held-out metric with its 95% interval and the seeds that solved the cell (`seqmem.summary.SOLVED`; `mse=`
replaces the adding problem's threshold). A gradflow folder holds `gradflow.json` (one seed) or
`seed-*/gradflow.json` (one per seed). A marker whose results are missing renders a "Not yet measured" note
(`cell`: *not measured yet*; any marker with `missing=skip`: nothing, for a second marker on the same
results), so a page builds before and after its sweeps run.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import inspect
import json
import logging
import math
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

HOOKS = Path(__file__).resolve().parent
DOCS = HOOKS.parent
ROOT = DOCS.parent


def _paths() -> None:
    # (mkdocs puts a hook's folder on sys.path only while it imports the hook)
    for p in (str(HOOKS), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)


_paths()

log = logging.getLogger("mkdocs.hooks.seqmem")

MARKER = re.compile(r"<!--\s*seqmem:([\w-]+)(.*?)-->", re.S)
API_BLOCK = re.compile(r"^:::\s+([\w.]+)\s*$((?:\n[ \t]+.*$)*)", re.M)

_generated: dict[str, str] = {}  # marker key -> Markdown of generated figures (bench/compare plots)


# ------------------------------------------------------------------------------------------- config


def on_config(config: Any) -> Any:
    _paths()
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # Notebook kernels inherit this environment: make sure their figures are embedded in the page
    # (a non-interactive MPLBACKEND such as Agg, set in a CI environment, would drop them).
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    # The notebooks' models are tiny: one intra-op thread is fastest, and fair on a shared machine.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return config


# -------------------------------------------------------------------------------------------- files
def _add_generated(files: Files, config: Any, uri: str, content: bytes) -> None:
    old = files.get_file_from_path(uri)
    if old is not None:
        files.remove(old)
    files.append(File.generated(config, uri, content=content))


@event_priority(100)  # before mkdocs-jupyter's on_files, which wraps the notebooks it includes
def on_files(files: Files, config: Any) -> Files:
    # The notebooks live at the repository root (`notebooks/*.py`, jupytext percent format). Each is
    # also offered for download as a Jupyter notebook, beside its page (mkdocs-jupyter's
    # `include_source` copies the `.py` file there).
    import jupytext

    for nb in sorted((ROOT / "notebooks").glob("*.py")):
        uri = f"notebooks/{nb.name}"
        if files.get_file_from_path(uri) is None:
            files.append(File(uri, str(ROOT), config.site_dir, config.use_directory_urls))
        ipynb = jupytext.writes(jupytext.read(nb), fmt="ipynb")
        _add_generated(files, config, f"notebooks/{nb.stem}/{nb.stem}.ipynb", ipynb.encode("utf-8"))

    import _figures
    import torch

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is fastest, and fair to a shared machine
    try:
        for name, make in _figures.FIGURES.items():
            t = time.perf_counter()
            _add_generated(files, config, f"figures/{name}", make())
            log.debug("figure %s: %.1f s", name, time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    log.info("seqmem: computed %d concept figures in %.1f s", len(_figures.FIGURES), time.perf_counter() - t0)

    _generated.clear()
    _plot_results(files, config)
    return files


BENCH_TABS = {  # `plot_bench`'s files, in the order it writes them -> the tab that shows each
    "bench_time_forward": "time: forward",
    "bench_time_train": "time: train",
    "bench_time_step": "time: streaming step",
    "bench_memory_forward": "memory: forward",
    "bench_memory_train": "memory: train",
    "bench_state": "state",
}


def _plot_results(files: Files, config: Any) -> None:
    """Plots of the committed results, through seqmem's own plotting functions."""
    results = DOCS / "results"
    bench = results / "bench.json"
    if bench.is_file():
        from seqmem.bench import BenchRecord, plot_bench

        records = [BenchRecord(**r) for r in _load_json_list(bench) if "mode" in r]
        with tempfile.TemporaryDirectory() as tmp:
            tabs = []
            for path in plot_bench(records, tmp) if records else []:
                uri = f"figures/{path.name}"
                _add_generated(files, config, uri, path.read_bytes())
                tab = BENCH_TABS.get(path.stem, path.stem.removeprefix("bench_").replace("_", " "))
                tabs.append(f'=== "{tab}"\n\n    ![{path.stem}](/{uri})\n')
            _generated["bench"] = "\n".join(tabs)
    for jsonl in sorted(results.glob("**/results.jsonl")):
        rel = jsonl.parent.relative_to(results).as_posix()  # e.g. compare-xor-echo, claims/adding
        from seqmem.compare import plot_results, read_results
        from seqmem.report import plot_metric_vs

        name = rel.replace("/", "-")
        records = read_results(jsonl)
        with tempfile.TemporaryDirectory() as tmp:
            out = plot_results(records, Path(tmp) / f"{name}.png")
            if out is not None:
                uri = f"figures/{name}.png"
                _add_generated(files, config, uri, out.read_bytes())
                _generated[f"compare:{rel}"] = f"![{name}](/{uri})\n"
            if len({r.get("params_budget") for r in records}) > 1:  # the metric against the state's size
                out = plot_metric_vs(records, Path(tmp) / f"{name}-state.png", "state_bytes")
                if out is not None:
                    uri = f"figures/{name}-state.png"
                    _add_generated(files, config, uri, out.read_bytes())
                    _generated[f"compare-state:{rel}"] = f"![{name}: metric against state size](/{uri})\n"
    folders = {(r.parent.parent if r.parent.name.startswith("seed-") else r.parent)
               for r in results.glob("**/gradflow.json")}
    for folder in sorted(folders):
        from seqmem.gradflow import plot_gradflow

        rel = folder.relative_to(results).as_posix()
        first = _claims_script().read_gradflow(folder)[0]  # one figure per folder: its first seed's
        uri = f"figures/{rel.replace('/', '-')}-gradflow.png"
        with tempfile.TemporaryDirectory() as tmp:
            out = plot_gradflow(first, Path(tmp) / "gradflow.png")
            if out is not None:
                _add_generated(files, config, uri, out.read_bytes())
                seed = first.get("config", {}).get("seed")
                _generated[f"gradflow:{rel}"] = f"![gradient flow (seed {seed})](/{uri})\n"


# ------------------------------------------------------------------------------------------ markers
def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    depth = page.file.src_uri.count("/")
    prefix = "../" * depth if depth else ""

    def expand(match: re.Match[str]) -> str:
        name, args = match.group(1), _parse_args(match.group(2))
        handler = MARKERS.get(name)
        if handler is None:
            log.warning("%s: unknown marker seqmem:%s", page.file.src_uri, name)
            return match.group(0)
        out = handler(args, markdown=markdown)
        return out.replace("](/figures/", f"]({prefix}figures/")

    markdown = MARKER.sub(expand, markdown)
    return API_BLOCK.sub(_check_api_block, markdown)


def _parse_args(text: str) -> dict[str, str]:
    args = {}
    for token in shlex.split(text):
        key, _, value = token.partition("=")
        args[key] = value
    return args


def _command(args: dict[str, str], sidecar: Path) -> str:
    cmd = sidecar.read_text().strip() if sidecar.is_file() else args.get("cmd", "")
    return f"```bash\n{_shell_lines(cmd)}\n```\n" if cmd else ""


def _shell_lines(cmd: str, width: int = 78) -> str:
    """A long command on several lines, broken before its options with `\\` (it fits the column and
    still pastes into a shell); one already broken by hand is left as it is."""
    if len(cmd) <= width or "\n" in cmd:
        return cmd
    head, *options = re.split(r" (?=--?[A-Za-z])", cmd)
    lines = [head]
    for opt in options:
        if len(lines[-1]) + 1 + len(opt) <= width - 2:
            lines[-1] += " " + opt
        else:
            lines.append("    " + opt)
    return " \\\n".join(lines)


def _missing(what: str, rel: str, args: dict[str, str]) -> str:
    if args.get("missing") == "skip":  # a second marker on the same results: the first one says it
        return ""
    cmd = args.get("cmd", "")
    how = f" Run\n\n    ```bash\n    {cmd}\n    ```\n\n    and commit" if cmd else " Commit"
    return (
        f'!!! note "Not yet measured"\n\n    The {what} `docs/{rel}` is not in this checkout.{how} '
        f"the result to show it here.\n"
    )


def _load_json_list(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    return data if isinstance(data, list) else [data]


def _fmt_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return "-"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _label(r: dict[str, Any]) -> str:
    return r["model"] if str(r["model"]).startswith("torch.nn") else f"{r['model']}/{r['backend']}"


def _bench_records(args: dict[str, str]) -> tuple[list[dict[str, Any]] | None, str]:
    rel = args.get("file", "results/bench.json")
    path = DOCS / rel
    if not path.is_file():
        return None, _missing("benchmark file", rel, args)
    records = [r for r in _load_json_list(path) if "mode" in r]
    return records, _command(args, path.with_name(path.name + ".cmd"))


def _grid(records: list[dict[str, Any]], mode: str, value: Any, fmt: Any) -> str:
    rows = [r for r in records if r["mode"] == mode]
    if not rows:
        return ""
    batch = max(r["batch_size"] for r in rows)
    rows = [r for r in rows if r["batch_size"] == batch]
    seq_lens = sorted({r["seq_len"] for r in rows})
    labels = list(dict.fromkeys(_label(r) for r in rows))
    cells = {(_label(r), r["seq_len"]): value(r) for r in rows}
    body = [[f"`{lab}`"] + [fmt(cells.get((lab, t))) for t in seq_lens] for lab in labels]
    return _table(["model/backend"] + [f"T = {t}" for t in seq_lens], body)


BENCH_CAPTIONS = {
    "forward": "**forward**, whole sequence, no gradient, batch {batch}: median seconds per call",
    "train": "**train**, forward + backward, batch {batch}: median seconds per call",
    "step": "**step**, streaming, batch 1: median seconds per step over a stream of T steps",
}


def bench_marker(args: dict[str, str], **_: Any) -> str:
    records, cmd = _bench_records(args)
    if records is None:
        return cmd
    show = args.get("show", "time,memory,state").split(",")
    modes = args.get("mode", "forward,train,step").split(",")
    out = [cmd]
    widths = ", ".join(map(str, sorted({r["width"] for r in records})))
    threads = ", ".join(map(str, sorted({r["threads"] for r in records})))
    out.append(f"Width {widths}; {threads} thread(s) for torch and numba.\n")
    for mode in modes:
        rows = [r for r in records if r["mode"] == mode]
        if not rows:
            continue
        batch = max(r["batch_size"] for r in rows)
        if "time" in show:
            out.append(BENCH_CAPTIONS[mode].format(batch=batch) + "\n")
            out.append(_grid(records, mode, lambda r: r["median_s"], _fmt_seconds))
        if "memory" in show and any(r.get("peak_bytes") for r in rows):
            out.append(f"**{mode}**: peak bytes allocated by PyTorch during one call\n")
            out.append(_grid(records, mode, lambda r: r.get("peak_bytes"), _fmt_bytes))
    if "state" in show:
        rows = [r for r in records if r.get("state_bytes") is not None and r["mode"] == "forward"]
        if rows:
            out.append("**state**: `state_nbytes` of the state after T steps, whole batch\n")
            out.append(_grid(rows, "forward", lambda r: r["state_bytes"], _fmt_bytes))
    if args.get("collapsed") == "true":  # the tables in a block the reader opens (pymdownx.details)
        body = "\n".join(out[1:])
        title = f"Every number of the benchmark ({len(records)} measurements)"
        return out[0] + f'\n??? abstract "{title}"\n\n' + "".join(
            f"    {line}\n" if line else "\n" for line in body.splitlines())
    return "\n".join(out)


def bench_plot_marker(args: dict[str, str], **_: Any) -> str:
    # (a missing file is announced by the `bench` marker's note)
    return _generated.get("bench", "")


def _torch_twin(model: str, mode: str) -> str:
    """The bench label of a model's torch.nn twin (`torch.nn.LSTMCell` for the step), or "" if it has none."""
    import seqmem

    twins = seqmem.model_spec(model).torch_equivalents if model in seqmem.model_names() else ()
    return f"torch.nn.{twins[1 if mode == 'step' else 0].__name__}" if twins else ""


def speedups_marker(args: dict[str, str], **_: Any) -> str:
    records, cmd = _bench_records(args)
    if records is None:
        return cmd
    by_key = {(r["model"], r["backend"], r["mode"], r["batch_size"], r["seq_len"]): r for r in records}
    rows = []
    for (model, backend, mode, B, T), r in by_key.items():
        if backend != "numba":
            continue
        ref = by_key.get((model, "torch", mode, B, T))
        cell = _torch_twin(model, mode)
        base = by_key.get((cell, "oneDNN", mode, B, T))
        vs_ref = f"{ref['median_s'] / r['median_s']:.1f}×" if ref else "-"
        vs_base = f"{base['median_s'] / r['median_s']:.2f}×" if base else "-"
        rows.append([f"`{model}`", mode, str(B), str(T), _fmt_seconds(r["median_s"]), vs_ref,
                     f"{vs_base} (`{cell}`)" if base else "-"])
    if not rows:
        return cmd + "\nNo `numba` backend records in this file.\n"
    header = ["model", "mode", "batch", "T", "numba", "speed-up vs torch backend", "vs torch.nn baseline"]
    return cmd + "\n" + _table(header, rows)


def targets_marker(args: dict[str, str], **_: Any) -> str:
    rel = args.get("file", "results/targets.json")
    path = DOCS / rel
    if not path.is_file():
        return _missing("speed-goal file", rel, args)
    rows = []
    for r in _load_json_list(path):
        if "speedup" not in r:
            continue
        rows.append([r["name"], _fmt_seconds(r["ours_s"]), _fmt_seconds(r["baseline_s"]),
                     f"{r['speedup']:.2f}×", f"{r['goal']:g}×", "yes" if r["met"] else "**no**",
                     r.get("note", "") or ""])
    header = ["case", "seqmem", "baseline", "ratio", "goal", "met", "note"]
    return _command(args, path.with_name(path.name + ".cmd")) + "\n" + _table(header, rows)


def _sweep_records(args: dict[str, str], default: str) -> tuple[str, list[dict[str, Any]] | None, str]:
    """`(rel, records, note)`: the records of a sweep folder, or `None` and the "Not yet measured" note."""
    rel = args.get("dir", default)
    jsonl = DOCS / rel / "results.jsonl"
    if not jsonl.is_file():
        return rel, None, _missing("sweep", f"{rel}/results.jsonl", args)
    from seqmem.results import read_results

    return rel, read_results(jsonl), ""


def _rules(args: dict[str, str]) -> Any:
    return _claims_script().rules_for(float(args["mse"])) if "mse" in args else None


def _settings(records: list[dict[str, Any]]) -> str:
    """Task, steps, learning rates and seeds of a sweep, in one sentence."""
    first = records[0]
    seeds = sorted({r.get("seed") for r in records if r.get("seed") is not None})
    lrs = sorted({r.get("lr") for r in records if r.get("lr") is not None})
    rates = (f"learning rates {', '.join(f'{x:g}' for x in lrs)} (the best per cell)" if len(lrs) > 1
             else f"learning rate {lrs[0]:g}" if lrs else "")
    steps = ", ".join(map(str, sorted({r.get("steps") for r in records if r.get("steps") is not None}))) or "?"
    return f"Task `{first.get('task')}`, {steps} training steps, {rates}, seeds {', '.join(map(str, seeds))}."


def compare_marker(args: dict[str, str], **_: Any) -> str:
    """A sweep's table over seeds (mean, 95% interval, solved seeds), then its plot."""
    rel, records, note = _sweep_records(args, "results/compare")
    if records is None:
        return note
    folder = DOCS / rel
    if not records:
        return _command(args, folder / "command.txt") + "\nNo finished runs yet.\n"
    claims = _claims_script()
    rules = _rules(args)
    seq_lens = sorted({r["seq_len"] for r in records})
    models = list(dict.fromkeys(r["model"] for r in records))
    key = folder.relative_to(DOCS / "results").as_posix()
    plot = _generated.get(f"compare:{key}", "")
    if args.get("plot") == "state":
        plot = _generated.get(f"compare-state:{key}", plot)
    text = f"{_settings(records)} {claims.caption(records, rules)}\n"
    return "\n".join([_command(args, folder / "command.txt"), text,
                      claims.metric_table(seq_lens, models, records, rules) + "\n", plot])


def success_rate_marker(args: dict[str, str], **_: Any) -> str:
    """Seeds that solved each (model, length), with the mean metric: an ablation at a glance."""
    rel, records, note = _sweep_records(args, "results/claims/forget-init")
    if records is None:
        return note
    claims = _claims_script()
    seq_lens = sorted({r["seq_len"] for r in records})
    models = list(dict.fromkeys(r["model"] for r in records))
    rule = {**claims.SOLVED, **(_rules(args) or {})}.get(records[0]["metric"], ("?", 0.0))
    text = (f"{_settings(records)} Each cell: the seeds that solved it ({records[0]['metric']} {rule[0]} "
            f"{rule[1]:g}), then the mean {records[0]['metric']} over seeds.\n")
    return "\n".join([_command(args, DOCS / rel / "command.txt"), text,
                      claims.success_table(seq_lens, models, records, _rules(args)) + "\n"])


def cell_marker(args: dict[str, str], **_: Any) -> str:
    """One cell of a sweep, inline (`0.98 [0.95, 1.00] 3/3`), or *not measured yet*."""
    rel = args.get("dir", "")
    jsonl = DOCS / rel / "results.jsonl"
    if not jsonl.is_file():
        return "*not measured yet*"
    from seqmem.results import read_results

    claims = _claims_script()
    table = claims.cells(read_results(jsonl), _rules(args))
    T, budget = int(args.get("T", 0)), args.get("budget")
    row = next((r for (m, t, b), r in table.items()
                if m == args.get("model") and t == T and (budget is None or str(b) == budget)), None)
    return "*not measured yet*" if row is None else claims.format_cell(row)


def _solved(rel: str) -> dict[str, str]:
    """The longest seq_len most seeds of each model solve in a committed sweep, or `{}`."""
    jsonl = DOCS / rel / "results.jsonl"
    if not jsonl.is_file():
        return {}
    from seqmem.results import read_results

    records = read_results(jsonl)
    seq_lens = sorted({r["seq_len"] for r in records})
    models = list(dict.fromkeys(r["model"] for r in records))
    return _claims_script().longest_solved(seq_lens, models, records)


def _bench_rows(rel: str) -> list[dict[str, Any]]:
    """The timed rows of a `seqmem bench --json` file (none if it is not in this checkout)."""
    path = DOCS / rel
    return [r for r in _load_json_list(path) if "mode" in r] if path.is_file() else []


def summary_marker(args: dict[str, str], **_: Any) -> str:
    """One row per model: speed and state from the benchmark, memory from the sweeps, all measured."""
    import seqmem
    from seqmem.compare import best_per_cell, read_results, summarize

    T = int(args.get("T", 1024))
    bench_rel = args.get("bench", "results/bench.json")
    records = _bench_rows(bench_rel)

    def fastest(model: str, mode: str) -> str:
        rows = [r for r in records if r["model"] == model and r["mode"] == mode and r["seq_len"] == T]
        if not rows:
            return "-"
        best = min(rows, key=lambda r: r["median_s"])
        return f"{_fmt_seconds(best['median_s'])} ({best['backend']})"

    def state(model: str) -> str:
        rows = [r for r in records if r["model"] == model and r["mode"] == "step" and r["seq_len"] == T]
        return _fmt_bytes(rows[0]["state_bytes"]) if rows and rows[0].get("state_bytes") is not None else "-"

    xor = _solved(args.get("xor", "results/claims/xor-echo"))
    copy = _solved(args.get("copy", "results/claims/copy"))
    sel_rel = args.get("selective", "results/compare-selective-copy")
    sel_file = DOCS / sel_rel / "results.jsonl"
    sel_rows = best_per_cell(summarize(read_results(sel_file))) if sel_file.is_file() else []
    sel_T = max((r["seq_len"] for r in sel_rows), default=None)
    selective = {r["model"]: r["mean"] for r in sel_rows if r["seq_len"] == sel_T and r["mean"] is not None}

    def short(text: str | None) -> str:  # ">= 160 (the longest tried)" -> "≥ 160"
        if not text:
            return "not run"
        return text.split(" (")[0].replace(">= ", "≥ ")

    body = []
    for m in seqmem.model_names():
        body.append([f"`{m}`", fastest(m, "train"), fastest(m, "step"), state(m), short(xor.get(m)),
                     short(copy.get(m)), f"{selective[m]:.2f}" if m in selective else "not run"])
    train_batch = next((r["batch_size"] for r in records if r["mode"] == "train"), "?")
    header = [
        "model",
        f"train step, T = {T}",
        f"streaming step, T = {T}",
        f"state after {T} tokens",
        "XOR-echo: longest solved",
        "copy: longest solved",
        f"selective copy, T = {sel_T}" if sel_T else "selective copy",
    ]
    widths = ", ".join(map(str, sorted({r["width"] for r in records}))) or "?"
    sources = (
        f"Train step: forward and backward of a batch of {train_batch}, width {widths}, the fastest of the "
        f"model's backends (named); streaming step: one token, batch 1, after a stream of {T} "
        f"(`docs/{bench_rel}`). Longest solved: accuracy above 95% at about 20k parameters "
        f"(`docs/{args.get('xor', 'results/claims/xor-echo')}`, `docs/{args.get('copy', 'results/claims/copy')}`; "
        f"≥ means the longest length tried). Selective copy: per-token accuracy at T = {sel_T}, chance 1/8 "
        f"(`docs/{sel_rel}`). Every cell is read from the committed result files when the site is built."
    )
    return _table(header, body) + "\n" + sources + "\n"


def tasks_marker(args: dict[str, str], **_: Any) -> str:
    """One row per model, one column per (task, seq_len) of several compare folders, plus the state a
    stream holds after `T` tokens (from the benchmark): the held-out metric's mean over seeds at the
    best learning rate of each cell."""
    from seqmem.compare import best_per_cell, read_results, summarize

    columns: list[tuple[str, int]] = []
    cells: dict[tuple[str, int, str], float] = {}
    for item in args.get("dirs", "").split(";"):
        label, _, rel = item.partition("=")
        path = DOCS / rel.strip() / "results.jsonl"
        if not path.is_file():
            return _missing("results folder", rel.strip(), args)
        rows = best_per_cell(summarize(read_results(path)))
        for T in sorted({r["seq_len"] for r in rows}):
            columns.append((label.strip(), T))
        for r in rows:
            if r["mean"] is not None:
                cells[(label.strip(), r["seq_len"], r["model"])] = r["mean"]
    seen = list(dict.fromkeys(m for (_, _, m) in cells))
    models = [m.strip() for m in args["models"].split(",")] if "models" in args else seen
    T = int(args.get("T", 1024))
    bench_rel = args.get("bench", "results/bench.json")
    bench = _bench_rows(bench_rel)
    state = {r["model"]: r.get("state_bytes") for r in bench if r["mode"] == "step" and r["seq_len"] == T}
    header = ["model", *(f"{label}, T = {t}" for label, t in columns), f"state after {T} tokens"]
    body = [[f"`{m}`", *(f"{cells[(label, t, m)]:.2f}" if (label, t, m) in cells else "not run"
                         for label, t in columns), _fmt_bytes(state.get(m)) if state.get(m) else "-"]
            for m in models]
    return _table(header, body) + (
        f"\nMean held-out per-token accuracy over the seeds run, at the best learning rate of each cell; state: "
        f"what a stream holds after {T} tokens, batch 1 (`docs/{bench_rel}`).\n"
    )


def output_marker(args: dict[str, str], **_: Any) -> str:
    """What a command printed, from a committed text file, as a text block."""
    rel = args.get("file", "")
    path = DOCS / rel
    if not path.is_file():
        return _missing("output", rel, args)
    return f"```text\n{path.read_text(encoding='utf-8').rstrip()}\n```\n"


def param_table_marker(args: dict[str, str], **_: Any) -> str:
    import seqmem

    I, H = int(args.get("input_size", 32)), int(args.get("hidden_size", 64))
    rows = []
    for label, model, gates in (
        ("`RNN`", seqmem.RNN(I, H), 1),
        ("`GRU(reset_after=True)`", seqmem.GRU(I, H, reset_after=True), 3),
        ("`GRU(reset_after=False)`", seqmem.GRU(I, H, reset_after=False), 3),
        ("`LSTM`", seqmem.LSTM(I, H), 4),
        ("`LSTM(peephole=True)`", seqmem.LSTM(I, H, peephole=True), 4),
    ):
        count = sum(p.numel() for p in model.parameters())
        formula = gates * (H * I + H * H + 2 * H) + (3 * H if "peephole" in label else 0)
        expr = f"{gates}(HI + H² + 2H)" + (" + 3H" if "peephole" in label else "")
        rows.append([label, expr, f"{formula:,}", f"{count:,}", "yes" if count == formula else "**no**"])
    return f"Input size I = {I}, hidden size H = {H}, counted on the modules at build time:\n\n" + _table(
        ["model", "formula", "formula value", "counted", "equal"], rows)


# ---------------------------------------------------------------------------------------------- CLI
def _claims_script() -> Any:
    """`scripts/claims.py`, imported by path: its tables are the ones the claims page shows."""
    mod = sys.modules.get("seqmem_claims_script")
    if mod is None:
        spec = importlib.util.spec_from_file_location("seqmem_claims_script", ROOT / "scripts" / "claims.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return mod


def solved_marker(args: dict[str, str], **_: Any) -> str:
    """The longest seq_len most seeds of each model solve in a sweep (`scripts/claims.py`'s rule)."""
    rel, records, note = _sweep_records(args, "results/claims/copy")
    if records is None:
        return note
    claims = _claims_script()
    metric = records[0].get("metric", "accuracy")
    op, threshold = {**claims.SOLVED, **(_rules(args) or {})}[metric]
    seq_lens = sorted({r["seq_len"] for r in records})
    models = list(dict.fromkeys(r["model"] for r in records))
    longest = claims.longest_solved(seq_lens, models, records, _rules(args))
    rows = [[f"`{m}`", v] for m, v in longest.items()]
    return (f"Solved means held-out {metric} {op} {threshold:g} for most seeds.\n\n"
            + _table(["model", "longest seq_len solved"], rows))


def gradflow_marker(args: dict[str, str], **_: Any) -> str:
    """Decay of the gradient with distance, per model, before and after training, over seeds (`seqmem gradflow`)."""
    rel = args.get("dir", "results/claims/gradflow")
    claims = _claims_script()
    results = claims.read_gradflow(DOCS / rel)
    if not results:
        return _missing("gradient-flow report", f"{rel}/gradflow.json", args)
    seeds = [r["config"].get("seed") for r in results]
    note = (f"Seeds {', '.join(map(str, seeds))}: the geometric mean of the ratios over seeds, the mean of the "
            f"decay, each with its 95% interval.\n" if len(results) > 1 else "")
    table = claims.gradflow_table(results)
    plot = _generated.get(f"gradflow:{Path(rel).relative_to('results').as_posix()}", "")
    return "\n".join([_command(args, DOCS / rel / "command.txt"), note, table, "", plot])


def cli_marker(args: dict[str, str], **_: Any) -> str:
    try:
        cli = importlib.import_module("seqmem.cli")
    except ModuleNotFoundError as err:
        if err.name != "seqmem.cli":
            raise
        return '!!! note "Not in this checkout"\n\n    `seqmem.cli` is not in this version of seqmem yet.\n'
    import typer

    root = typer.main.get_command(cli.app)
    return _click_doc(root, args.get("name", "seqmem"), None, level=2)


CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)


def _clean(text: str | None) -> str:
    """Help text as Markdown: no Rich markup, no click no-rewrap marks, `<`, `>` and `&` escaped.

    Only outside code spans: Markdown shows a code span's text as it is, so `&lt;` there would be
    shown to the reader as `&lt;`.
    """
    text = (text or "").replace("\b\n", "").strip()
    text = re.sub(r"\[/?(bold|italic|dim|red|green|blue|yellow|cyan|magenta|b|i)\]", "", text)
    out, end = [], 0
    for m in CODE_SPAN.finditer(text):
        out += [html.escape(text[end : m.start()], quote=False), m.group(0)]
        end = m.end()
    return "".join(out) + html.escape(text[end:], quote=False)


def _is_group(cmd: Any) -> bool:
    # duck-typed: Typer's command classes need not derive from the installed click's
    return callable(getattr(cmd, "list_commands", None)) and callable(getattr(cmd, "get_command", None))


def _click_doc(cmd: Any, name: str, parent: Any, level: int) -> str:
    """Markdown for a click/Typer command and, for a group, each of its subcommands."""
    ctx = cmd.context_class(cmd, info_name=name, parent=parent)
    out = [f"{'#' * level} `{ctx.command_path}`\n"]
    help_text = _clean(cmd.help)
    if help_text:
        out.append(help_text + "\n")
    pieces = " ".join(cmd.collect_usage_pieces(ctx))
    out.append(f"```text\nUsage: {ctx.command_path} {pieces}\n```\n")
    rows = []
    for param in cmd.get_params(ctx):
        is_argument = getattr(param, "param_type_name", "") == "argument"
        record = param.get_help_record(ctx)
        if record is None:
            if not is_argument:
                continue
            record = (param.human_readable_name, "")
        opts, text = record
        kind = ("argument" if is_argument else "option") + (" (required)" if param.required else "")
        text = _clean(text).replace("|", "\\|").replace("\n", " ")
        rows.append([f"`{opts}`", kind, text])
    if rows:
        out.append(_table(["name", "kind", "description"], rows))
    if _is_group(cmd):
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, sub_name)
            if sub is not None and not getattr(sub, "hidden", False):
                out.append(_click_doc(sub, sub_name, ctx, level + 1))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- API
def _resolvable(path: str) -> bool:
    try:
        importlib.import_module(path)
        return True
    except ModuleNotFoundError as err:
        if err.name is None or not path.startswith(err.name):
            raise
    module, _, attr = path.rpartition(".")
    if not module:
        return False
    try:
        return hasattr(importlib.import_module(module), attr)
    except ModuleNotFoundError:
        return False


def _check_api_block(match: re.Match[str]) -> str:
    path = match.group(1)
    if not path.startswith("seqmem") or _resolvable(path):
        return match.group(0)
    log.info("seqmem: %s is not in this checkout; the API page shows a note instead", path)
    return f'!!! note "Not in this checkout"\n\n    `{path}` is not in this version of seqmem.\n'


def api_rest_marker(args: dict[str, str], markdown: str = "", **_: Any) -> str:
    """`::: seqmem.NAME` for every public name the page does not document yet."""
    import seqmem

    documented = set(re.findall(r"^:::\s+seqmem\.(\w+)\s*$", markdown, re.M))
    out = []
    for name in seqmem.__all__:
        if name in documented:
            continue
        if name.startswith("_"):
            out.append(f"`seqmem.{name}`: `{getattr(seqmem, name)!r}` in this build.\n")
        elif importlib.util.find_spec(f"seqmem.{name}") is not None:
            # a submodule, or a function named after its module (seqmem.compare, seqmem.train):
            # documented on the module's own page, where griffe resolves the name unambiguously
            obj = getattr(seqmem, name)
            what = "the module" if inspect.ismodule(obj) else f"the function `seqmem.{name}.{name}`, in the module"
            out.append(f"`seqmem.{name}`: {what} [`seqmem.{name}`]({name}.md).\n")
        else:
            out.append(f"::: seqmem.{name}\n")
    return "\n".join(out)


MARKERS = {
    "summary": summary_marker,
    "tasks": tasks_marker,
    "bench": bench_marker,
    "bench-plot": bench_plot_marker,
    "speedups": speedups_marker,
    "targets": targets_marker,
    "compare": compare_marker,
    "success-rate": success_rate_marker,
    "cell": cell_marker,
    "solved": solved_marker,
    "gradflow": gradflow_marker,
    "cli": cli_marker,
    "param-table": param_table_marker,
    "output": output_marker,
    "api-rest": api_rest_marker,
}


# --------------------------------------------------------------------------------------------- HTML
HEADING = re.compile(r'<h([1-6])\b[^>]*?\bid="([^"]+)"[^>]*>(.*?)</h\1>', re.S)
ANCHOR_LINK = re.compile(r'<a class="(?:anchor-link|headerlink)"[^>]*>.*?</a>', re.S)
IMG = re.compile(r"<img\b[^>]*>")
A_OPEN_CLOSE = re.compile(r"<a\b|</a>")
SRC = re.compile(r'\bsrc="([^"]+)"')
DATA_PNG = re.compile(r'(<img\b[^>]*?\bsrc=")data:image/png;base64,([A-Za-z0-9+/=\s]+)"')


def on_page_content(html_text: str, page: Any, config: Any, files: Files) -> str:
    notebook = page.file.src_uri.startswith("notebooks/") and page.file.src_uri.endswith(".py")
    if notebook:
        _fix_notebook_toc(html_text, page.toc)
        html_text = _extract_notebook_images(html_text, page, config)
        title_end = html_text.find("</h1>")  # the links go under the notebook's title
        cut = title_end + len("</h1>") if title_end >= 0 else 0
        html_text = html_text[:cut] + _download_links(page) + html_text[cut:]
    return _link_images(html_text)


def _fix_notebook_toc(html_text: str, toc: Any) -> None:
    """Point the table of contents of a notebook page at its headings' real ids.

    mkdocs-jupyter builds a notebook's contents from a Markdown copy with the inline code removed, so
    a heading that ends in code ("Token by token, with `step`") gets the id `token-by-token-with`
    there, while the page's heading is `token-by-token-with-step`. Each contents entry that names no
    heading of the page takes the first unused heading of its level whose id starts with its own,
    and that heading's title.
    """
    headings = [(int(level), ident, ANCHOR_LINK.sub("", inner).strip())
                for level, ident, inner in HEADING.findall(html_text)]
    ids = {ident for _, ident, _ in headings}
    used: set[str] = set()

    def visit(items: Any) -> None:
        for item in items:
            if item.id not in ids:
                match = next((h for h in headings if h[1] not in used and h[0] == item.level
                              and h[1].startswith(item.id)), None)
                if match is not None:
                    item.id, item.title = match[1], match[2]
            used.add(item.id)
            visit(item.children)

    visit(toc)


def _extract_notebook_images(html_text: str, page: Any, config: Any) -> str:
    """Write a notebook's inline PNG figures as files beside its page, so that each can be opened full size."""
    import base64

    folder = Path(config.site_dir) / Path(page.file.dest_uri).parent
    count = 0

    def to_file(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        name = f"figure-{count}.png"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(base64.b64decode("".join(match.group(2).split())))
        return f'{match.group(1)}{name}"'

    return DATA_PNG.sub(to_file, html_text)


def _download_links(page: Any) -> str:
    stem = Path(page.file.src_uri).stem
    return (f'<p class="seqmem-download">Download this notebook: <a href="{stem}.ipynb" download>'
            f'<code>{stem}.ipynb</code></a> (Jupyter) or <a href="{stem}.py" download><code>{stem}.py</code></a> '
            f'(its source, <a href="https://jupytext.readthedocs.io/">jupytext</a> percent format). '
            f"It runs on a laptop CPU in under a minute.</p>\n")


def _link_images(html_text: str) -> str:
    """Wrap every image that is not already in a link in a link to its own file (the full-size figure)."""
    out, end, depth = [], 0, 0
    for m in IMG.finditer(html_text):
        depth += sum(1 if t == "<a" else -1 for t in A_OPEN_CLOSE.findall(html_text, end, m.start()))
        out.append(html_text[end : m.start()])
        src = SRC.search(m.group(0))
        if depth > 0 or src is None or src.group(1).startswith("data:"):
            out.append(m.group(0))
        else:
            out.append(f'<a class="seqmem-figure" href="{src.group(1)}" title="Open the full-size figure">'
                       f"{m.group(0)}</a>")
        end = m.end()
    return "".join(out) + html_text[end:]


# ------------------------------------------------------------------------------------------- output
NB_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
NB_CDN_MODULE = re.compile(
    r'<script type="module">(?:(?!</script>).)*?cdnjs\.cloudflare\.com.*?</script>', re.S
)


TEX_INLINE = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]|\$\$(.+?)\$\$|(?<![\\$\w])\$([^$\n]+?)\$(?![\w$])", re.S)
TEX_SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "Delta": "Δ", "epsilon": "ε", "eta": "η",
    "theta": "θ", "lambda": "λ", "mu": "μ", "pi": "π", "rho": "ρ", "sigma": "σ", "Sigma": "Σ", "tau": "τ",
    "phi": "φ", "varphi": "φ", "psi": "ψ", "omega": "ω", "partial": "∂", "nabla": "∇", "odot": "⊙",
    "otimes": "⊗", "cdot": "·", "times": "×", "sum": "∑", "prod": "∏", "le": "≤", "leq": "≤", "ge": "≥",
    "geq": "≥", "approx": "≈", "ne": "≠", "neq": "≠", "to": "→", "rightarrow": "→", "leftarrow": "←",
    "infty": "∞", "in": "∈", "sqrt": "√", "|": "‖", "ldots": "…", "dots": "…", "cdots": "…", "top": "ᵀ",
}


def tex_to_text(tex: str) -> str:
    """TeX as plain text for the search index: `\\tanh(W_{hh} h_{t-1})` -> `tanh(W_hh h_t-1)`."""
    text = re.sub(r"\\(?:frac|tfrac|dfrac)\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", tex)
    text = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)\b\s*", "", text)
    text = re.sub(r"\\(?:begin|end)\{[^}]*\}", " ", text)
    text = re.sub(r"\\(?:mathrm|text|textrm|textbf|mathbf|mathit|mathsf|mathtt|mathcal|operatorname|boldsymbol"
                  r"|hat|bar|tilde|overline|widehat|widetilde|vec|dot)\b\s*", "", text)
    text = re.sub(r"\\([_{}$%#])", r"\1", text)  # escaped characters
    text = re.sub(r"\\([A-Za-z]+|\|)", lambda m: TEX_SYMBOLS.get(m.group(1), m.group(1)), text)
    text = re.sub(r"\\[,;:! ]|&|\\\\", " ", text)
    text = text.replace("{", "").replace("}", "")  # (after the escapes, a literal brace is lost too)
    return re.sub(r"\s+", " ", text).strip()


def _strip_tex(text: str) -> str:
    return TEX_INLINE.sub(lambda m: tex_to_text(next(g for g in m.groups() if g is not None)), text)


def on_post_build(config: Any) -> None:
    """Search snippets show the text of the math, not its TeX source (`\\(h_t\\)` -> `h_t`)."""
    index = Path(config.site_dir) / "search" / "search_index.json"
    if not index.is_file():
        return
    data = json.loads(index.read_text(encoding="utf-8"))
    for doc in data.get("docs", []):
        for key in ("title", "text"):
            if isinstance(doc.get(key), str):
                doc[key] = _strip_tex(doc[key])
    index.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def on_post_page(output: str, page: Any, config: Any) -> str:
    # nbconvert's template loads MathJax (and, for Mermaid cells, mermaid.js) from a CDN. The site is
    # self-contained: math is rendered by the KaTeX vendored in docs/assets/katex, and no notebook here
    # has Mermaid cells.
    return NB_CDN_MODULE.sub("", NB_MATHJAX.sub("", output))
