"""The training loop: AdamW, warm-up then cosine decay, gradient clipping, truncated BPTT, a NaN guard.

Deliberately small and explicit, so a comparison measures the models and not the loop: every model
gets the same optimiser, schedule, clipping, batches (the same data seed gives the same batches)
and evaluation set.

Truncated backpropagation through time (`tbptt=K`): each batch is run in chunks of `K` positions;
the state is carried from chunk to chunk (exact, since chunked streaming is exact for every
`SequenceModel`) but detached at every chunk boundary, so the loss of a chunk backpropagates only
within that chunk. The chunk losses are weighted by their share of the scored targets, so they add
up to the full-sequence loss, and the gradients of all chunks of a batch are summed into one
optimiser step (one step per batch, as without truncation). Consequences by target kind:

- `target="all"` (a target at many positions: copy, language modelling): each chunk's targets teach
  the network through at most `K` steps of its past; with `K >= seq_len` it is exactly full BPTT.
- `target="last"` (one target per sequence: XOR-echo, adding): only the last chunk carries a loss,
  so only the last `K` steps (`seq_len - K * floor((seq_len - 1) / K)` of them) receive gradient;
  the earlier chunks run forward only (without building a graph). Information from before the last
  chunk boundary can still reach the output through the carried state, but the network gets no
  gradient telling it to keep it: with `K < seq_len` a task whose answer depends on the first symbol
  cannot be learnt by gradient, which is the point of the seeds' TBPTT ablation.

A task with `target="last"` (and sequences of one length) reads one position per sequence, so the
loop asks a `SequenceNetwork` for that position alone (`network(x, last=1)`): the loss, gradients and
metric are those of the full pass, and the transformer's last block skips every other query (at
length 1,000 a training step of the claims page's 20k-parameter transformer takes 0.90 s instead of
1.67 s on one core).

References:
    Williams, R. J. & Peng, J. (1990). An efficient gradient-based algorithm for on-line training
    of recurrent network trajectories. Neural Computation 2(4) (truncated BPTT).
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

from .network import SequenceNetwork
from .protocol import map_state
from .tasks.base import Batch, Task

__all__ = ["EvalResult", "TrainResult", "backward_loss", "derive_seed", "evaluate", "lr_at", "train"]

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
        max_grad_norm: the largest global gradient norm seen before clipping (`nan` if no step).
        clipped_steps: the steps whose gradient norm exceeded `clip` and was scaled down.
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
    max_grad_norm: float = math.nan
    clipped_steps: int = 0
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
    if isinstance(batch, Batch):
        return batch.to(device)
    return type(batch)(*(t.to(device) if t is not None else None for t in batch))


def evaluate(
    network: nn.Module, task: Task, n_batches: int = 8, seed: int = 0, *, batch_size: int = 256
) -> EvalResult:
    """Loss and metric of a network on held-out data.

    Synthetic tasks draw `n_batches` batches of fresh sequences from a generator seeded apart from
    training (`derive_seed(seed, "eval")`); the data-set tasks `digits` and `vowels` draw them from
    their held-out split. The same `seed` gives the same batches, so models evaluated with it see
    the same data. A task with a finite validation set that it lists (`Task.eval_set` is not
    `None`: users' data, `seqmem.tasks.from_arrays`) is instead scored on every validation sequence
    exactly once, in batches of `batch_size`; `n_batches` and `seed` are then not used.

    Args:
        network: maps `batch.x` to `(logits, state)`, logits `(batch, seq_len, output_size)`
            (a `SequenceNetwork`).
        task: the task.
        n_batches: number of sampled batches.
        seed: the evaluation seed.
        batch_size: sequences per batch.

    Returns:
        An `EvalResult`, exact averages over all scored targets.

    Raises:
        ValueError: for a non-positive `n_batches` or `batch_size`.
    """
    _check_positive("evaluate", n_batches=n_batches, batch_size=batch_size)
    batches = task.eval_set(batch_size)
    if batches is None:
        gen = torch.Generator().manual_seed(derive_seed(seed, "eval"))
        batches = (task.sample(batch_size, gen, split="eval") for _ in range(n_batches))
    device = _device(network)
    was_training = network.training
    network.eval()
    loss_sum = metric_sum = 0.0
    count = 0
    try:
        with torch.no_grad():
            for cpu_batch in batches:
                batch = _to(cpu_batch, device)
                score = task.score(_logits(network, task, batch), batch)
                loss_sum += score.loss_sum
                metric_sum += score.metric_sum
                count += score.count
    finally:
        network.train(was_training)
    if count == 0:  # a task whose masks scored nothing
        return EvalResult(math.nan, math.nan, task.metric_name, 0)
    return EvalResult(loss_sum / count, metric_sum / count, task.metric_name, count)


def _logits(network: nn.Module, task: Task, batch: Batch) -> torch.Tensor:
    """The network's `(B, T, O)` logits over a whole batch, as the task's `loss` and `score` read them.

    A task with `target="last"` and no `lengths` reads the last position only: a `SequenceNetwork`
    then computes that position alone (`last=1`, which spares the transformer's last block all
    other queries) and the positions before it hold zeros, which the task never reads. The loss,
    the gradients and the metric are those of the full forward pass.
    """
    if task.target == "last" and batch.lengths is None and isinstance(network, SequenceNetwork):
        logits, _ = network(batch.x, last=1)  # (B, 1, O)
        B, T = batch.x.shape[:2]
        return torch.cat((logits.new_zeros(B, T - 1, logits.shape[-1]), logits), dim=1)  # (B, T, O)
    logits, _ = network(batch.x)
    return logits


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


def _chunk(task: Task, batch: Batch, start: int, end: int) -> tuple[Batch, int]:
    """The part of a batch in positions `[start, end)`, and the number of targets it scores."""
    B, T = batch.x.shape[:2]
    x = batch.x[:, start:end]
    lengths = batch.lengths
    if task.target == "last":
        if lengths is None:
            return Batch(x, batch.y, None), (B if end == T else 0)
        ends_here = (lengths > start) & (lengths <= end)  # (B,) the sequences whose last step is in the chunk
        return Batch(x, batch.y, None, lengths - start), int(ends_here.sum())
    mask = batch.mask
    if lengths is not None:
        valid = torch.arange(T, device=lengths.device) < lengths[:, None]  # (B, T)
        mask = valid if mask is None else mask & valid
    mask = None if mask is None else mask[:, start:end]
    count = B * (end - start) if mask is None else int(mask.sum())
    return Batch(x, batch.y[:, start:end], mask), count


def backward_loss(network: nn.Module, task: Task, batch: Batch, tbptt: int | None = None) -> float:
    """Compute a batch's loss and accumulate its gradient into the parameters' `.grad`.

    With `tbptt=None` (or `tbptt >= seq_len`), one forward pass over the whole sequence and one
    backward pass: full backpropagation through time. With `tbptt=K < seq_len`, truncated BPTT:
    the sequence is run in chunks of `K` positions (the last one shorter if `K` does not divide
    `seq_len`), the state is carried between chunks and detached at each boundary, and each
    chunk's loss is backpropagated within its chunk only. Each chunk's mean loss is weighted by the
    fraction of the batch's scored targets it holds, so the weighted chunk losses add up to the
    full-sequence loss `task.loss(network(x), batch)`. Chunks without a scored target (all but the
    last for `target="last"` tasks) run without a graph. See the module docstring for what this
    means for each kind of task.

    If a chunk's loss is NaN or inf, nothing more is backpropagated and the non-finite value is
    returned (the caller's NaN guard stops there).

    Args:
        network: maps `x` (and a state) to `(logits, state)`, e.g. a `SequenceNetwork`.
        task: the task whose `loss` is used.
        batch: the batch, `x` of shape `(batch, seq_len, ...)`.
        tbptt: the truncation length `K` in positions, a positive int, or `None` for full BPTT.

    Returns:
        The loss of the batch (mean over its scored targets), as a float.

    Raises:
        ValueError: if `tbptt` is not `None` or a positive int.

    References:
        Williams, R. J. & Peng, J. (1990). Neural Computation 2(4) (truncated BPTT).
    """
    if tbptt is not None and (isinstance(tbptt, bool) or not isinstance(tbptt, int) or tbptt < 1):
        raise ValueError(f"backward_loss: tbptt must be a positive int or None, got {tbptt!r}")
    T = batch.x.shape[1]
    if tbptt is None or tbptt >= T:
        loss = task.loss(_logits(network, task, batch), batch)
        value = loss.item()
        if math.isfinite(value):
            loss.backward()
        return value
    bounds = [(s, min(s + tbptt, T)) for s in range(0, T, tbptt)]
    parts = [_chunk(task, batch, s, e) for s, e in bounds]
    total = sum(count for _, count in parts)
    state = None
    value = 0.0
    for chunk, count in parts:
        if count == 0:  # nothing to score here: carry the state forward without a graph
            with torch.no_grad():
                _, state = network(chunk.x, state)
        else:
            logits, state = network(chunk.x, state)
            loss = task.loss(logits, chunk) * (count / max(total, 1))
            part = loss.item()
            value += part
            if not math.isfinite(part):
                return part
            loss.backward()
        state = map_state(state, torch.Tensor.detach)  # truncate: no gradient crosses this boundary
    return value


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
    tbptt: int | None = None,
    callback: StepCallback | None = None,
) -> TrainResult:
    """Train a network on a task with AdamW, then evaluate it on held-out data.

    Each step draws a fresh batch (`task.sample`, from a generator seeded with
    `derive_seed(seed, "data")`), computes the task's loss, backpropagates through the whole
    sequence (or through chunks of `tbptt` steps: `backward_loss`), clips the global gradient norm
    to `clip` and takes an AdamW step. The learning rate
    warms up linearly for `warmup` steps and then follows a cosine down to `min_lr_ratio * lr`
    (`lr_at`). Weight decay applies to weight matrices only (not biases, norms, `A_log`, `D`).
    Computation runs in the network's dtype and on its device (float32 by default).

    NaN guard: if a step's loss or gradient norm is NaN or inf, training stops before the update,
    and the result records the step (`diverged_at`) and what was non-finite; no exception is
    raised. The network keeps the last finite parameters and is still evaluated. The result also
    records the largest gradient norm seen and how many steps clipping scaled down, which shows
    what clipping did (Pascanu et al. 2013).

    Args:
        network: a `SequenceNetwork` (or any module mapping `batch.x` to `(logits, state)`).
        task: the task.
        steps: optimisation steps, a positive int.
        batch_size: sequences per step.
        lr: peak learning rate.
        weight_decay: AdamW's decoupled weight decay, on weight matrices.
        clip: the largest global gradient norm (`torch.nn.utils.clip_grad_norm_`), or `None` (or
            0) for no clipping (the norm is still measured and checked for NaN/inf).
        warmup: warm-up steps; `None` for `min(100, steps // 10)`.
        min_lr_ratio: the final learning rate as a fraction of `lr`.
        seed: seeds torch's global generator (`torch.manual_seed`) and the training batches.
        eval_batches: held-out batches evaluated after training (see `evaluate`).
        eval_batch_size: sequences per held-out batch.
        eval_seed: the evaluation seed; keep it fixed to evaluate every run on the same data.
        tbptt: truncated BPTT over chunks of this many positions (see `backward_loss`), or
            `None` for full BPTT.
        callback: called after every step as `callback(step, steps, loss)`, `step` 1-based
            (e.g. to advance a progress bar).

    Returns:
        A `TrainResult`.

    Raises:
        ValueError: for a non-positive `steps`, `batch_size` or evaluation size, a non-positive or
            non-finite `lr`, a negative `weight_decay`, a negative `clip`, or a `tbptt` that is not a
            positive int.

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
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip >= 0):
        raise ValueError(f"train: clip must be a number >= 0 (0: no clipping) or None, got {clip!r}")
    if tbptt is not None and (isinstance(tbptt, bool) or not isinstance(tbptt, int) or tbptt < 1):
        raise ValueError(f"train: tbptt must be a positive int or None, got {tbptt!r}")
    clip = None if clip is None or clip == 0 else float(clip)
    if warmup is None:
        warmup = min(100, steps // 10)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"train: warmup must be an int >= 0, got {warmup!r}")

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(derive_seed(seed, "data"))
    device = _device(network)
    params = [p for p in network.parameters() if p.requires_grad]
    # the first optimiser of a process imports torch._dynamo (about a second): not part of training
    opt = torch.optim.AdamW(_param_groups(network, weight_decay), lr=lr, betas=(0.9, 0.99))
    t0, c0 = time.perf_counter(), time.process_time()
    network.train()
    losses: list[float] = []
    diverged_at: int | None = None
    diverged: str | None = None
    max_norm = clip if clip is not None else math.inf
    max_seen, clipped = math.nan, 0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup, min_lr_ratio)
        batch = _to(task.sample(batch_size, gen, split="train"), device)
        opt.zero_grad(set_to_none=True)
        value = backward_loss(network, task, batch, tbptt)
        if not math.isfinite(value):
            diverged_at, diverged = step + 1, f"loss is {value} at step {step + 1}"
            break
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not math.isfinite(norm):
            diverged_at, diverged = step + 1, f"gradient norm is {norm} at step {step + 1}"
            break
        max_seen = norm if math.isnan(max_seen) else max(max_seen, norm)
        clipped += norm > max_norm
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
        max_grad_norm=max_seen,
        clipped_steps=int(clipped),
        losses=losses,
    )
