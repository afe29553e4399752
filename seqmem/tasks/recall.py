"""Recall from context: induction heads (one trigger, one answer) and multi-query associative recall."""

from __future__ import annotations

from typing import Any

import torch

from ._options import check_int, check_min_seq_len, distinct_positions
from .base import Batch, Task

__all__ = ["AssocRecall", "Induction"]


class Induction(Task):
    r"""Induction heads: after a trigger token, recall the token that followed its first occurrence.

    Tokens: `0 .. vocab_size - 2` are ordinary, `vocab_size - 1` is the trigger. A sequence of
    length $L$ = `seq_len` is uniform ordinary tokens, except that the trigger appears exactly
    twice: once at a position $p$ drawn uniformly from $[0, \lfloor (L - 1) / 2 \rfloor)$, followed
    by the answer $a = x_{p+1}$ (an ordinary token, so the pair sits in the first half), and once
    more at the last position $L - 1$. The network must output $a$ there: "after the trigger
    comes what came after it last time", the pattern an induction head (a previous-token head
    composed with a matching head) completes. The gap between the answer and the question is
    at least about $L / 2$, so `seq_len` measures how far back the network can recall.

    Shapes: `x` is `(batch, seq_len)` int64 in `[0, vocab_size)`; `y` is `(batch,)` int64, the
    answer, read at the last position (`target="last"`); `mask` is `None`. `output_size` is
    `vocab_size` (the trigger is never the answer). Metric: accuracy; chance `1 / (vocab_size - 1)`
    (the answer is uniform over the ordinary tokens).

    Args:
        seq_len: length of every sequence, at least 3 (trigger, answer, trigger).
        vocab_size: number of tokens, the trigger included, at least 3 (default 16).

    Raises:
        ValueError: if `seq_len < 3` or `vocab_size < 3`.

    References:
        Olsson, C. et al. (2022). In-context learning and induction heads. Transformer Circuits
        Thread (the mechanism: `[A][B] ... [A] -> [B]`).
        Gu, A. & Dao, T. (2023). Mamba: linear-time sequence modeling with selective state spaces.
        arXiv:2312.00752, section 4.1.2 (induction heads as a synthetic task).

    Example:
        >>> import torch
        >>> from seqmem.tasks import Induction
        >>> task = Induction(seq_len=10, vocab_size=6)
        >>> x, y, _ = task.sample(4, torch.Generator().manual_seed(0))
        >>> p = (x == 5).int().argmax(dim=1)  # the first trigger
        >>> bool(torch.equal(y, x[torch.arange(4), p + 1])), bool((x[:, -1] == 5).all())
        (True, True)
    """

    name = "induction"
    description = "after the trigger, recall the token that followed it before (accuracy; chance 1/(vocab-1))"
    input_kind = "tokens"
    target = "last"
    loss_kind = "cross_entropy"
    metric_name = "accuracy"

    def __init__(self, seq_len: int, vocab_size: int = 16) -> None:
        super().__init__(seq_len)
        check_min_seq_len("induction", seq_len, 3, "the trigger, the answer and the trigger again")
        self.vocab_size = check_int("induction", "vocab_size", vocab_size, 3)
        self.trigger = vocab_size - 1
        self.output_size = vocab_size

    @property
    def chance(self) -> float:
        """`1 / (vocab_size - 1)`: the answer is uniform over the ordinary tokens."""
        return 1.0 / (self.vocab_size - 1)  # type: ignore[operator]

    def config(self) -> dict[str, Any]:
        """`{"vocab_size": ...}`."""
        return {"vocab_size": self.vocab_size}

    def sample(self, batch_size: int, generator: torch.Generator, split: str = "train") -> Batch:
        """Draw `batch_size` sequences with the trigger-answer pair in the first half.

        Args:
            batch_size: number of sequences.
            generator: source of randomness.
            split: `"train"` or `"eval"` (same distribution; use another generator seed).

        Returns:
            `Batch(x, y, None)`: `x` `(batch_size, seq_len)` int64, `y` `(batch_size,)` int64, the
            token after the first trigger.

        Raises:
            ValueError: for a non-positive `batch_size` or an unknown split.
        """
        self._check_sample_args(batch_size, split)
        B, T = batch_size, self.seq_len
        x = torch.randint(0, self.trigger, (B, T), generator=generator)  # (B, T), no trigger yet
        p = torch.randint(0, (T - 1) // 2, (B,), generator=generator)  # (B,)
        rows = torch.arange(B)
        x[rows, p] = self.trigger
        x[:, -1] = self.trigger
        return Batch(x, x[rows, p + 1].clone(), None)


class AssocRecall(Task):
    r"""Multi-query associative recall (MQAR): key-value pairs, then each key asked for its value.

    Tokens: `0` is the filler, keys are `1 .. vocab_size // 2 - 1`, values are
    `vocab_size // 2 .. vocab_size - 1` (disjoint halves, as in Zoology). With $L$ = `seq_len`
    and $n$ = `num_kv_pairs`, a sequence is

        x = k_1 v_1 k_2 v_2 .. k_n v_n | query region of L - 2n positions
        y = value of the key at every query position (mask), filler elsewhere

    The $n$ keys are distinct and drawn uniformly from the key half, the $n$ values distinct
    and uniform from the value half. Every key is queried exactly once, in a uniformly random
    order, at $n$ distinct positions drawn uniformly from the query region; the other positions
    of the region hold the filler. At a query position the network must output the value bound
    to that key: it must store all $n$ bindings, the memory whose cost separates attention
    (which keeps every token) from a fixed-size recurrent state. Unlike Zoology, query positions
    are uniform over the region rather than power-law distributed, so the distance to the
    bindings grows with `seq_len`.

    Shapes: `x`, `y` are `(batch, seq_len)` int64 in `[0, vocab_size)`; `mask` is
    `(batch, seq_len)` bool with exactly `num_kv_pairs` true entries per row, all at or after
    position `2 * num_kv_pairs`. `output_size` is `vocab_size`. Metric: per-query accuracy; chance
    `1 / (vocab_size - vocab_size // 2)` (a guess among the values that ignores the input; a
    network that reads which values occur but not their keys scores `1 / num_kv_pairs`).

    Args:
        seq_len: length of every sequence, at least `3 * num_kv_pairs` (the pairs and one
            query per key).
        num_kv_pairs: number of key-value pairs, and of queries (default 8).
        vocab_size: number of tokens (default 64); at least `2 * num_kv_pairs + 2`, so that
            both halves hold `num_kv_pairs` distinct tokens.

    Raises:
        ValueError: if `num_kv_pairs < 1`, `vocab_size` is too small for the distinct keys and
            values, or `seq_len < 3 * num_kv_pairs`.

    References:
        Arora, S., Eyuboglu, S., Timalsina, A., Johnson, I., Poli, M., Zou, J., Rudra, A. & Ré, C.
        (2023). Zoology: measuring and improving recall in efficient language models.
        arXiv:2312.04927, section 3 (multi-query associative recall).
        Ba, J., Hinton, G. et al. (2016). Using fast weights to attend to the recent past. NeurIPS,
        section 4.1 (associative retrieval).

    Example:
        >>> import torch
        >>> from seqmem.tasks import AssocRecall
        >>> task = AssocRecall(seq_len=12, num_kv_pairs=2, vocab_size=8)
        >>> x, y, mask = task.sample(1, torch.Generator().manual_seed(0))
        >>> table = dict(zip(x[0, 0:4:2].tolist(), x[0, 1:4:2].tolist()))
        >>> [table[k] for k in x[mask].tolist()] == y[mask].tolist()
        True
    """

    name = "assoc-recall"
    description = "multi-query associative recall: each key's value at its query (accuracy)"
    input_kind = "tokens"
    target = "all"
    loss_kind = "cross_entropy"
    metric_name = "accuracy"

    def __init__(self, seq_len: int, num_kv_pairs: int = 8, vocab_size: int = 64) -> None:
        super().__init__(seq_len)
        n = check_int("assoc-recall", "num_kv_pairs", num_kv_pairs, 1)
        check_int("assoc-recall", "vocab_size", vocab_size, 2 * n + 2)
        check_min_seq_len(
            "assoc-recall", seq_len, 3 * n,
            f"3 * num_kv_pairs: {n} key-value pairs and a query for each key",
        )
        self.num_kv_pairs = n
        self.vocab_size = vocab_size
        self.n_keys = vocab_size // 2 - 1  # keys 1 .. vocab_size // 2 - 1
        self.n_values = vocab_size - vocab_size // 2  # values vocab_size // 2 .. vocab_size - 1
        self.output_size = vocab_size

    @property
    def chance(self) -> float:
        """`1 / (vocab_size - vocab_size // 2)`: a uniform guess among the values."""
        return 1.0 / self.n_values

    def config(self) -> dict[str, Any]:
        """`{"num_kv_pairs": ..., "vocab_size": ...}`."""
        return {"num_kv_pairs": self.num_kv_pairs, "vocab_size": self.vocab_size}

    def sample(self, batch_size: int, generator: torch.Generator, split: str = "train") -> Batch:
        """Draw `batch_size` sequences of key-value pairs followed by one query per key.

        Args:
            batch_size: number of sequences.
            generator: source of randomness.
            split: `"train"` or `"eval"` (same distribution; use another generator seed).

        Returns:
            `Batch(x, y, mask)`: `x`, `y` `(batch_size, seq_len)` int64, `mask`
            `(batch_size, seq_len)` bool; at every masked position `x` is a key and `y` its value.

        Raises:
            ValueError: for a non-positive `batch_size` or an unknown split.
        """
        self._check_sample_args(batch_size, split)
        B, T, n = batch_size, self.seq_len, self.num_kv_pairs
        keys = distinct_positions(B, n, 1, self.n_keys + 1, generator, sort=False)  # (B, n)
        values = distinct_positions(B, n, self.n_keys + 1, self.vocab_size, generator, sort=False)  # (B, n)
        x = torch.zeros(B, T, dtype=torch.long)
        x[:, 0:2 * n:2] = keys
        x[:, 1:2 * n:2] = values
        where = distinct_positions(B, n, 2 * n, T, generator, sort=False)  # (B, n): query of key i
        x.scatter_(1, where, keys)
        y = torch.zeros(B, T, dtype=torch.long)
        y.scatter_(1, where, values)
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask.scatter_(1, where, True)
        return Batch(x, y, mask)
