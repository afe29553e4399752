r"""`seqmem gradflow`: how gradients flow back through time in a network on a task, before and after training.

`seqmem.diagnostics` measures a bare `SequenceModel`. Here the model sits inside a
`SequenceNetwork` (embedding, body, head) on a real task, and the loss is the task's. The
measurements are taken on the network's first sequence layer, the recurrence that carries the
memory, fed with the embedded task batch:

- `hidden_grad_norm[t]` $= \|\partial L / \partial h_t\|$ for the **task loss**: $L$ reads the
  layer's outputs through the rest of the network (later layers, norm, head) and the task's loss,
  summed over the sequences of the batch (so each sequence's norm is that of its own loss), then
  averaged over the batch. This is `diagnostics.hidden_grad_norms` with that `loss_fn`. For a
  `target="last"` task (XOR-echo) it is the error signal that reaches step `t` from the answer.
- `jacobian_norm` (RNN, LSTM, GRU) $= \|\partial h_{T-1} / \partial h_t\|_2$ against the distance
  $T - 1 - t$: the product of step Jacobians, independent of the loss.
- `spectral_radius` / `spectral_norm` of each gate block of the recurrent matrix (RNN, LSTM, GRU).
- `forget_gate_product` and `cell_jacobian_norm` (LSTM): the cell path's gain
  $\prod_s f_s$ and the full $\partial c_{T-1}/\partial c_t$; `update_gate_product` (GRU): the
  direct path's gain $\prod_s z_s$.
- `input_jacobian_norm`, and `hidden_grad_norm_readout`: the layer-level measures of
  `diagnostics.gradflow_report` (its default loss reads the layer's last output along a fixed
  random direction, so it ignores the task).
- `task_loss` and `param_grad_norm`: the task loss of the batch and the norm of its gradient over
  every parameter of the network.

For the SSM blocks (`mamba`, `s4d`) the first layer is a pre-norm residual block; the measured
model is its mixer, fed with the normalised embeddings, and the loss adds the residual back
before the rest of the network. For the transformer, `hidden_grad_norm` is the gradient on the
embeddings entering the first block.

The measurements run on a float64 copy of the network by default (a vanishing gradient can fall
below float32's range), on the same batch before and after training.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .diagnostics import gradflow_report, hidden_grad_norms
from .network import SequenceNetwork, _PreNormResidual
from .registry import ModelSpec, resolve_models
from .tasks import get_task
from .tasks.base import Batch, Task
from .train import derive_seed, train

__all__ = ["GRADFLOW_FILE", "gradflow", "network_gradflow", "plot_gradflow"]

GRADFLOW_FILE = "gradflow"
"""The stem of the files `gradflow` writes: `gradflow.json` and `gradflow.png`."""


def _task_loss_sum(task: Task, logits: Tensor, batch: Batch) -> Tensor:
    """The task loss summed over the sequences of the batch (the task's mean times the batch size)."""
    return task.loss(logits, batch) * batch.x.shape[0]


def network_gradflow(
    network: SequenceNetwork,
    task: Task,
    batch: Batch,
    *,
    ord: int | str = 2,
    dtype: torch.dtype | None = torch.float64,
) -> dict[str, Any]:
    """Gradient-flow measurements of a network's first sequence layer under the task loss.

    See the module docstring for what each key holds. The network is left untouched (a copy is
    measured when `dtype` differs from its own).

    Args:
        network: a `SequenceNetwork` built for `task`.
        task: the task whose loss is measured.
        batch: the batch to measure on (`task.sample(...)`).
        ord: matrix norm of the Jacobians, `2` or `"fro"`.
        dtype: the dtype to measure in (default float64), or `None` for the network's own.

    Returns:
        A JSON-ready dict: the keys of `diagnostics.gradflow_report` for the layer, with
        `hidden_grad_norm` computed from the task loss, plus `hidden_grad_norm_readout`,
        `task_loss`, `param_grad_norm` (whole network), `network` (the model name) and `layer`.

    Raises:
        TypeError: if `network` is not a `SequenceNetwork`.
    """
    if not isinstance(network, SequenceNetwork):
        raise TypeError(f"network_gradflow: expects a seqmem.SequenceNetwork, got {type(network).__name__}")
    net = network
    if dtype is not None and network.head.weight.dtype != dtype:
        net = copy.deepcopy(network).to(dtype)
    was_training = net.training
    net.eval()
    try:
        x_in = batch.x if net.tokens else batch.x.to(net.head.weight.dtype)
        with torch.no_grad():
            e = net._embed(x_in, rank=2)  # (B, T, W)
        first = net.layers[0]
        if isinstance(first, _PreNormResidual):
            core = first.mixer
            with torch.no_grad():
                x_core = first.norm(e)

            def to_stream(y: Tensor) -> Tensor:
                return e + y
        else:
            core, x_core = first, e

            def to_stream(y: Tensor) -> Tensor:
                return y

        def loss_fn(y: Tensor) -> Tensor:
            h = to_stream(y)
            for layer in net.layers[1:]:
                h, _ = layer(h)
            return _task_loss_sum(task, net.head(net.norm(h)), batch)

        report = gradflow_report(core, x_core, ord=ord)
        report["hidden_grad_norm_readout"] = report.pop("hidden_grad_norm")
        report.pop("param_grad_norm", None)
        task_norms = hidden_grad_norms(core, x_core, loss_fn, reduction="mean")
        report["hidden_grad_norm"] = [float(v) for v in task_norms]
        params = [p for p in net.parameters() if p.requires_grad]
        logits, _ = net(x_in)
        loss = task.loss(logits, batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        flat = [g.reshape(-1).to(torch.float64) for g in grads if g is not None]
        report["task_loss"] = float(loss.detach())
        report["param_grad_norm"] = float(torch.linalg.vector_norm(torch.cat(flat))) if flat else 0.0
        report["network"] = net.model
        report["layer"] = type(core).__name__
    finally:
        net.train(was_training)
    return report


def _clean(value: Any) -> Any:
    """Non-finite floats to None, recursively (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def gradflow(
    models: Sequence[str | ModelSpec] = ("rnn", "lstm"),
    task: str = "xor-echo",
    seq_len: int = 50,
    *,
    width: int = 32,
    steps: int = 0,
    batch_size: int = 64,
    lr: float = 3e-3,
    clip: float | None = 1.0,
    measure_batch: int = 16,
    seed: int = 0,
    task_kwargs: dict[str, Any] | None = None,
    ord: int | str = 2,
    out: str | os.PathLike[str] | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """Measure gradient flow for each model on a task batch, before and (with `steps`) after training.

    Each model gets a `SequenceNetwork` of the given width (initialised from
    `derive_seed(seed, "init")`, as in `seqmem.compare`), measured with `network_gradflow` on one
    held-out batch (the same for every model), then trained for `steps` steps with
    `seqmem.train.train` and measured again on the same batch.

    Args:
        models: the models: registered names, import paths `module:attr`, `ModelSpec`s or classes
            (`seqmem.registry.resolve_model`).
        task: a task name.
        seq_len: the sequence length.
        width: the network width (`hidden_size` of a recurrence, `d_model` otherwise).
        steps: training steps between the two measurements; 0 measures at initialisation only.
        batch_size: sequences per training step.
        lr: peak learning rate of the training.
        clip: gradient clipping threshold of the training, or `None`.
        measure_batch: sequences in the measured batch.
        seed: seeds the initialisation, training data and the measured batch.
        task_kwargs: options of the task.
        ord: matrix norm of the Jacobians, `2` or `"fro"`.
        out: folder for `gradflow.json` and `gradflow.png` (written atomically), or `None`.
        plot: draw `gradflow.png` (with `out` and matplotlib).

    Returns:
        `{"config": {...}, "models": {name: {"before": report, "after": report or None,
        "train": TrainResult dict or None}}}` (non-finite numbers as `None`).

    Raises:
        ValueError: for an unknown model or task, or non-positive sizes.
    """
    specs = {spec.name: spec for spec in resolve_models(models, "gradflow")}
    for name, value in (("seq_len", seq_len), ("width", width), ("batch_size", batch_size),
                        ("measure_batch", measure_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"gradflow: {name} must be a positive int, got {value!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"gradflow: steps must be an int >= 0, got {steps!r}")
    the_task = get_task(task, seq_len=seq_len, **(task_kwargs or {}))
    gen = torch.Generator().manual_seed(derive_seed(seed, "gradflow"))
    batch = the_task.sample(measure_batch, gen, split="eval")
    result: dict[str, Any] = {
        "config": {"models": list(specs), "task": task, "task_config": the_task.config(), "seq_len": seq_len,
                   "width": width, "steps": steps, "batch_size": batch_size, "lr": lr, "clip": clip,
                   "measure_batch": measure_batch, "seed": seed, "ord": ord},
        "models": {},
    }
    for name, m in specs.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "init"))
            net = SequenceNetwork.for_task(m, the_task, width)
            entry: dict[str, Any] = {
                "params": net.num_parameters(),
                "before": network_gradflow(net, the_task, batch, ord=ord),
                "after": None,
                "train": None,
            }
            if steps:
                trained = train(net, the_task, steps, batch_size=batch_size, lr=lr, clip=clip, seed=seed,
                                eval_batches=2)
                entry["train"] = trained.to_dict()
                entry["after"] = network_gradflow(net, the_task, batch, ord=ord)
        result["models"][name] = entry
    result = _clean(result)
    if out is not None:
        from ._files import atomic_write_bytes

        folder = Path(out)
        text = json.dumps(result, indent=1, allow_nan=False) + "\n"
        atomic_write_bytes(folder / f"{GRADFLOW_FILE}.json", text.encode("utf-8"))
        if plot:
            plot_gradflow(result, folder / f"{GRADFLOW_FILE}.png")
    return result


def _log_line(ax: Any, xs: Any, ys: Any, **kw: Any) -> None:
    """Plot the positive, known points only (a log axis cannot show 0 or None)."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and y > 0]
    if pts:
        ax.plot(*zip(*pts, strict=True), **kw)


def plot_gradflow(result: dict[str, Any], path: str | os.PathLike[str]) -> Path | None:
    """Draw the curves of a `gradflow` result on log scales, before (dashed) and after (solid) training.

    Four panels: $\\|\\partial L/\\partial h_t\\|$ against `t`; $\\|\\partial h_{T-1}/\\partial h_t\\|$
    against the distance; the LSTM's forget-gate product and cell Jacobian, and the GRU's update-gate
    product, against the distance; the spectral radius of each recurrent gate block. Written atomically.

    Args:
        result: what `gradflow` returned (or its JSON file, loaded).
        path: where to write the PNG.

    Returns:
        The path written, or `None` without matplotlib.
    """
    from .plots import figure_class

    if figure_class() is None:
        return None
    from .plotstyle import plot_style, save_figure

    with plot_style():
        return save_figure(_gradflow_figure(result), Path(path))


def _gradflow_figure(result: dict[str, Any]) -> Any:
    """The four panels of `plot_gradflow`, stacked at the page's width, legends beside them."""
    from matplotlib.figure import Figure

    from .plotstyle import FIGURE_WIDTH, model_style

    cfg = result["config"]
    fig = Figure(figsize=(FIGURE_WIDTH, 13.0))
    ax_h, ax_j, ax_c, ax_r = fig.subplots(4, 1)
    bars: list[tuple[str, str, float]] = []
    for name, entry in result["models"].items():
        color, marker = model_style(name)
        for phase, style in (("before", "--"), ("after", "-")):
            rep = entry.get(phase)
            if not rep:
                continue
            label = f"{name} {phase}"
            T = rep["seq_len"]
            dist = rep["distance"]

            kw = {"linestyle": style, "color": color}
            _log_line(ax_h, range(T), rep["hidden_grad_norm"], label=label, **kw)
            if "jacobian_norm" in rep:
                _log_line(ax_j, dist, rep["jacobian_norm"], label=label, **kw)
            if "forget_gate_product" in rep:
                _log_line(ax_c, dist, rep["forget_gate_product"], label=f"{label}: prod f", marker=marker,
                          markevery=max(1, len(dist) // 10), **kw)
                _log_line(ax_c, dist, rep["cell_jacobian_norm"], label=f"{label}: |dc_T/dc_t|", **kw)
            if "update_gate_product" in rep:
                _log_line(ax_c, dist, rep["update_gate_product"], label=f"{label}: prod z", marker=marker,
                          markevery=max(1, len(dist) // 10), **kw)
            for gate, rho in (rep.get("spectral_radius") or {}).items():
                bars.append((f"{name} {gate}", phase, rho))
    ax_h.set(yscale="log", xlabel="t (position)", ylabel="||dL/dh_t||",
             title=f"task-loss gradient reaching each step ({cfg['task']}, T={cfg['seq_len']})")
    ax_j.set(yscale="log", xlabel="T - 1 - t (distance)", ylabel="||dh_{T-1}/dh_t||_2",
             title="state-to-state Jacobian product")
    ax_c.set(yscale="log", xlabel="T - 1 - t (distance)", ylabel="gain",
             title="keep-gate path (LSTM forget gate f, GRU update gate z)")
    if bars:
        groups = list(dict.fromkeys(g for g, _, _ in bars))
        for k, (phase, color) in enumerate((("before", "#BBBBBB"), ("after", "#555555"))):
            pts = [(groups.index(g), rho) for g, ph, rho in bars if ph == phase]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax_r.barh([y - 0.2 + 0.4 * k for y in xs], ys, height=0.4, color=color, label=phase)
        ax_r.set_yticks(range(len(groups)), groups)
        ax_r.invert_yaxis()
        ax_r.axvline(1.0, color="gray", linestyle="--", linewidth=1)
        ax_r.grid(axis="y", visible=False)
    ax_r.set(xlabel="spectral radius", title="recurrent matrix, per gate block")
    for ax in (ax_h, ax_j, ax_c, ax_r):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle(f"gradient flow, width {cfg['width']}, {cfg['steps']} training steps\n"
                 "(dashed: before training, solid: after)")
    return fig
