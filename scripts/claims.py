"""Reproduce the seeds' claims about memory in sequence models, and write them up as a Markdown table.

    python scripts/claims.py                 # the full sweeps (hours on a laptop CPU; use --jobs)
    python scripts/claims.py --quick         # a smoke test of every step (about a minute)
    python scripts/claims.py --only xor-echo,gradflow --jobs 4
    python scripts/claims.py --commands      # print the equivalent seqmem commands, run nothing
    python scripts/claims.py --seeds 0 --lrs 3e-3 --steps 2000 --max-seq-len 256 --backend numba -j 2
                                             # the reduced run behind docs/results/claims (about an hour)

The claims, each measured by a sweep of `seqmem.compare` (or `seqmem.gradflow`):

1. xor-echo: the Elman RNN fails as the gap grows, the LSTM holds (accuracy vs seq_len for
   rnn, lstm, gru, transformer, mamba).
2. adding and copy: the longest seq_len each model solves (copy: accuracy > 95%; adding: held-out
   MSE below a threshold, 0.01 by default, against 1/6 for a constant guess).
3. selective-copy: selection matters: mamba solves it, its LTI ablation s4d does not.
4. gradient flow: ||dL/dh_t|| and ||dh_T/dh_t|| decay geometrically with distance for the RNN,
   far more slowly for the LSTM (its additive cell path).

Everything goes under `--out` (default `runs/claims`): one folder per sweep with its
`results.jsonl`, report and plots, and `claims.md` with the tables. The sweeps resume: run the
script again after an interruption and only the missing runs train. `--quick` uses its own folder
(`<out>/quick`), so a smoke test never mixes with the real results.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a clone without installing
    sys.path.insert(0, str(ROOT))

from seqmem.compare import CompareProgress, best_per_cell, compare, summarize  # noqa: E402
from seqmem.gradflow import gradflow  # noqa: E402
from seqmem.report import format_metric, write_report  # noqa: E402

ALL_MODELS = ["rnn", "lstm", "gru", "transformer", "mamba"]
SOLVED_ACCURACY = 0.95


@dataclass
class Sweep:
    """One `seqmem compare` sweep of the claims."""

    name: str
    task: str
    models: list[str]
    seq_lens: list[int]
    steps: int
    params: int = 20_000
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64

    def command(self, out: Path, seeds: list[int], lrs: list[float], extra: list[str]) -> str:
        """The equivalent `seqmem compare` command line."""
        args = ["seqmem", "compare", "--task", self.task, "--models", ",".join(self.models),
                "--seq-lens", ",".join(map(str, self.seq_lens)), "--seeds", ",".join(map(str, seeds)),
                "--lrs", ",".join(f"{x:g}" for x in lrs), "--steps", str(self.steps),
                "--params", str(self.params), "--batch-size", str(self.batch_size),
                "--out", str(out / self.name), *extra]
        for key, value in self.task_kwargs.items():
            args += ["--task-option", f"{key}={json.dumps(value)}"]
        return shlex.join(args)


def sweeps(quick: bool) -> list[Sweep]:
    """The sweeps of the claims, full size or quick."""
    if quick:
        return [
            Sweep("xor-echo", "xor-echo", ALL_MODELS, [4, 8], steps=30, params=5000, batch_size=32),
            Sweep("adding", "adding", ALL_MODELS, [6, 12], steps=30, params=5000, batch_size=32),
            Sweep("copy", "copy", ALL_MODELS, [7, 11], steps=30, params=5000, batch_size=32,
                  task_kwargs={"n_tokens": 2, "alphabet": 4}),
            Sweep("selective-copy", "selective-copy", ["mamba", "s4d"], [9, 13], steps=30, params=5000,
                  batch_size=32, task_kwargs={"n_tokens": 2, "alphabet": 4}),
        ]
    return [
        Sweep("xor-echo", "xor-echo", ALL_MODELS, [5, 10, 20, 40, 80, 160], steps=3000),
        Sweep("adding", "adding", ALL_MODELS, [10, 25, 50, 100, 200, 400], steps=4000),
        Sweep("copy", "copy", ALL_MODELS, [30, 60, 120, 240], steps=4000),
        Sweep("selective-copy", "selective-copy", ["mamba", "s4d"], [32, 64, 128, 256], steps=4000),
    ]


def _cells(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["model"], r["seq_len"]): r for r in best_per_cell(summarize(records))}


def metric_table(sweep: Sweep, records: list[dict[str, Any]]) -> str:
    """Models as rows, sequence lengths as columns, the metric (best lr, mean over seeds) in the cells."""
    cells = _cells(records)
    metric = records[0]["metric"] if records else "metric"
    lines = [f"| {metric} | " + " | ".join(f"T={T}" for T in sweep.seq_lens) + " |",
             "| --- |" + " ---: |" * len(sweep.seq_lens)]
    for m in sweep.models:
        values = [format_metric(cells.get((m, T), {}).get("mean"), metric) for T in sweep.seq_lens]
        lines.append(f"| {m} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def solved(row: dict[str, Any] | None, adding_mse: float) -> bool:
    """Whether a cell counts as solved: accuracy > 95%, or (adding) MSE below the threshold."""
    if row is None or row.get("mean") is None or row.get("missing"):
        return False
    if row["metric"] == "mse":
        return row["mean"] < adding_mse
    return row["mean"] > SOLVED_ACCURACY


def longest_solved(sweep: Sweep, records: list[dict[str, Any]], adding_mse: float) -> dict[str, str]:
    """Per model: the longest seq_len solved, marked when a shorter one was not or no longer one was tried."""
    cells = _cells(records)
    out = {}
    for m in sweep.models:
        ok = [T for T in sweep.seq_lens if solved(cells.get((m, T)), adding_mse)]
        if not ok:
            out[m] = "none"
            continue
        gaps = [T for T in sweep.seq_lens if T < ok[-1] and T not in ok]
        notes = ["the longest tried"] if ok[-1] == max(sweep.seq_lens) else []
        notes += [f"not {', '.join(map(str, gaps))}"] if gaps else []
        out[m] = (">= " if notes[:1] == ["the longest tried"] else "") + str(ok[-1])
        out[m] += f" ({'; '.join(notes)})" if notes else ""
    return out


def decay_per_step(curve: list[float | None], dist: list[int]) -> float | None:
    """The geometric decay factor per step of distance: exp(slope) of a least-squares fit of log(curve)."""
    pts = [(d, math.log(v)) for d, v in zip(dist, curve, strict=True) if v is not None and v > 0]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(d for d, _ in pts) / n
    my = sum(y for _, y in pts) / n
    var = sum((d - mx) ** 2 for d, _ in pts)
    return math.exp(sum((d - mx) * (y - my) for d, y in pts) / var) if var else None


def gradflow_table(result: dict[str, Any]) -> str:
    """Per model and phase: decay factors per step and the end-to-end ratios."""
    lines = ["| model | phase | ‖dL/dh_0‖ / ‖dL/dh_T-1‖ | decay of ‖dh_T-1/dh_t‖ per step | ‖dh_T-1/dh_0‖ | "
             "forget-gate product at distance T-1 |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for m, entry in result["models"].items():
        for phase in ("before", "after"):
            rep = entry.get(phase)
            if not rep:
                continue
            g = rep["hidden_grad_norm"]
            ratio = g[0] / g[-1] if g[0] is not None and g[-1] else None
            jac = rep.get("jacobian_norm")
            rate = decay_per_step(jac, rep["distance"]) if jac else None
            fgp = rep.get("forget_gate_product")
            cells = ["n/a" if ratio is None else f"{ratio:.2e}", format_metric(rate, "decay"),
                     "n/a" if not jac or jac[0] is None else f"{jac[0]:.2e}",
                     "n/a" if not fgp or fgp[0] is None else f"{fgp[0]:.2e}"]
            lines.append(f"| {m} | {phase} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class _Lines(CompareProgress):
    """One line on stderr per finished run."""

    def run_finished(self, index: int, total: int, record: dict[str, Any], resumed: bool) -> None:
        value = record.get(record.get("metric", "accuracy"))
        how = "already done" if resumed else f"{record.get('wall_s', 0):.1f} s"
        shown = format_metric(value, record["metric"])
        print(f"  [{index + 1}/{total}] {record['model']} T={record['seq_len']} lr={record['lr']:g} "
              f"seed={record['seed']}: {record['metric']} {shown} ({how})", file=sys.stderr, flush=True)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """Run the claims (or print their commands) and write `claims.md`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/claims"), help="output folder (resumable)")
    parser.add_argument("--quick", action="store_true", help="tiny sweeps: check that every step works")
    parser.add_argument("--only", default=None,
                        help="comma-separated subset of: xor-echo, adding, copy, selective-copy, gradflow")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; quick: 0)")
    parser.add_argument("--lrs", default=None,
                        help="learning-rate grid (default 1e-3,3e-3,1e-2; quick: 1e-2)")
    parser.add_argument("--jobs", "-j", type=int, default=None, help="runs at the same time")
    parser.add_argument("--executor", default="local", help="local, process or ray (see seqmem compare)")
    parser.add_argument("--address", default=None, help="Ray cluster address (--executor ray)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps of every sweep (default: each sweep's own, 3000-4000)")
    parser.add_argument("--max-seq-len", type=int, default=None,
                        help="leave out the sequence lengths above this (a shorter run)")
    parser.add_argument("--backend", default="torch",
                        help="torch, or numba for the models that have it (the same numbers, faster)")
    parser.add_argument("--adding-mse", type=float, default=0.01,
                        help="adding counts as solved below this held-out MSE (chance: 1/6)")
    parser.add_argument("--commands", action="store_true", help="print the equivalent commands, run nothing")
    args = parser.parse_args(argv)

    quick = args.quick
    out = args.out / "quick" if quick else args.out
    seeds = [int(s) for s in (args.seeds or ("0" if quick else "0,1,2")).split(",")]
    lrs = [float(x) for x in (args.lrs or ("1e-2" if quick else "1e-3,3e-3,1e-2")).split(",")]
    names = ["xor-echo", "adding", "copy", "selective-copy", "gradflow"]
    only = names if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = sorted(set(only) - set(names))
    if unknown:
        parser.error(f"unknown claim(s) {unknown}; choose from {names}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    extra = (["--executor", args.executor] if args.executor != "local" else [])
    extra += ["--backend", args.backend] if args.backend != "torch" else []
    extra += ["--jobs", str(args.jobs)] if args.jobs else []
    extra += ["--address", args.address] if args.address else []
    gf = {"seq_len": 12 if quick else 50, "width": 8 if quick else 32, "steps": 3 if quick else 500}
    gf_cmd = shlex.join(["seqmem", "gradflow", "--model", "rnn,lstm", "--task", "xor-echo",
                         "--seq-len", str(gf["seq_len"]), "--width", str(gf["width"]),
                         "--steps", str(gf["steps"]), "--out", str(out / "gradflow")])
    chosen = [s for s in sweeps(quick) if s.name in only]
    for s in chosen:
        if args.steps is not None:
            s.steps = args.steps
        if args.max_seq_len is not None:
            s.seq_lens = [T for T in s.seq_lens if T <= args.max_seq_len]
    chosen = [s for s in chosen if s.seq_lens]
    if args.commands:
        for s in chosen:
            print(s.command(out, seeds, lrs, extra))
        if "gradflow" in only:
            print(gf_cmd)
        return 0

    out.mkdir(parents=True, exist_ok=True)
    total = sum(len(s.models) * len(s.seq_lens) * len(seeds) * len(lrs) for s in chosen)
    print(f"claims: {total} training runs in {len(chosen)} sweeps under {out} (finished ones are skipped)",
          file=sys.stderr)
    sections = [
        "# The seeds' claims, measured",
        "",
        f"Written by `scripts/claims.py{' --quick' if quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"seeds {seeds}, learning rates {lrs} (each cell: the best rate by mean held-out metric over seeds). "
        f"Solved: accuracy > {SOLVED_ACCURACY:.0%}; adding: MSE < {args.adding_mse:g} (chance 1/6)."
        + (" **Quick mode: tiny networks and few steps; the numbers mean nothing.**" if quick else ""),
        "",
    ]
    records: dict[str, list[dict[str, Any]]] = {}
    for s in chosen:
        print(f"\n== {s.name}: {s.command(out, seeds, lrs, extra)}", file=sys.stderr)
        records[s.name] = compare(
            s.task, s.models, s.seq_lens, seeds, steps=s.steps, params=s.params, batch_size=s.batch_size,
            lrs=lrs, task_kwargs=s.task_kwargs, out=out / s.name, executor=args.executor, jobs=args.jobs,
            address=args.address, backend=args.backend, progress=_Lines(),
        )
        write_report(out / s.name)

    titles = {
        "xor-echo": "1. XOR-echo: accuracy against the gap (the Elman RNN fails, the LSTM holds)",
        "adding": "2a. Adding problem: held-out MSE (lower is better)",
        "copy": "2b. Copy task: per-symbol accuracy",
        "selective-copy": "3. Selective copy: selection (mamba) against its LTI ablation (s4d)",
    }
    for s in chosen:
        recs = records[s.name]
        sections += [f"## {titles[s.name]}", "", "```bash", s.command(out, seeds, lrs, extra), "```", "",
                     metric_table(s, recs), ""]
        if s.name in ("adding", "copy"):
            longest = longest_solved(s, recs, args.adding_mse)
            shown = "; ".join(f"**{m}** {v}" for m, v in longest.items())
            sections += [f"Longest seq_len solved: {shown}", ""]
        sections += [f"Report and plots: [{s.name}/report.md]({s.name}/report.md)", ""]

    if "gradflow" in only:
        print(f"\n== gradflow: {gf_cmd}", file=sys.stderr)
        path = out / "gradflow" / "gradflow.json"
        config = {"models": ["rnn", "lstm"], "task": "xor-echo", **gf}
        cached = json.loads(path.read_text()) if path.exists() else None
        same = cached is not None and all(cached["config"].get(k) == v for k, v in config.items())
        result = cached if same else gradflow(["rnn", "lstm"], "xor-echo", gf["seq_len"], width=gf["width"],
                                               steps=gf["steps"], out=out / "gradflow")
        sections += ["## 4. Gradient flow: RNN against LSTM, before and after training", "",
                     "```bash", gf_cmd, "```", "", gradflow_table(result), "",
                     "Decay per step: the factor by which ‖dh_T-1/dh_t‖ shrinks per step of distance (a "
                     "least-squares fit of its logarithm); 1 means no decay.", "",
                     "![gradient flow](gradflow/gradflow.png)", ""]

    md = out / "claims.md"
    _atomic_text(md, "\n".join(sections).rstrip() + "\n")
    print(f"\nclaims: {md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
