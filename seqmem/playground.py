"""`seqmem playground`: watch an Elman RNN and an LSTM read an XOR-echo string, token by token.

Both networks are trained on XOR-echo (is the last symbol equal to the first?), then fed held-out
strings one symbol at a time with `SequenceNetwork.step`. After each prefix the network's output is
its answer as if the string ended there; the playground records the probability it gives to the
string's true label. A network that remembers the first symbol becomes confident at the last
position (where the question is decided); one that forgot it stays near 0.5 there. Works in a
notebook too:

    >>> from seqmem.playground import playground
    >>> result = playground(seq_len=6, steps=5, examples=1)  # doctest: +SKIP
    >>> result["examples"][0]["confidence"]["lstm"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .network import SequenceNetwork, size_for_budget
from .registry import ModelSpec, resolve_models
from .tasks import get_task
from .train import derive_seed, train

__all__ = ["PLAYGROUND_FILE", "confidence_trace", "playground", "plot_playground"]

PLAYGROUND_FILE = "playground"
"""The stem of the files `playground` writes: `playground.json` and `playground.png`."""


@torch.no_grad()
def confidence_trace(network: SequenceNetwork, x: Tensor, label: int | Tensor) -> list[float]:
    """The probability a network gives to `label` after each prefix of one sequence, by `step`.

    Args:
        network: a classifier `SequenceNetwork` (softmax over `output_size` classes).
        x: one sequence: `(seq_len,)` int tokens or `(seq_len, input_size)` floats.
        label: the class whose probability to follow.

    Returns:
        `seq_len` floats: entry `t` is `softmax(logits after x[:t + 1])[label]`.

    Raises:
        ValueError: for an empty sequence or a label outside `[0, output_size)`.
    """
    label = int(label)
    if not 0 <= label < network.output_size:
        raise ValueError(f"confidence_trace: label must be in [0, {network.output_size}), got {label}")
    if x.shape[0] == 0:
        raise ValueError("confidence_trace: the sequence is empty")
    was_training = network.training
    network.eval()
    try:
        state = None
        probs = []
        for t in range(x.shape[0]):
            logits, state = network.step(x[t : t + 1], state)  # (1, O)
            probs.append(float(torch.softmax(logits[0].double(), dim=-1)[label]))
    finally:
        network.train(was_training)
    return probs


def playground(
    models: Sequence[str | ModelSpec] = ("rnn", "lstm"),
    seq_len: int = 20,
    *,
    steps: int = 400,
    params: int = 10_000,
    batch_size: int = 64,
    lr: float = 1e-2,
    examples: int = 2,
    seed: int = 0,
    alphabet: int = 4,
    out: str | os.PathLike[str] | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """Train each model on XOR-echo, then trace its confidence in the answer token by token.

    Every model is sized to the same parameter budget (`size_for_budget`), trained with
    `seqmem.train.train` and evaluated; then `examples` held-out strings (alternately with label 1
    and 0) are fed to each with `confidence_trace`.

    Args:
        models: the models (names, import paths, `ModelSpec`s or classes; default: the Elman RNN
            and the LSTM).
        seq_len: string length.
        steps: training steps per model.
        params: parameter budget per network.
        batch_size: sequences per training step.
        lr: peak learning rate.
        examples: number of held-out strings to trace.
        seed: seeds initialisation, training data and the examples.
        alphabet: XOR-echo's alphabet size.
        out: folder for `playground.json` and `playground.png`, or `None`.
        plot: draw the PNG (with `out` and matplotlib).

    Returns:
        `{"config": {...}, "models": {name: {"accuracy", "params", "width"}}, "examples":
        [{"tokens", "label", "confidence": {name: [p_0, ..., p_{T-1}]}}]}`.

    Raises:
        ValueError: for an unknown model or bad sizes.
    """
    specs = resolve_models(models, "playground")
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise ValueError(f"playground: examples must be a positive int, got {examples!r}")
    task = get_task("xor-echo", seq_len=seq_len, alphabet=alphabet)
    gen = torch.Generator().manual_seed(derive_seed(seed, "playground"))
    pool = task.sample(max(8, 4 * examples), gen, split="eval")
    pos = [i for i in range(pool.y.shape[0]) if int(pool.y[i]) == 1]
    neg = [i for i in range(pool.y.shape[0]) if int(pool.y[i]) == 0]
    picks = [(pos if k % 2 == 0 else neg)[k // 2] for k in range(examples)]
    result: dict[str, Any] = {
        "config": {"models": [m.name for m in specs], "seq_len": seq_len, "steps": steps, "params": params, "lr": lr,
                   "batch_size": batch_size, "seed": seed, "alphabet": alphabet},
        "models": {},
        "examples": [
            {"tokens": pool.x[i].tolist(), "label": int(pool.y[i]), "confidence": {}} for i in picks
        ],
    }
    for m in specs:
        width = size_for_budget(m, params, task).width
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "init"))
            net = SequenceNetwork.for_task(m, task, width)
            trained = train(net, task, steps, batch_size=batch_size, lr=lr, seed=seed, eval_batches=2)
        result["models"][m.name] = {"accuracy": trained.metric, "params": net.num_parameters(), "width": width}
        for ex, i in zip(result["examples"], picks, strict=True):
            ex["confidence"][m.name] = confidence_trace(net, pool.x[i], int(pool.y[i]))
    if out is not None:
        from ._files import atomic_write_bytes

        folder = Path(out)
        atomic_write_bytes(folder / f"{PLAYGROUND_FILE}.json", (json.dumps(result, indent=1) + "\n").encode())
        if plot:
            plot_playground(result, folder / f"{PLAYGROUND_FILE}.png")
    return result


def plot_playground(result: dict[str, Any], path: str | os.PathLike[str]) -> Path | None:
    """Plot each model's probability of the true label after each prefix, one panel per example.

    Args:
        result: what `playground` returned.
        path: where to write the PNG (atomically).

    Returns:
        The path written, or `None` without matplotlib.
    """
    from .plots import figure_class

    if figure_class() is None:
        return None
    from .plotstyle import plot_style, save_figure

    with plot_style():
        return save_figure(_playground_figure(result), Path(path))


def _playground_figure(result: dict[str, Any]) -> Any:
    """The panels of `plot_playground`, stacked at the page's width."""
    from matplotlib.figure import Figure

    from .plotstyle import FIGURE_WIDTH, line_style

    exs = result["examples"]
    fig = Figure(figsize=(FIGURE_WIDTH, 2.7 * len(exs) + 0.9))
    axes = fig.subplots(len(exs), 1, squeeze=False)[:, 0]
    for ax, ex in zip(axes, exs, strict=True):
        T = len(ex["tokens"])
        for m, probs in ex["confidence"].items():
            acc = result["models"][m]["accuracy"]
            shown = "n/a" if acc is None else f"{acc:.2f}"
            ax.plot(range(T), probs, label=f"{m} (accuracy {shown})", **line_style(m))
        ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(range(T), [str(t) for t in ex["tokens"]])
        ax.set_ylabel("P(true label)")
        kind = "last == first" if ex["label"] else "last != first"
        ax.set_title(f"label {ex['label']} ({kind})")
    axes[-1].set_xlabel("input symbol (prefix read so far)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2)
    fig.suptitle(f"xor-echo, seq_len {result['config']['seq_len']}: confidence token by token")
    return fig
