"""The training loop: AdamW, warm-up then cosine decay, gradient clipping, a NaN guard, evaluation.

Deliberately small and explicit, so a comparison measures the models and not the loop: every model
gets the same optimiser, schedule, clipping, batches (the same data seed gives the same batches)
and evaluation set.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from .tasks.base import Task

__all__ = ["EvalResult", "TrainResult", "derive_seed", "evaluate", "lr_at", "train"]

StepCallback = Callable[[int, int, float], None]


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one purpose ("init", "data", "eval") of one user seed.

    Torch's global generator and a `torch.Generator` seeded alike draw the same numbers; deriving
    a seed per purpose keeps the initial weights, the training batches and the evaluation batches
    independent of each other.

    Args:
        seed: the user's seed.
        purpose: a label.

    Returns:
        A seed in `[0, 2**63)`.
    """
    digest = hashlib.sha256(f"seqmem:{purpose}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def lr_at(step: int, steps: int, lr: float, warmup: int, min_lr_ratio: float = 0.1) -> float:
    """The learning rate at a step: linear warm-up, then cosine decay to `min_lr_ratio * lr`.

    Args:
        step: the step, from 0 to `steps - 1`.
        steps: the number of steps of the run.
        lr: the peak learning rate.
        warmup: warm-up steps (the rate rises linearly from `lr / warmup` to `lr`).
        min_lr_ratio: the final rate as a fraction of `lr`.

    Returns:
        The learning rate.

    References:
        Loshchilov, I. & Hutter, F. (2017). SGDR: stochastic gradient descent with warm restarts.
        ICLR, eq. (5) (cosine annealing, here without restarts).
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup - 1)
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


class EvalResult(NamedTuple):
    """Loss and metric on held-out batches.

    Attributes:
        loss: mean loss per scored target (nats for cross-entropy, squared error for mse).
        metric: the task's metric (`metric_name`) over the same targets.
        metric_name: `"accuracy"`, `"bits_per_char"` or `"mse"`.
        count: number of scored targets.
    """

    loss: float
    metric: float
    metric_name: str
    count: int


@dataclass
class TrainResult:
    """What a training run did and reached.

    Attributes:
        steps: optimisation steps completed (fewer than asked if the run diverged).
        train_loss: mean training loss over the last tenth of the completed steps (`nan` if none).
        eval_loss: held-out loss after training (`None` if the network's outputs are not finite).
        metric_name: the task's metric.
        metric: the held-out metric after training (`None` as `eval_loss`).
        wall_s: seconds spent training and evaluating (wall clock).
        cpu_s: CPU seconds of the process over the same span, all threads together: on a busy
            machine, a better measure of the work than `wall_s`.
        diverged_at: the 1-based step whose loss or gradient was NaN or inf, or `None`.
        diverged: what was non-finite at that step, or `None`.
        losses: the training loss of every completed step.
    """

    steps: int
    train_loss: float
    eval_loss: float | None
    metric_name: str
    metric: float | None
    wall_s: float
    cpu_s: float = math.nan
    diverged_at: int | None = None
    diverged: str | None = None
    losses: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, losses: bool = False) -> dict[str, Any]:
        """The result as a dict (with the loss curve if `losses`).

        Args:
            losses: include the per-step training losses.

        Returns:
            A JSON-serialisable dict.
        """
        out = asdict(self)
        if not losses:
            out.pop("losses")
        return out


def _check_positive(where: str, **values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


def _device(network: nn.Module) -> torch.device:
    p = next(network.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _to(batch: Any, device: torch.device) -> Any:
    return type(batch)(*(t.to(device) if t is not None else None for t in batch))


def evaluate(
    network: nn.Module, task: Task, n_batches: int = 8, seed: int = 0, *, batch_size: int = 256
) -> EvalResult:
    """Loss and metric of a network on held-out data.

    Synthetic tasks draw fresh sequences from a generator seeded apart from training
    (`derive_seed(seed, "eval")`); tasks on real data draw from their held-out split. The same
    `seed` gives the same batches, so models evaluated with it see the same data.

    Args:
        network: maps `batch.x` to `(logits, state)`, logits `(batch, seq_len, output_size)`
            (a `SequenceNetwork`).
        task: the task.
        n_batches: number of batches.
        seed: the evaluation seed.
        batch_size: sequences per batch.

    Returns:
        An `EvalResult`, exact averages over all scored targets.

    Raises:
        ValueError: for a non-positive `n_batches` or `batch_size`.
    """
    _check_positive("evaluate", n_batches=n_batches, batch_size=batch_size)
    gen = torch.Generator().manual_seed(derive_seed(seed, "eval"))
    device = _device(network)
    was_training = network.training
    network.eval()
    loss_sum = metric_sum = 0.0
    count = 0
    try:
        with torch.no_grad():
            for _ in range(n_batches):
                batch = _to(task.sample(batch_size, gen, split="eval"), device)
                logits, _ = network(batch.x)
                score = task.score(logits, batch)
                loss_sum += score.loss_sum
                metric_sum += score.metric_sum
                count += score.count
    finally:
        network.train(was_training)
    if count == 0:  # a task whose masks scored nothing
        return EvalResult(math.nan, math.nan, task.metric_name, 0)
    return EvalResult(loss_sum / count, metric_sum / count, task.metric_name, count)


def _param_groups(network: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay the matrices (linear, embedding, convolution weights); not biases, norms, A_log or D."""
    decay, no_decay = [], []
    for name, p in network.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        skip = p.dim() < 2 or leaf in ("A_log", "D") or getattr(p, "_no_weight_decay", False)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(
    network: nn.Module,
    task: Task,
    steps: int,
    *,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    clip: float | None = 1.0,
    warmup: int | None = None,
    min_lr_ratio: float = 0.1,
    seed: int = 0,
    eval_batches: int = 8,
    eval_batch_size: int = 256,
    eval_seed: int = 0,
    callback: StepCallback | None = None,
) -> TrainResult:
    """Train a network on a task with AdamW, then evaluate it on held-out data.

    Each step draws a fresh batch (`task.sample`, from a generator seeded with
    `derive_seed(seed, "data")`), computes the task's loss, backpropagates through the whole
    sequence, clips the global gradient norm to `clip` and takes an AdamW step. The learning rate
    warms up linearly for `warmup` steps and then follows a cosine down to `min_lr_ratio * lr`
    (`lr_at`). Weight decay applies to weight matrices only (not biases, norms, `A_log`, `D`).
    Computation runs in the network's dtype and on its device (float32 by default).

    NaN guard: if a step's loss or gradient norm is NaN or inf, training stops before the update,
    and the result records the step (`diverged_at`) and what was non-finite; no exception is
    raised. The network keeps the last finite parameters and is still evaluated.

    Args:
        network: a `SequenceNetwork` (or any module mapping `batch.x` to `(logits, state)`).
        task: the task.
        steps: optimisation steps, a positive int.
        batch_size: sequences per step.
        lr: peak learning rate.
        weight_decay: AdamW's decoupled weight decay, on weight matrices.
        clip: the largest global gradient norm (`torch.nn.utils.clip_grad_norm_`), or `None` for
            no clipping (the norm is still checked for NaN/inf).
        warmup: warm-up steps; `None` for `min(100, steps // 10)`.
        min_lr_ratio: the final learning rate as a fraction of `lr`.
        seed: seeds torch's global generator (`torch.manual_seed`) and the training batches.
        eval_batches: held-out batches evaluated after training (see `evaluate`).
        eval_batch_size: sequences per held-out batch.
        eval_seed: the evaluation seed; keep it fixed to evaluate every run on the same data.
        callback: called after every step as `callback(step, steps, loss)`, `step` 1-based
            (e.g. to advance a progress bar).

    Returns:
        A `TrainResult`.

    Raises:
        ValueError: for a non-positive `steps`, `batch_size` or evaluation size, a non-positive or
            non-finite `lr`, a negative `weight_decay`, or a non-positive `clip`.

    References:
        Loshchilov, I. & Hutter, F. (2019). Decoupled weight decay regularization. ICLR (AdamW).
        Pascanu, R., Mikolov, T. & Bengio, Y. (2013). On the difficulty of training recurrent
        neural networks. ICML, Algorithm 1 (gradient norm clipping).

    Example:
        >>> import torch
        >>> from seqmem.network import SequenceNetwork
        >>> from seqmem.tasks import get_task
        >>> from seqmem.train import train
        >>> task = get_task("xor-echo", seq_len=4)
        >>> result = train(SequenceNetwork.for_task("gru", task, 16), task, steps=5, eval_batches=1)
        >>> result.steps, result.metric_name
        (5, 'accuracy')
    """
    _check_positive("train", steps=steps, batch_size=batch_size, eval_batches=eval_batches,
                    eval_batch_size=eval_batch_size)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"train: lr must be a positive finite number, got {lr!r}")
    if not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"train: weight_decay must be >= 0, got {weight_decay!r}")
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"train: clip must be a positive number or None, got {clip!r}")
    if warmup is None:
        warmup = min(100, steps // 10)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"train: warmup must be an int >= 0, got {warmup!r}")

    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(derive_seed(seed, "data"))
    device = _device(network)
    params = [p for p in network.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(_param_groups(network, weight_decay), lr=lr, betas=(0.9, 0.99))
    network.train()
    losses: list[float] = []
    diverged_at: int | None = None
    diverged: str | None = None
    max_norm = float(clip) if clip is not None else math.inf
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup, min_lr_ratio)
        batch = _to(task.sample(batch_size, gen, split="train"), device)
        logits, _ = network(batch.x)
        loss = task.loss(logits, batch)
        value = loss.item()
        if not math.isfinite(value):
            diverged_at, diverged = step + 1, f"loss is {value} at step {step + 1}"
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not math.isfinite(norm):
            diverged_at, diverged = step + 1, f"gradient norm is {norm} at step {step + 1}"
            break
        opt.step()
        losses.append(value)
        if callback is not None:
            callback(step + 1, steps, value)
    opt.zero_grad(set_to_none=True)

    tail = losses[-max(1, len(losses) // 10):]
    train_loss = sum(tail) / len(tail) if tail else math.nan
    ev = evaluate(network, task, eval_batches, eval_seed, batch_size=eval_batch_size)
    finite = math.isfinite(ev.loss) and math.isfinite(ev.metric)
    return TrainResult(
        steps=len(losses),
        train_loss=train_loss,
        eval_loss=ev.loss if finite else None,
        metric_name=task.metric_name,
        metric=ev.metric if finite else None,
        wall_s=time.perf_counter() - t0,
        cpu_s=time.process_time() - c0,
        diverged_at=diverged_at,
        diverged=diverged,
        losses=losses,
    )
