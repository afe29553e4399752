"""What every task shares: the `Task` interface, the `Batch` it samples, and its loss and metric.

A task is a distribution over sequences of a fixed length `seq_len`, sampled on the fly with a
`torch.Generator`, plus the rule that turns a network's outputs into a loss and a metric. Two
axes describe every task, so one training loop serves them all:

| | `target="last"` (one target per sequence) | `target="all"` (a target at masked positions) |
| --- | --- | --- |
| `loss_kind="cross_entropy"` | XOR-echo, induction, digits, vowels | character LM, copy, selective copy, recall |
| `loss_kind="mse"` | the adding problem | your data with `(N, T, K)` float targets |

Inputs are either tokens (`input_kind="tokens"`: `x` is `(batch, seq_len)` int64 in
`[0, vocab_size)`) or real vectors (`input_kind="real"`: `x` is `(batch, seq_len, input_size)`
float32). A network reads the whole sequence and emits `(batch, seq_len, output_size)` outputs;
the task picks the positions that count.

Variable-length sequences (users' data, `seqmem.tasks.from_arrays`) are right-padded to
`seq_len` and carry their lengths in `Batch.lengths`: positions at or after a sequence's length
are padding, never scored, and a `target="last"` label is read at the sequence's last valid step
`lengths - 1`. Every sequence model of seqmem is causal, so padding after a sequence cannot change
its outputs at the valid steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Batch", "BatchScore", "Task"]

TARGETS = ("last", "all")
LOSSES = ("cross_entropy", "mse")
METRICS = ("accuracy", "bits_per_char", "mse")


class _BatchFields(NamedTuple):
    x: Tensor
    y: Tensor
    mask: Tensor | None = None


class Batch(_BatchFields):
    """A batch of sequences and their targets.

    A named tuple of `(x, y, mask)`, so `x, y, mask = task.sample(...)` unpacks it, plus one
    attribute-only field, `lengths`, for variable-length sequences (as `os.stat_result` keeps its
    later fields out of the tuple). `Batch(x, y, mask, lengths)` builds one; `_replace`, `copy`
    and pickling keep `lengths`.

    Attributes:
        x: inputs, `(batch, seq_len)` int64 tokens or `(batch, seq_len, input_size)` float32.
        y: targets. `target="last"`: `(batch,)` int64 class ids (cross-entropy) or
            `(batch, output_size)` float32 (mse). `target="all"`: `(batch, seq_len)` int64 class
            ids (cross-entropy) or `(batch, seq_len, output_size)` float32 (mse).
        mask: `(batch, seq_len)` bool, the positions that carry a target (`target="all"`), or
            `None` (`target="last"`: only the last position counts; `target="all"`: every position).
        lengths: `(batch,)` int64, the number of valid steps of each right-padded sequence, in
            `[1, seq_len]`, or `None` (every sequence fills `seq_len`). Positions `t >= lengths[b]`
            are padding: never scored; `target="last"` reads sequence `b`'s output and label at
            step `lengths[b] - 1`. A sequence whose last valid step lies outside the batch's
            positions (a chunk of truncated BPTT that ends before it, or one that starts after it)
            is not scored in that batch.
    """

    lengths: Tensor | None

    def __new__(cls, x: Tensor, y: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None) -> Batch:
        self = super().__new__(cls, x, y, mask)
        self.__dict__["lengths"] = lengths
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Batch is immutable; use batch._replace({name}=...)")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.x, self.y, self.mask, self.lengths))

    def __repr__(self) -> str:
        tail = "" if self.lengths is None else f", lengths={self.lengths!r}"
        return f"{super().__repr__()[:-1]}{tail})"

    @classmethod
    def _make(cls, iterable: Any) -> Batch:
        return cls(*iterable)

    def _replace(self, **changes: Any) -> Batch:
        return type(self)(**{**self._asdict(), **changes})

    def _asdict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "mask": self.mask, "lengths": self.lengths}

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor moved to `device`.

        Args:
            device: the target device.

        Returns:
            A new `Batch`.
        """
        return type(self)(**{k: None if v is None else v.to(device) for k, v in self._asdict().items()})


class BatchScore(NamedTuple):
    """Sums over the scored targets of one batch; add them up over batches, then divide by `count`.

    Attributes:
        loss_sum: sum of the per-target losses (nats for cross-entropy, squared error for mse).
        metric_sum: sum of the per-target metric (correct predictions, bits, or squared error).
        count: number of scored targets (sequences for `target="last"`, masked positions for `"all"`).
    """

    loss_sum: float
    metric_sum: float
    count: int


class Task:
    """Base class of seqmem's tasks: a seeded, on-the-fly sequence distribution with a loss and metric.

    Subclasses set the class attributes, call `super().__init__(seq_len)` and implement `sample`
    (and `config` when they take options); `loss` and `score` come with the base class.

    Attributes:
        name: the registry name, e.g. `"xor-echo"`.
        description: one line for `seqmem list`.
        input_kind: `"tokens"` or `"real"`.
        target: `"last"` (one target per sequence, read at the last position) or `"all"`
            (a target at every position where `mask` is true).
        loss_kind: `"cross_entropy"` (classification; `output_size` classes) or `"mse"` (regression).
        metric_name: `"accuracy"` (higher is better), `"bits_per_char"` or `"mse"` (lower is better).
        seq_len: length of every sequence.
        vocab_size: number of input tokens (`input_kind="tokens"`), else `None`.
        input_size: number of input features (`input_kind="real"`), else `None`.
        output_size: number of classes (cross-entropy) or of regression targets (mse).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    input_kind: ClassVar[str] = "tokens"
    target: ClassVar[str] = "last"
    loss_kind: ClassVar[str] = "cross_entropy"
    metric_name: ClassVar[str] = "accuracy"

    vocab_size: int | None = None
    input_size: int | None = None
    output_size: int

    def __init__(self, seq_len: int) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            where = self.name or type(self).__name__
            raise ValueError(f"{where}: seq_len must be a positive int, got {seq_len!r}")
        self.seq_len = seq_len

    # ------------------------------------------------------------------ description
    @property
    def higher_is_better(self) -> bool:
        """Whether a larger metric is better (accuracy) or worse (bits per char, mse)."""
        return self.metric_name == "accuracy"

    @property
    def chance(self) -> float | None:
        """The metric of a model that ignores its input (a baseline for plots), or `None` if unknown."""
        return None

    def config(self) -> dict[str, Any]:
        """The options that define this task besides `seq_len` (JSON-serialisable).

        They enter the content hash of a comparison run, so two runs with the same config see the
        same data distribution.

        Returns:
            A dict of option name to value; empty for a task without options.
        """
        return {}

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.config().items() if not k.endswith("_sha256"))
        return f"{type(self).__name__}(seq_len={self.seq_len}{opts})"

    # ------------------------------------------------------------------ data
    def sample(self, batch_size: int, generator: torch.Generator, split: str = "train") -> Batch:
        """Draw a batch of sequences.

        Args:
            batch_size: number of sequences.
            generator: the source of randomness (`torch.Generator().manual_seed(seed)`): the same
                seed gives the same batch.
            split: `"train"` or `"eval"`. Synthetic tasks draw both from the same distribution (use
                another generator seed for held-out data); tasks on real data draw `"eval"` batches
                from their held-out split.

        Returns:
            A `Batch` with the shapes described in the class docstring.

        Raises:
            ValueError: for a non-positive `batch_size` or an unknown split.
        """
        raise NotImplementedError

    def _check_sample_args(self, batch_size: int, split: str) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{self.name}: batch_size must be a positive int, got {batch_size!r}")
        if split not in ("train", "eval"):
            raise ValueError(f"{self.name}: split must be 'train' or 'eval', got {split!r}")

    def eval_set(self, batch_size: int) -> Iterator[Batch] | None:
        """Every held-out sequence once, in a fixed order, for a task with a finite held-out set.

        `seqmem.train.evaluate` scores these batches, when there are some, instead of sampling:
        the metric is then exact over the whole validation set. Synthetic tasks and the data-set
        tasks that sample their held-out split return `None` (the default).

        Args:
            batch_size: sequences per batch (the last batch may be smaller).

        Returns:
            An iterator of `Batch`es covering the held-out set exactly once, or `None`.
        """
        return None

    # ------------------------------------------------------------------ loss and metric
    def _scored(self, logits: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """The outputs and targets that count, flattened: `(n, output_size)` and `(n,)` or `(n, k)`."""
        B, T = batch.x.shape[:2]
        if logits.dim() != 3 or tuple(logits.shape) != (B, T, self.output_size):
            raise ValueError(
                f"{self.name}: outputs must have shape (batch, seq_len, output_size) = "
                f"{(B, T, self.output_size)}, got {tuple(logits.shape)}"
            )
        lengths = batch.lengths
        if self.target == "last":
            if lengths is None:
                return logits[:, -1], batch.y
            last = lengths.to(logits.device) - 1  # (B,) the last valid step of each sequence
            rows = ((last >= 0) & (last < T)).nonzero().squeeze(1)  # (n,) the sequences that end here
            return logits[rows, last[rows]], batch.y[rows]
        mask = batch.mask
        if lengths is not None:
            valid = torch.arange(T, device=logits.device) < lengths.to(logits.device)[:, None]  # (B, T)
            mask = valid if mask is None else mask & valid
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=logits.device)
        return logits[mask], batch.y[mask]

    def loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """The training loss: the mean over scored targets.

        Args:
            logits: `(batch, seq_len, output_size)` network outputs (unnormalised log-probabilities
                for cross-entropy, predictions for mse).
            batch: the batch they were computed from.

        Returns:
            A scalar tensor: mean cross-entropy in nats, or mean squared error.

        Raises:
            ValueError: if `logits` does not have the shape `(batch, seq_len, output_size)`.
        """
        out, y = self._scored(logits, batch)
        if self.loss_kind == "mse":
            return F.mse_loss(out, y.reshape(out.shape))
        return F.cross_entropy(out, y)

    @torch.no_grad()
    def score(self, logits: Tensor, batch: Batch) -> BatchScore:
        """Loss and metric sums over one batch, for exact averages over many batches.

        Args:
            logits: `(batch, seq_len, output_size)` network outputs.
            batch: the batch they were computed from.

        Returns:
            A `BatchScore`. The metric of several batches is `sum(metric_sum) / sum(count)`.

        Raises:
            ValueError: if `logits` does not have the shape `(batch, seq_len, output_size)`.
        """
        out, y = self._scored(logits, batch)
        n = int(y.shape[0])
        if self.loss_kind == "mse":
            se = (out - y.reshape(out.shape)).pow(2).reshape(n, -1).mean(dim=1).sum().item()
            return BatchScore(se, se, n)
        nats = F.cross_entropy(out.float(), y, reduction="sum").item()
        if self.metric_name == "accuracy":
            metric = (out.argmax(dim=-1) == y).sum().item()
        else:  # bits per char: cross-entropy in bits
            metric = nats / math.log(2)
        return BatchScore(nats, float(metric), n)
