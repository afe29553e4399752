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
| `<!-- seqmem:bench file=results/bench.json cmd="..." [mode=...] [show=...] -->` | bench tables |
| `<!-- seqmem:bench-plot file=results/bench.json -->` | `seqmem.bench.plot_bench` figures |
| `<!-- seqmem:speedups file=results/bench.json -->` | numba vs torch, and vs torch.nn, per case |
| `<!-- seqmem:targets file=results/targets.json cmd="..." -->` | `TargetRecord` table |
| `<!-- seqmem:compare dir=results/compare-xor-echo cmd="..." -->` | summary table + plot of a sweep |
| `<!-- seqmem:solved dir=results/claims/copy [mse=0.01] -->` | longest seq_len each model solves |
| `<!-- seqmem:gradflow dir=results/claims/gradflow cmd="..." -->` | gradient decay table + plot |
| `<!-- seqmem:cli -->` | every command and option of `seqmem.cli:app` |
| `<!-- seqmem:param-table -->` | parameter counts of RNN/GRU/LSTM against the formulas |
| `<!-- seqmem:api-rest -->` | `::: seqmem.NAME` for every name of `seqmem.__all__` not yet on the page |

The command shown beside a result is the marker's `cmd`, unless a sidecar file records the one that
was really run: `<file>.cmd` for a file, `<dir>/command.txt` for a compare folder.
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
    # The notebooks live at the repository root (`notebooks/*.py`, jupytext percent format).
    for nb in sorted((ROOT / "notebooks").glob("*.py")):
        uri = f"notebooks/{nb.name}"
        if files.get_file_from_path(uri) is None:
            files.append(File(uri, str(ROOT), config.site_dir, config.use_directory_urls))

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


def _plot_results(files: Files, config: Any) -> None:
    """Plots of the committed results, through seqmem's own plotting functions."""
    results = DOCS / "results"
    bench = results / "bench.json"
    if bench.is_file():
        from seqmem.bench import BenchRecord, plot_bench

        records = [BenchRecord(**r) for r in _load_json_list(bench) if "mode" in r]
        with tempfile.TemporaryDirectory() as tmp:
            for path in plot_bench(records, tmp) if records else []:
                uri = f"figures/{path.name}"
                _add_generated(files, config, uri, path.read_bytes())
                _generated.setdefault("bench", "")
                _generated["bench"] += f"![{path.stem}](/{uri})\n\n"
    for jsonl in sorted(results.glob("**/results.jsonl")):
        rel = jsonl.parent.relative_to(results).as_posix()  # e.g. compare-xor-echo, claims/adding
        from seqmem.compare import plot_results, read_results

        name = rel.replace("/", "-")
        with tempfile.TemporaryDirectory() as tmp:
            out = plot_results(read_results(jsonl), Path(tmp) / f"{name}.png")
            if out is not None:
                uri = f"figures/{name}.png"
                _add_generated(files, config, uri, out.read_bytes())
                _generated[f"compare:{rel}"] = f"![{name}](/{uri})\n"
    for png in sorted(results.glob("**/gradflow.png")):
        name = png.parent.relative_to(results).as_posix().replace("/", "-")
        uri = f"figures/{name}-gradflow.png"
        _add_generated(files, config, uri, png.read_bytes())
        _generated[f"gradflow:{png.parent.relative_to(results).as_posix()}"] = f"![gradient flow](/{uri})\n"


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
    return f"```bash\n{cmd}\n```\n" if cmd else ""


def _missing(what: str, rel: str, args: dict[str, str]) -> str:
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


def compare_marker(args: dict[str, str], **_: Any) -> str:
    rel = args.get("dir", "results/compare")
    folder = DOCS / rel
    jsonl = folder / "results.jsonl"
    if not jsonl.is_file():
        return _missing("comparison", f"{rel}/results.jsonl", args)
    from seqmem.compare import best_per_cell, read_results, summarize
    from seqmem.report import format_metric

    records = read_results(jsonl)
    rows = best_per_cell(summarize(records))  # with a learning-rate grid: the best rate per cell
    if not rows:
        return _command(args, folder / "command.txt") + "\nNo finished runs yet.\n"
    seq_lens = sorted({r["seq_len"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    metric = rows[0]["metric"]
    cells = {(r["model"], r["seq_len"]): r for r in rows}

    def cell(r: dict[str, Any] | None) -> str:
        if r is None or r["mean"] is None:
            return "-" if r is None else "diverged"
        spread = (f" ({format_metric(r['min'], metric)}-{format_metric(r['max'], metric)})"
                  if r["n"] > 1 and r["min"] != r["max"] else "")
        return format_metric(r["mean"], metric) + spread  # an MSE in significant digits

    params = {m: next((r["params"] for r in rows if r["model"] == m and r["params"]), None) for m in models}
    body = [[f"`{m}`", str(params[m] or "-")] + [cell(cells.get((m, t))) for t in seq_lens] for m in models]
    first = records[0]
    seeds = sorted({r.get("seed") for r in records if r.get("seed") is not None})
    lrs = sorted({r.get("lr") for r in records if r.get("lr") is not None})
    rates = (f"learning rates {', '.join(f'{x:g}' for x in lrs)} (the best per cell)" if len(lrs) > 1
             else f"learning rate {lrs[0]:g}" if lrs else "")
    note = (f"Task `{first.get('task')}`, {first.get('steps', '?')} training steps, {rates}, seeds "
            f"{', '.join(map(str, seeds))}; held-out {metric.replace('_', ' ')}, mean over seeds "
            f"(min-max when they differ).\n")
    plot = _generated.get(f"compare:{folder.relative_to(DOCS / 'results').as_posix()}", "")
    return "\n".join([_command(args, folder / "command.txt"), note,
                      _table(["model", "params"] + [f"T = {t}" for t in seq_lens], body), plot])


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
    """The longest seq_len each model solves in a sweep (`scripts/claims.py`'s rule)."""
    rel = args.get("dir", "results/claims/copy")
    jsonl = DOCS / rel / "results.jsonl"
    if not jsonl.is_file():
        return _missing("sweep", f"{rel}/results.jsonl", args)
    from seqmem.compare import read_results

    claims = _claims_script()
    records = read_results(jsonl)
    seq_lens = sorted({r["seq_len"] for r in records})
    models = list(dict.fromkeys(r["model"] for r in records))
    sweep = claims.Sweep(rel, records[0]["task"], models, seq_lens, steps=records[0].get("steps", 0))
    threshold = float(args.get("mse", 0.01))
    rule = (f"held-out MSE below {threshold:g}" if records[0].get("metric") == "mse"
            else f"accuracy above {claims.SOLVED_ACCURACY:.0%}")
    longest = claims.longest_solved(sweep, records, threshold)
    rows = [[f"`{m}`", v] for m, v in longest.items()]
    return f"Solved means {rule}.\n\n" + _table(["model", "longest seq_len solved"], rows)


def gradflow_marker(args: dict[str, str], **_: Any) -> str:
    """Decay of the gradient with distance, per model, before and after training (`seqmem gradflow`)."""
    rel = args.get("dir", "results/claims/gradflow")
    path = DOCS / rel / "gradflow.json"
    if not path.is_file():
        return _missing("gradient-flow report", f"{rel}/gradflow.json", args)
    result = json.loads(path.read_text())
    table = _claims_script().gradflow_table(result)
    plot = _generated.get(f"gradflow:{Path(rel).relative_to('results').as_posix()}", "")
    return "\n".join([_command(args, path.with_name("command.txt")), table, "", plot])


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


def _clean(text: str | None) -> str:
    """Help text as Markdown: no Rich markup, no click no-rewrap marks, `<` and `>` escaped."""
    text = (text or "").replace("\b\n", "").strip()
    text = re.sub(r"\[/?(bold|italic|dim|red|green|blue|yellow|cyan|magenta|b|i)\]", "", text)
    return html.escape(text, quote=False)


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
    "bench": bench_marker,
    "bench-plot": bench_plot_marker,
    "speedups": speedups_marker,
    "targets": targets_marker,
    "compare": compare_marker,
    "solved": solved_marker,
    "gradflow": gradflow_marker,
    "cli": cli_marker,
    "param-table": param_table_marker,
    "api-rest": api_rest_marker,
}


# ------------------------------------------------------------------------------------------- output
NB_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
NB_CDN_MODULE = re.compile(
    r'<script type="module">(?:(?!</script>).)*?cdnjs\.cloudflare\.com.*?</script>', re.S
)


def on_post_page(output: str, page: Any, config: Any) -> str:
    # nbconvert's template loads MathJax (and, for Mermaid cells, mermaid.js) from a CDN. The site is
    # self-contained: math is rendered by the KaTeX vendored in docs/assets/katex, and no notebook here
    # has Mermaid cells.
    return NB_CDN_MODULE.sub("", NB_MATHJAX.sub("", output))
