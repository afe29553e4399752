"""Reproduce the classic claims about memory in sequence models over several seeds, and write them up.

    python scripts/claims.py                 # every sweep at full size (days on two cores; see --estimate)
    python scripts/claims.py --quick         # a smoke test of every step (a few minutes)
    python scripts/claims.py --only forget-init --backend numba -j 2
    python scripts/claims.py --commands      # print each sweep's command and size, run nothing
    python scripts/claims.py --estimate --only mqar --backend numba -j 2
                                             # time a few steps of each configuration, extrapolate

The claims, each one resumable sweep (`seqmem.compare`, or `seqmem.gradflow`) in its own folder:

1. xor-echo: the Elman RNN fails as the gap grows, gated models hold (accuracy vs seq_len).
2. adding, copy: the longest seq_len each model solves.
3. selective-copy: mamba solves it, its LTI ablation s4d does not.
4. gradflow: ||dL/dh_t|| and ||dh_T/dh_t|| decay geometrically for the RNN, slowly for the LSTM.
5. forget-init: XOR-echo success rate against length for the LSTM with forget bias 1, 3 and chrono
   initialisation (T_max = seq_len), and the GRU with and without chrono; plus their gradient flow.
6. adding-long: the adding problem up to seq_len 1000 (Hochreiter & Schmidhuber 1997, experiment 4).
7. copy-long: the copy task at Arjovsky et al.'s delays T = 100, 200, 300, 500 (seq_len = T + 20).
8. mqar: multi-query associative recall in Zoology's regime (Arora et al. 2023, figure 2): accuracy
   against state size, per family, over parameter budgets.

Every table summarises over seeds (`seqmem.summary`): the mean of the held-out metric with its 95%
interval, and the success rate (seeds that solved the cell by `seqmem.summary.SOLVED`; `--adding-mse`
replaces the adding problem's threshold). Everything goes under `--out` (default `runs/claims`): one
folder per sweep with its `results.jsonl`, report, plots and `command.txt` (the command that wrote it, which
the docs show beside the results), and `claims.md` with the tables (with `--only a,b`, `claims-a-b.md`,
leaving the full run's `claims.md` as it was). Run the
script again after an interruption and only the missing runs train. `--quick` uses its own folder
(`<out>/quick`), so a smoke test never mixes with the real results.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a clone without installing
    sys.path.insert(0, str(ROOT))

from seqmem.compare import CompareProgress, compare  # noqa: E402
from seqmem.gradflow import gradflow  # noqa: E402
from seqmem.registry import ModelSpec, model_names, model_spec  # noqa: E402
from seqmem.report import format_metric, write_report  # noqa: E402
from seqmem.summary import SOLVED, best_per_cell, interval, summarize  # noqa: E402

# ------------------------------------------------------------------------------------ the models
ALL_MODELS = ["rnn", "lstm", "gru", "transformer", "mamba"]
"""The five classic answers: the models of sweeps 1-2."""

LONG_MODELS = ["lstm", "gru", "transformer", "mamba"]
"""The models that solve the adding problem at seq_len 200 (the one-seed sweep): adding-long, copy-long."""

MQAR_MODELS = ["transformer", "mamba", "lstm", "gru", "mingru", "minlstm", "hawk", "griffin",
               "linear-attention", "retention", "mlstm"]
"""The families of the MQAR sweep, attention first; those not registered in this checkout are left out
(with a note), so the sweep grows as families are added. `--models` replaces the list."""


@dataclass(frozen=True)
class Variant:
    """A registered model under a name of its own, with fixed constructor arguments.

    Attributes:
        name: the name in records and tables (`"lstm-chrono"`).
        base: the registered model (`"lstm"`).
        kwargs: its fixed constructor arguments (they enter each run's id).
        t_max_is_seq_len: also pass `chrono_t_max = seq_len` (chrono initialisation sized to the task).
    """

    name: str
    base: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    t_max_is_seq_len: bool = False

    def spec(self, seq_len: int) -> ModelSpec | str:
        """The model to hand `compare`/`gradflow` at this length: the base's name when nothing is fixed."""
        if not self.kwargs and not self.t_max_is_seq_len and self.name == self.base:
            return self.base
        kwargs = {**self.kwargs, **({"chrono_t_max": seq_len} if self.t_max_is_seq_len else {})}
        base = model_spec(self.base)
        return dataclasses.replace(base, name=self.name, kwargs={**base.kwargs, **kwargs},
                                   description=f"{base.description} ({self.name}: {kwargs})")

    def describe(self) -> str:
        """`lstm-chrono: lstm(forget_init='chrono', chrono_t_max=seq_len)`."""
        args = [f"{k}={v!r}" for k, v in self.kwargs.items()]
        args += ["chrono_t_max=seq_len"] if self.t_max_is_seq_len else []
        return f"{self.name}: {self.base}({', '.join(args)})"


FORGET_INIT_VARIANTS = [
    Variant("lstm", "lstm"),  # forget_bias=1.0 (Gers et al. 2000; Jozefowicz et al. 2015)
    Variant("lstm-fb3", "lstm", {"forget_bias": 3.0}),
    Variant("lstm-chrono", "lstm", {"forget_init": "chrono"}, t_max_is_seq_len=True),
    Variant("gru", "gru"),
    Variant("gru-chrono", "gru", {"update_init": "chrono"}, t_max_is_seq_len=True),
]
"""The forget-gate initialisations compared in sweep 5. A constant bias b gives every unit the forgetting
time 1 + e^b: 3.7 steps for b = 1, 21 for b = 3 (sigmoid(3) = 0.953, so the gate product over a gap of
40 is 0.14 where b = 1 gives 4e-6); chrono spreads the times uniformly over [2, seq_len]."""


# ------------------------------------------------------------------------------------ the sweeps
@dataclass
class Sweep:
    """One sweep of `seqmem.compare` (a list of calls when a model or the task depends on the length).

    Attributes:
        name: the folder under `--out` and the `--only` key.
        task: the task's name.
        models: registered names and `Variant`s.
        seq_lens: the sequence lengths.
        steps: training steps per run.
        params: the parameter budget, or a list of budgets (every model at each).
        task_kwargs: the task's options at every length.
        task_kwargs_by_len: more options for one length (MQAR's `num_kv_pairs`).
        batch_size: sequences per training step.
        lrs: the learning rates, or `None` for the script's `--lrs`.
        eval_batches: held-out batches of 256 sequences per run.
    """

    name: str
    task: str
    models: list[str | Variant]
    seq_lens: list[int]
    steps: int
    params: int | list[int] = 20_000
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    task_kwargs_by_len: dict[int, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 64
    lrs: list[float] | None = None
    eval_batches: int = 8

    @property
    def model_names(self) -> list[str]:
        return [m.name if isinstance(m, Variant) else m for m in self.models]

    @property
    def budgets(self) -> list[int]:
        return [self.params] if isinstance(self.params, int) else list(self.params)

    @property
    def plain(self) -> bool:
        """Whether one `seqmem compare` command runs it (no variant, no option that depends on the length)."""
        return not self.task_kwargs_by_len and all(isinstance(m, str) for m in self.models)

    def calls(self) -> list[tuple[list[int], list[str | ModelSpec], dict[str, Any]]]:
        """`(seq_lens, models, task_kwargs)` of each `compare` call: one, or one per length."""
        if self.plain:
            return [(list(self.seq_lens), list(self.models), dict(self.task_kwargs))]
        return [([T], [m.spec(T) if isinstance(m, Variant) else m for m in self.models],
                 {**self.task_kwargs, **self.task_kwargs_by_len.get(T, {})}) for T in self.seq_lens]

    def runs(self, seeds: Sequence[int], lrs: Sequence[float]) -> int:
        """Training runs: models x lengths x budgets x learning rates x seeds."""
        return len(self.models) * len(self.seq_lens) * len(self.budgets) * len(self.lrs or lrs) * len(seeds)

    def command(self, out: Path, seeds: list[int], lrs: list[float], extra: list[str], *, quick: bool = False) -> str:
        """The command that runs this sweep (resumably): `seqmem compare`, or this script with `--only`
        (and every option that shapes the sweep, so that it runs the same runs)."""
        rates = self.lrs or lrs
        common = ["--seeds", ",".join(map(str, seeds)), "--lrs", ",".join(f"{x:g}" for x in rates),
                  "--steps", str(self.steps)]
        if not self.plain:
            args = ["python", "scripts/claims.py", "--only", self.name, *(["--quick"] if quick else []),
                    "--models", ",".join(self.model_names), *common, "--params", ",".join(map(str, self.budgets)),
                    "--max-seq-len", str(max(self.seq_lens)), "--out", str(out.parent if quick else out), *extra]
            return shlex.join(args)
        args = ["seqmem", "compare", "--task", self.task, "--models", ",".join(self.model_names),
                "--seq-lens", ",".join(map(str, self.seq_lens)), *common,
                "--params", ",".join(map(str, self.budgets)), "--batch-size", str(self.batch_size),
                *(["--eval-batches", str(self.eval_batches)] if self.eval_batches != 8 else []),
                "--out", str(out / self.name), *extra]
        for key, value in self.task_kwargs.items():
            args += ["--task-option", f"{key}={json.dumps(value)}"]
        return shlex.join(args)


@dataclass
class GradflowSweep:
    """`seqmem.gradflow` for some models, one result per seed under `<out>/<folder>/seed-<s>/`.

    Attributes:
        folder: the folder under `--out`.
        models: registered names and `Variant`s (a variant's chrono `T_max` is `seq_len`).
        task: the task.
        seq_len: the sequence length.
        width: the network width of every model.
        steps: training steps between the two measurements.
        lr: the peak learning rate of that training.
    """

    folder: str
    models: list[str | Variant]
    task: str
    seq_len: int
    width: int
    steps: int
    lr: float = 3e-3

    def specs(self) -> list[str | ModelSpec]:
        return [m.spec(self.seq_len) if isinstance(m, Variant) else m for m in self.models]

    def commands(self, out: Path, seeds: list[int], *, quick: bool = False) -> list[str]:
        """The commands that measure it: `seqmem gradflow` per seed, or this script for variants."""
        if any(isinstance(m, Variant) for m in self.models):
            names = ",".join(m.name if isinstance(m, Variant) else m for m in self.models)
            return [shlex.join(["python", "scripts/claims.py", "--only", self.folder.split("/")[0],
                                *(["--quick"] if quick else []), "--models", names,
                                "--seeds", ",".join(map(str, seeds)), "--out", str(out.parent if quick else out)])]
        names = [m.name if isinstance(m, Variant) else m for m in self.models]
        return [shlex.join(["seqmem", "gradflow", "--model", ",".join(names), "--task", self.task,
                            "--seq-len", str(self.seq_len), "--width", str(self.width), "--steps", str(self.steps),
                            "--lr", f"{self.lr:g}", "--seed", str(seed),
                            "--out", str(out / self.folder / f"seed-{seed}")]) for seed in seeds]

    def config(self) -> dict[str, Any]:
        return {"models": [m.name if isinstance(m, Variant) else m for m in self.models], "task": self.task,
                "seq_len": self.seq_len, "width": self.width, "steps": self.steps, "lr": self.lr}


MQAR_ZOOLOGY = {64: 4, 128: 8, 256: 16, 512: 64}
"""(seq_len, num_kv_pairs) of Zoology's MQAR figure (Arora et al. 2023, figure 2; their configs)."""

MQAR_BUDGETS = (25_000, 100_000)
"""The MQAR sweep's parameter budgets (`--params` replaces them): the state grows with the width."""


def sweeps(quick: bool) -> list[Sweep]:
    """The compare sweeps of the claims, full size or quick."""
    mqar_models = [m for m in MQAR_MODELS if m in model_names()]
    if quick:
        tiny = {"params": 5000, "batch_size": 32, "steps": 30, "eval_batches": 1}
        return [
            Sweep("xor-echo", "xor-echo", ALL_MODELS, [4, 8], **tiny),
            Sweep("adding", "adding", ALL_MODELS, [6, 12], **tiny),
            Sweep("copy", "copy", ALL_MODELS, [7, 11], task_kwargs={"n_tokens": 2, "alphabet": 4}, **tiny),
            Sweep("selective-copy", "selective-copy", ["mamba", "s4d"], [9, 13],
                  task_kwargs={"n_tokens": 2, "alphabet": 4}, **tiny),
            Sweep("forget-init", "xor-echo", list(FORGET_INIT_VARIANTS), [4, 8], **tiny),
            Sweep("adding-long", "adding", LONG_MODELS, [6, 12], **tiny),
            Sweep("copy-long", "copy", LONG_MODELS, [9, 13], task_kwargs={"n_tokens": 2, "alphabet": 4}, **tiny),
            Sweep("mqar", "assoc-recall", ["transformer", "gru"], [8, 12], params=[3000, 6000], batch_size=32,
                  steps=30, eval_batches=1, task_kwargs={"vocab_size": 16},
                  task_kwargs_by_len={8: {"num_kv_pairs": 2}, 12: {"num_kv_pairs": 4}}),
        ]
    return [
        Sweep("xor-echo", "xor-echo", ALL_MODELS, [5, 10, 20, 40, 80, 160], steps=3000),
        Sweep("adding", "adding", ALL_MODELS, [10, 25, 50, 100, 200, 400], steps=4000),
        Sweep("copy", "copy", ALL_MODELS, [30, 60, 120, 240], steps=4000),
        Sweep("selective-copy", "selective-copy", ["mamba", "s4d"], [32, 64, 128, 256], steps=4000),
        # the length of section 1's cliff (the LSTM fails from 40) and beyond; its budget and rate
        Sweep("forget-init", "xor-echo", list(FORGET_INIT_VARIANTS), [20, 40, 80, 160], steps=2000, lrs=[3e-3]),
        # section 2a's budget (2,000 steps of 64: 128,000 sequences) carried on to 500 and 1000; H&S 1997 solve
        # T = 1000 after 853,000 sequences (online)
        Sweep("adding-long", "adding", LONG_MODELS, [500, 1000], steps=2000, lrs=[3e-3]),
        # Arjovsky et al.'s delay T is seq_len - 2 * n_tokens: T = 100, 200, 300, 500; section 2b's budget
        Sweep("copy-long", "copy", LONG_MODELS, [120, 220, 320, 520], steps=2000, lrs=[3e-3]),
        # Zoology: vocab 8,192, 100,000 sequences x 64 epochs, 4 rates, d_model 64-512; here vocab 256 (keys
        # for 64 pairs), 4,000 steps of 64 (256,000 sequences), one rate, two budgets (transformer d_model
        # about 22 and 54, lstm 32 and 84); --params 25000,100000,400000 adds d_model 118 / 193 (3x the cost)
        Sweep("mqar", "assoc-recall", mqar_models, list(MQAR_ZOOLOGY), params=list(MQAR_BUDGETS), steps=4000,
              lrs=[3e-3], task_kwargs={"vocab_size": 256},
              task_kwargs_by_len={T: {"num_kv_pairs": n} for T, n in MQAR_ZOOLOGY.items()}),
    ]


def gradflows(quick: bool) -> dict[str, GradflowSweep]:
    """The gradient-flow measurements, by the claim they belong to."""
    if quick:
        return {"gradflow": GradflowSweep("gradflow", ["rnn", "lstm"], "xor-echo", 12, 8, 3),
                "forget-init": GradflowSweep("forget-init/gradflow", list(FORGET_INIT_VARIANTS), "xor-echo", 12, 8, 3)}
    return {"gradflow": GradflowSweep("gradflow", ["rnn", "lstm"], "xor-echo", 50, 32, 500),
            # width 48: the LSTM's at 20,000 parameters (49); the length where forget bias 1 fails (section 1)
            "forget-init": GradflowSweep("forget-init/gradflow", list(FORGET_INIT_VARIANTS), "xor-echo", 80, 48, 2000)}


CLAIMS = ["xor-echo", "adding", "copy", "selective-copy", "gradflow", "forget-init", "adding-long", "copy-long",
          "mqar"]

TITLES = {
    "xor-echo": "1. XOR-echo: accuracy against the gap (the Elman RNN fails, gated models hold)",
    "adding": "2a. Adding problem: held-out MSE (lower is better)",
    "copy": "2b. Copy task: per-symbol accuracy",
    "selective-copy": "3. Selective copy: selection (mamba) against its LTI ablation (s4d)",
    "gradflow": "4. Gradient flow: RNN against LSTM, before and after training",
    "forget-init": "5. The LSTM's cliff: forget-gate initialisation against XOR-echo's length",
    "adding-long": "6. Adding problem at the papers' lengths (up to 1000)",
    "copy-long": "7. Copy task at Arjovsky et al.'s delays (T = seq_len - 20)",
    "mqar": "8. Multi-query associative recall in Zoology's regime: accuracy against state size",
}


# --------------------------------------------------------------------------------- summaries
def rules_for(adding_mse: float | None) -> dict[str, tuple[str, float]] | None:
    """The solved rules: `seqmem.summary.SOLVED`, with the adding problem's MSE threshold replaced."""
    return None if adding_mse is None else {"mse": ("<", adding_mse)}


def cells(records: Sequence[dict[str, Any]], rules: dict[str, tuple[str, float]] | None = None
          ) -> dict[tuple[str, int, Any], dict[str, Any]]:
    """`(model, seq_len, budget) -> row`: `best_per_cell(summarize(records))`, over seeds at the best rate."""
    return {(r["model"], r["seq_len"], r.get("params_budget")): r for r in best_per_cell(summarize(records, rules))}


def format_cell(row: dict[str, Any] | None, *, rate: bool = True) -> str:
    """`0.983 [0.950, 1.000] 3/3`: the mean over seeds, its 95% interval, and the seeds that solved it."""
    if row is None:
        return "-"
    metric = row["metric"]
    if row["mean"] is None:
        return "diverged"
    text = format_metric(row["mean"], metric)
    if row["ci_low"] is not None:
        text += f" [{format_metric(row['ci_low'], metric)}, {format_metric(row['ci_high'], metric)}]"
    if rate and row["success_rate"] is not None:
        text += f" {row['solved']}/{row['n']}"
    return text


def caption(records: Sequence[dict[str, Any]], rules: dict[str, tuple[str, float]] | None = None) -> str:
    """What the cells hold: the metric, seeds, interval method and the solved rule."""
    if not records:
        return ""
    rows = summarize(records, rules)
    metric = rows[0]["metric"]
    seeds = max(r["n"] for r in rows)
    methods = sorted({r["ci_method"] for r in rows if r["ci_method"]})
    how = {"t": "Student's t", "bootstrap": "percentile bootstrap"}
    text = f"Held-out {metric.replace('_', ' ')}, " + (f"mean over up to {seeds} seeds" if seeds > 1 else "one seed")
    text += f" [95% interval: {' or '.join(how[m] for m in methods)}]" if methods else ""
    rule = {**SOLVED, **(rules or {})}.get(metric)
    if rule is not None:
        text += f", then the seeds that solved the cell ({metric.replace('_', ' ')} {rule[0]} {rule[1]:g})"
    return text + "."


def metric_table(seq_lens: Sequence[int], models: Sequence[str], records: Sequence[dict[str, Any]],
                 rules: dict[str, tuple[str, float]] | None = None) -> str:
    """Models (and budgets, when several) as rows, lengths as columns, `format_cell` in the cells."""
    table = cells(records, rules)
    budgets = list(dict.fromkeys(b for (_, _, b) in table))
    several = len(budgets) > 1
    head = ["model"] + (["budget"] if several else []) + ["params"] + [f"T={T}" for T in seq_lens]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for m in models:
        for b in budgets:
            rows = [table.get((m, T, b)) for T in seq_lens]
            params = next((str(r["params"]) for r in rows if r and r.get("params")), "-")
            if all(r is None for r in rows) and several:
                continue
            lines.append("| " + " | ".join([m] + ([str(b)] if several else []) + [params]
                                           + [format_cell(r) for r in rows]) + " |")
    return "\n".join(lines)


def success_table(seq_lens: Sequence[int], models: Sequence[str], records: Sequence[dict[str, Any]],
                  rules: dict[str, tuple[str, float]] | None = None) -> str:
    """The success rate against the length per model: `3/3 (0.99)` (solved seeds, mean metric)."""
    table = cells(records, rules)
    lines = ["| model | " + " | ".join(f"T={T}" for T in seq_lens) + " |",
             "| --- |" + " ---: |" * len(seq_lens)]
    for m in models:
        out = []
        for T in seq_lens:
            row = next((r for (mm, t, _), r in table.items() if mm == m and t == T), None)
            if row is None or row["success_rate"] is None:
                out.append("-" if row is None else format_metric(row["mean"], row["metric"]))
            else:
                out.append(f"{row['solved']}/{row['n']} ({format_metric(row['mean'], row['metric'])})")
        lines.append(f"| {m} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def longest_solved(seq_lens: Sequence[int], models: Sequence[str], records: Sequence[dict[str, Any]],
                   rules: dict[str, tuple[str, float]] | None = None) -> dict[str, str]:
    """Per model: the longest seq_len that most of its seeds solved (`seqmem.summary.SOLVED`).

    Marked `>=` when it is the longest tried, with the lengths below it that were not solved, and the
    seeds that solved it when there were several (`">= 120 (3/3 seeds; the longest tried; not 60)"`).
    """
    table = cells(records, rules)
    out = {}
    for m in models:
        rows = {T: next((r for (mm, t, _), r in table.items() if mm == m and t == T), None) for T in seq_lens}
        ok = [T for T, r in rows.items() if r is not None and r["success_rate"] is not None
              and r["success_rate"] > 0.5]
        if not ok:
            out[m] = "none"
            continue
        best = rows[ok[-1]]
        gaps = [T for T in seq_lens if T < ok[-1] and T not in ok]
        notes = [f"{best['solved']}/{best['n']} seeds"] if best["n"] > 1 else []
        notes += ["the longest tried"] if ok[-1] == max(seq_lens) else []
        notes += [f"not {', '.join(map(str, gaps))}"] if gaps else []
        out[m] = (">= " if ok[-1] == max(seq_lens) else "") + str(ok[-1])
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


def _gradflow_numbers(rep: dict[str, Any]) -> dict[str, float | None]:
    """One report's numbers: end-to-end ratios (positive, spanning decades) and the decay per step."""
    g = rep["hidden_grad_norm"]
    jac = rep.get("jacobian_norm")
    keep = rep.get("forget_gate_product") or rep.get("update_gate_product")
    return {
        "ratio": g[0] / g[-1] if g[0] is not None and g[-1] else None,
        "decay": decay_per_step(jac, rep["distance"]) if jac else None,
        "jacobian": jac[0] if jac else None,
        "keep": keep[0] if keep else None,
    }


def _log_summary(values: list[float]) -> str:
    """Positive values spanning decades: geometric mean, with the 95% interval of the mean of log10."""
    logs = [math.log10(v) for v in values if v is not None and v > 0]
    if not logs:
        return "n/a"
    text = f"{10 ** (sum(logs) / len(logs)):.2e}"
    ci = interval(logs)
    return text + (f" [{10 ** ci[0]:.1e}, {10 ** ci[1]:.1e}]" if ci else "")


def _linear_summary(values: list[float | None], metric: str) -> str:
    xs = [v for v in values if v is not None]
    if not xs:
        return "n/a"
    ci = interval(xs)
    text = format_metric(sum(xs) / len(xs), metric)
    return text + (f" [{format_metric(ci[0], metric)}, {format_metric(ci[1], metric)}]" if ci else "")


def gradflow_table(results: dict[str, Any] | Sequence[dict[str, Any]]) -> str:
    """Per model and phase, over the seeds' results: decay per step, end-to-end ratios, the keep-gate product.

    With several results (one per seed) each cell is the mean with its 95% interval (ratios: the
    geometric mean, interval of the mean of log10); the last column is the held-out metric after training.
    """
    results = [results] if isinstance(results, dict) else list(results)
    lines = ["| model | phase | ‖dL/dh_0‖ / ‖dL/dh_T-1‖ | decay of ‖dh_T-1/dh_t‖ per step | ‖dh_T-1/dh_0‖ | "
             "keep-gate product at distance T-1 (LSTM ∏f, GRU ∏z) | held-out metric after training |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    models = list(dict.fromkeys(m for res in results for m in res["models"]))
    for m in models:
        for phase in ("before", "after"):
            reps = [res["models"][m].get(phase) for res in results if m in res["models"]]
            nums = [_gradflow_numbers(rep) for rep in reps if rep]
            if not nums:
                continue
            trained = [res["models"][m].get("train") or {} for res in results if m in res["models"]]
            metric = next((t.get("metric_name") for t in trained if t.get("metric_name")), "accuracy")
            after = _linear_summary([t.get("metric") for t in trained], metric) if phase == "after" else ""
            cells_ = [_log_summary([n["ratio"] for n in nums]), _linear_summary([n["decay"] for n in nums], "decay"),
                      _log_summary([n["jacobian"] for n in nums]), _log_summary([n["keep"] for n in nums]), after]
            lines.append(f"| {m} | {phase} | " + " | ".join(cells_) + " |")
    return "\n".join(lines)


def read_gradflow(folder: Path) -> list[dict[str, Any]]:
    """The gradflow results of a folder: one `seed-*/gradflow.json` per seed (in seed order), or else
    its own `gradflow.json` (a one-seed run of `seqmem gradflow --out folder`)."""
    per_seed = sorted(folder.glob("seed-*/gradflow.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    single = folder / "gradflow.json"
    paths = per_seed or ([single] if single.is_file() else [])
    return [json.loads(p.read_text()) for p in paths]


# ----------------------------------------------------------------------------------- running
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


def run_sweep(s: Sweep, out: Path, seeds: list[int], lrs: list[float], opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every `compare` call of a sweep into `<out>/<name>`, then its report."""
    records: list[dict[str, Any]] = []
    for seq_lens, models, task_kwargs in s.calls():
        records += compare(s.task, models, seq_lens, seeds, steps=s.steps, params=s.params,
                           batch_size=s.batch_size, lrs=s.lrs or lrs, eval_batches=s.eval_batches,
                           task_kwargs=task_kwargs, out=out / s.name, progress=_Lines(), **opts)
    write_report(out / s.name)
    return records


def run_gradflow(g: GradflowSweep, out: Path, seeds: list[int]) -> list[dict[str, Any]]:
    """`gradflow` per seed into `<out>/<folder>/seed-<s>/`, reusing a result of the same configuration."""
    results = []
    for seed in seeds:
        folder = out / g.folder / f"seed-{seed}"
        path = folder / "gradflow.json"
        cached = json.loads(path.read_text()) if path.exists() else None
        want = {**g.config(), "seed": seed}
        if cached is not None and all(cached["config"].get(k) == v for k, v in want.items()):
            results.append(cached)
            continue
        print(f"  gradflow seed {seed}: {', '.join(want['models'])} at T={g.seq_len}", file=sys.stderr, flush=True)
        results.append(gradflow(g.specs(), g.task, g.seq_len, width=g.width, steps=g.steps, lr=g.lr, seed=seed,
                                out=folder))
    return results


def _seconds(records: Sequence[dict[str, Any]]) -> str:
    walls = [r["wall_s"] for r in records if isinstance(r.get("wall_s"), (int, float))]
    return f"{sum(walls) / len(walls):.1f} s per run (mean of {len(walls)})" if walls else "no run timed"


# ---------------------------------------------------------------------------------- estimate
def estimate(s: Sweep, seeds: list[int], lrs: list[float], backend: str, probe_steps: int) -> tuple[float, list[str]]:
    """Time `probe_steps` training steps of each (model, seq_len, budget) at full size, and extrapolate.

    Each configuration is built as `compare` builds it (`size_for_budget`, `SequenceNetwork.for_task`),
    trained one step to warm up and `probe_steps` more, each timed, on one thread; the median step (a
    shared machine's spikes aside) is the step's cost. One held-out batch of 256 is timed too. A run
    costs `steps` steps plus `eval_batches` (8) such batches.

    Returns:
        The estimated CPU seconds of the whole sweep, and one line per configuration.
    """
    import torch

    from seqmem.network import SequenceNetwork, size_for_budget
    from seqmem.registry import resolve_model
    from seqmem.tasks import get_task
    from seqmem.train import evaluate, train

    total, lines = 0.0, []
    per_config = len(s.lrs or lrs) * len(seeds)
    marks: list[float] = []

    def mark(step: int, steps: int, loss: float) -> None:
        marks.append(time.perf_counter())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seq_lens, models, task_kwargs in s.calls():
            for T in seq_lens:
                task = get_task(s.task, seq_len=T, **task_kwargs)
                for m in models:
                    spec = resolve_model(m, check=False)
                    for budget in s.budgets:
                        width = size_for_budget(spec, budget, task).width
                        kw = {"backend": backend} if backend in spec.backends and backend != "torch" else {}
                        net = SequenceNetwork.for_task(spec, task, width, **kw)
                        marks.clear()
                        train(net, task, probe_steps + 1, batch_size=s.batch_size, eval_batches=1, eval_batch_size=1,
                              callback=mark)
                        per_step = statistics.median(b - a for a, b in itertools.pairwise(marks))  # spikes aside
                        t0 = time.perf_counter()
                        evaluate(net, task, n_batches=1)
                        per_eval = time.perf_counter() - t0
                        run = s.steps * per_step + s.eval_batches * per_eval
                        total += run * per_config
                        lines.append(f"  {spec.name} T={T} budget={budget} width={width}: "
                                     f"{per_step * 1e3:.0f} ms/step, eval {per_eval:.2f} s/batch -> "
                                     f"{run / 60:.1f} min/run x {per_config} runs")
    finally:
        torch.set_num_threads(threads)
    return total, lines


# -------------------------------------------------------------------------------------- main
def _parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/claims"), help="output folder (resumable)")
    parser.add_argument("--quick", action="store_true", help="tiny sweeps: check that every step works")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(CLAIMS)}")
    parser.add_argument("--models", default=None,
                        help="comma-separated models replacing each chosen sweep's (forget-init: its variants, "
                             "chosen by name)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; quick: 0)")
    parser.add_argument("--lrs", default=None,
                        help="learning-rate grid of every chosen sweep (default: each sweep's own, else "
                             "1e-3,3e-3,1e-2; quick: 1e-2)")
    parser.add_argument("--jobs", "-j", type=int, default=None, help="runs at the same time")
    parser.add_argument("--executor", default="local", help="local, process or ray (see seqmem compare)")
    parser.add_argument("--address", default=None, help="Ray cluster address (--executor ray)")
    parser.add_argument("--params", default=None,
                        help="comma-separated parameter budgets replacing each chosen sweep's (e.g. mqar's "
                             "25000,100000,400000)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps of every compare sweep (default: each sweep's own)")
    parser.add_argument("--max-seq-len", type=int, default=None,
                        help="leave out the sequence lengths above this (a shorter run)")
    parser.add_argument("--backend", default="torch",
                        help="torch, or numba for the models that have it (the same numbers, faster)")
    parser.add_argument("--adding-mse", type=float, default=None,
                        help=f"adding counts as solved below this held-out MSE (default {SOLVED['mse'][1]:g}; "
                             "chance 1/6)")
    parser.add_argument("--commands", action="store_true", help="print each sweep's command and size, run nothing")
    parser.add_argument("--estimate", action="store_true",
                        help="time a few steps of every configuration at full size and print each sweep's "
                             "estimated wall time on --jobs workers; train nothing else")
    parser.add_argument("--probe-steps", type=int, default=5, help="steps timed per configuration by --estimate")
    return parser, parser.parse_args(argv)


def _choose(parser: argparse.ArgumentParser, args: argparse.Namespace
            ) -> tuple[list[Sweep], dict[str, GradflowSweep], list[str]]:
    only = CLAIMS if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = sorted(set(only) - set(CLAIMS))
    if unknown:
        parser.error(f"unknown claim(s) {unknown}; choose from {CLAIMS}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.adding_mse is not None and not args.adding_mse > 0:
        parser.error(f"--adding-mse must be > 0, got {args.adding_mse}")
    chosen = [s for s in sweeps(args.quick) if s.name in only]
    flows = {k: g for k, g in gradflows(args.quick).items() if k in only}
    wanted = None if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
    if wanted is not None:
        bad = [m for m in wanted if m not in model_names() and m not in {v.name for v in FORGET_INIT_VARIANTS}]
        if bad:
            parser.error(f"unknown model(s) {bad}; registered: {model_names()}, forget-init variants: "
                         f"{[v.name for v in FORGET_INIT_VARIANTS]}")
        for s in [*chosen, *flows.values()]:
            variants = any(isinstance(m, Variant) for m in s.models)
            s.models = ([m for m in s.models if isinstance(m, Variant) and m.name in wanted] if variants
                        else [m for m in wanted if m in model_names()])
    missing = [m for m in MQAR_MODELS if m not in model_names()]
    if any(s.name == "mqar" for s in chosen) and missing and wanted is None:
        print(f"claims: mqar leaves out the models not registered here: {', '.join(missing)}", file=sys.stderr)
    try:
        budgets = None if args.params is None else [int(b) for b in args.params.split(",")]
    except ValueError:
        parser.error(f"--params must be comma-separated ints, got {args.params!r}")
    if budgets is not None and (not budgets or min(budgets) < 1):
        parser.error(f"--params must be positive, got {args.params!r}")
    for s in chosen:
        if budgets is not None:
            s.params = budgets if len(budgets) > 1 else budgets[0]
        if args.steps is not None:
            s.steps = args.steps
        if args.max_seq_len is not None:
            s.seq_lens = [T for T in s.seq_lens if T <= args.max_seq_len]
    chosen = [s for s in chosen if s.seq_lens and s.models]
    flows = {k: g for k, g in flows.items() if g.models}
    return chosen, flows, only


def main(argv: list[str] | None = None) -> int:
    """Run the claims (or print their commands, or estimate their cost) and write `claims.md`."""
    parser, args = _parse(argv)
    chosen, flows, only = _choose(parser, args)
    quick = args.quick
    out = args.out / "quick" if quick else args.out
    seeds = [int(s) for s in (args.seeds or ("0" if quick else "0,1,2")).split(",")]
    lrs = [float(x) for x in (args.lrs or ("1e-2" if quick else "1e-3,3e-3,1e-2")).split(",")]
    if quick or args.lrs is not None:  # the rates asked (or the quick rate) replace the sweeps' own
        for s in chosen:
            s.lrs = None
    rules = rules_for(args.adding_mse)
    extra = (["--executor", args.executor] if args.executor != "local" else [])
    extra += ["--backend", args.backend] if args.backend != "torch" else []
    extra += ["--jobs", str(args.jobs)] if args.jobs else []
    extra += ["--address", args.address] if args.address else []

    if args.commands:
        for s in chosen:
            print(f"# {s.name}: {s.runs(seeds, lrs)} runs x {s.steps} steps")
            if s.name in flows:
                g = flows[s.name]
                print(f"# and gradflow into {g.folder}: {len(seeds)} seeds x {len(g.models)} models x {g.steps} steps")
            print(s.command(out, seeds, lrs, extra, quick=quick))
        for name, g in flows.items():
            if name not in {s.name for s in chosen}:
                print(f"# {g.folder}: {len(seeds)} seeds x {len(g.models)} models x {g.steps} steps (gradflow)")
                print("\n".join(g.commands(out, seeds, quick=quick)))
        return 0
    if args.estimate:
        workers = args.jobs or 1
        for s in chosen:
            cpu, lines = estimate(s, seeds, lrs, args.backend, args.probe_steps)
            print(f"{s.name}: {s.runs(seeds, lrs)} runs x {s.steps} steps: {cpu / 3600:.1f} CPU-hours, "
                  f"about {cpu / workers / 3600:.1f} h on {workers} worker(s) [{args.backend}]")
            print("\n".join(lines))
        return 0

    out.mkdir(parents=True, exist_ok=True)
    total = sum(s.runs(seeds, lrs) for s in chosen)
    print(f"claims: {total} training runs in {len(chosen)} sweeps under {out} (finished ones are skipped)",
          file=sys.stderr)
    threshold = SOLVED["mse"][1] if args.adding_mse is None else args.adding_mse
    sections = [
        "# The classic claims, measured over seeds",
        "",
        f"Written by `scripts/claims.py{' --quick' if quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; seeds {seeds}. Each cell: the best learning "
        f"rate by mean held-out metric over seeds; the mean with its 95% interval; the seeds that solved it "
        f"(accuracy > {SOLVED['accuracy'][1]:.0%}; adding: MSE < {threshold:g}, chance 1/6)."
        + (" **Quick mode: tiny networks and few steps; the numbers mean nothing.**" if quick else ""),
        "",
    ]
    opts = {"executor": args.executor, "jobs": args.jobs, "address": args.address, "backend": args.backend}
    for s in chosen:
        cmd = s.command(out, seeds, lrs, extra, quick=quick)
        print(f"\n== {s.name}: {cmd}", file=sys.stderr)
        recs = run_sweep(s, out, seeds, lrs, opts)
        _atomic_text(out / s.name / "command.txt", cmd + "\n")  # the docs show it beside the results
        sections += [f"## {TITLES[s.name]}", "", "```bash", cmd, "```", "",
                     f"Size: {s.runs(seeds, lrs)} runs x {s.steps} steps; {_seconds(recs)}.", ""]
        if s.name == "forget-init":
            sections += ["Variants: " + "; ".join(v.describe() for v in s.models if isinstance(v, Variant)), "",
                         "Seeds that solved XOR-echo (mean accuracy):", "",
                         success_table(s.seq_lens, s.model_names, recs, rules), ""]
        sections += [metric_table(s.seq_lens, s.model_names, recs, rules), "", caption(recs, rules), ""]
        if s.task in ("adding", "copy"):
            longest = longest_solved(s.seq_lens, s.model_names, recs, rules)
            sections += ["Longest seq_len solved: " + "; ".join(f"**{m}** {v}" for m, v in longest.items()), ""]
        if s.name == "forget-init" and "forget-init" in flows:
            g = flows["forget-init"]
            results = run_gradflow(g, out, seeds)
            _atomic_text(out / g.folder / "command.txt", "\n".join(g.commands(out, seeds, quick=quick)) + "\n")
            sections += [f"Gradient flow at T={g.seq_len}, width {g.width}, {g.steps} training steps:", "",
                         gradflow_table(results), ""]
        if len(s.budgets) > 1:
            sections += [f"![{s.name}: metric vs state size]({s.name}/{s.task}_state.png)", ""]
        sections += [f"Report and plots: [{s.name}/report.md]({s.name}/report.md)", ""]

    if "gradflow" in flows:
        g = flows["gradflow"]
        print(f"\n== gradflow: {g.commands(out, seeds, quick=quick)[0]}", file=sys.stderr)
        results = run_gradflow(g, out, seeds)
        _atomic_text(out / g.folder / "command.txt", "\n".join(g.commands(out, seeds, quick=quick)) + "\n")
        sections += [f"## {TITLES['gradflow']}", "", "```bash", *g.commands(out, seeds, quick=quick),
                     "```", "", gradflow_table(results), "",
                     "Decay per step: the factor by which ‖dh_T-1/dh_t‖ shrinks per step of distance (a "
                     "least-squares fit of its logarithm); 1 means no decay. Ratios: geometric mean over seeds.", "",
                     f"![gradient flow]({g.folder}/seed-{seeds[0]}/gradflow.png)", ""]

    # the full run writes claims.md; a subset (--only) its own file, leaving the full summary as it was
    md = out / ("claims.md" if args.only is None else f"claims-{args.only.replace(',', '-')}.md")
    _atomic_text(md, "\n".join(sections).rstrip() + "\n")
    print(f"\nclaims: {md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
