"""Copying tasks: reproduce a string of symbols after a delay (copy), or pick it out of noise first
(selective copy)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._options import check_int, check_min_seq_len, distinct_positions
from .base import Batch, Task

__all__ = ["Copy", "SelectiveCopy"]

BLANK = 0  # the blank (copy) or noise (selective copy) token


class _CopyTask(Task):
    """What the two copying tasks share: tokens, the output region, options and chance."""

    input_kind = "tokens"
    target = "all"
    loss_kind = "cross_entropy"
    metric_name = "accuracy"

    def __init__(self, seq_len: int, n_tokens: int, alphabet: int) -> None:
        super().__init__(seq_len)
        self.n_tokens = check_int(self.name, "n_tokens", n_tokens, 1)
        self.alphabet = check_int(self.name, "alphabet", alphabet, 2)
        self.delimiter = alphabet + 1
        self.vocab_size = alphabet + 2
        self.output_size = self.vocab_size

    @property
    def chance(self) -> float:
        """`1 / alphabet`: a guess of one symbol at every output position."""
        return 1.0 / self.alphabet

    def config(self) -> dict[str, Any]:
        """`{"n_tokens": ..., "alphabet": ...}`."""
        return {"n_tokens": self.n_tokens, "alphabet": self.alphabet}

    def _batch(self, x: Tensor, symbols: Tensor) -> Batch:
        """Close `x` with the delimiter and the output region; targets: `symbols` there, blank elsewhere."""
        B, T = x.shape
        n = self.n_tokens
        x[:, T - n - 1] = self.delimiter
        y = torch.full((B, T), BLANK, dtype=torch.long)
        y[:, T - n:] = symbols
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[:, T - n:] = True
        return Batch(x, y, mask)


class Copy(_CopyTask):
    r"""The copy task: read `n_tokens` symbols, wait, and after a delimiter write them out in order.

    Tokens: `0` is the blank, `1 .. alphabet` are the symbols, `alphabet + 1` is the delimiter
    (`vocab_size = alphabet + 2`). A sequence of length `seq_len` $= L$ with $n$ = `n_tokens` is

        x = s_1 .. s_n | blank x (L - 2n - 1) | delimiter | blank x n
        y = blank ...                                     | s_1 .. s_n

    with the $s_i$ drawn uniformly and independently from the symbols. The network must hold the
    $n$ symbols over the delay of $L - 2n - 1$ blanks and emit them, in order, at the last $n$
    positions; only those are scored (`mask`). `seq_len` is the whole length $L$, so it is
    comparable with the other tasks; Arjovsky et al.'s delay $T$ is $L - 2n$ (their sequences
    have length $T + 2n$ with $n = 10$; `y` is blank before the output region, their target there).

    Shapes: `x`, `y` are `(batch, seq_len)` int64 (`y` in `[0, vocab_size)`, blank outside the
    output region); `mask` is `(batch, seq_len)` bool, true at the last `n_tokens` positions.
    Metric: per-symbol accuracy over the output region; chance `1 / alphabet` (a guess that ignores
    the input). The memoryless baseline of Arjovsky et al. (loss $n \log(\text{alphabet}) / (T + 2n)$
    over all positions) is this chance level seen through their unmasked loss.

    Args:
        seq_len: length of every sequence, at least `2 * n_tokens + 1` (a delay of zero blanks).
        n_tokens: number of symbols to copy (default 10, as Arjovsky et al.).
        alphabet: number of distinct symbols, at least 2 (default 8, as Arjovsky et al.).

    Raises:
        ValueError: if `n_tokens < 1`, `alphabet < 2`, or `seq_len < 2 * n_tokens + 1`.

    References:
        Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8),
        section 5 (long time lags).
        Arjovsky, M., Shah, A. & Bengio, Y. (2016). Unitary evolution recurrent neural networks.
        ICML, section 4.1 (the copying memory problem, as defined here).

    Example:
        >>> import torch
        >>> from seqmem.tasks import Copy
        >>> x, y, mask = Copy(seq_len=12, n_tokens=3, alphabet=4).sample(1, torch.Generator().manual_seed(0))
        >>> bool(torch.equal(y[mask], x[0, :3])), x[0, 8].item()
        (True, 5)
    """

    name = "copy"
    description = "copy n_tokens symbols after a delay of blanks (per-symbol accuracy; chance 1/alphabet)"

    def __init__(self, seq_len: int, n_tokens: int = 10, alphabet: int = 8) -> None:
        super().__init__(seq_len, n_tokens, alphabet)
        check_min_seq_len(
            "copy", seq_len, 2 * n_tokens + 1,
            f"2 * n_tokens + 1: {n_tokens} symbols, the delimiter and {n_tokens} output positions",
        )

    @property
    def delay(self) -> int:
        """Blanks between the last symbol and the delimiter: `seq_len - 2 * n_tokens - 1`."""
        return self.seq_len - 2 * self.n_tokens - 1

    def sample(self, batch_size: int, generator: torch.Generator, split: str = "train") -> Batch:
        """Draw `batch_size` sequences of `n_tokens` uniform symbols followed by the delay.

        Args:
            batch_size: number of sequences.
            generator: source of randomness.
            split: `"train"` or `"eval"` (same distribution; use another generator seed).

        Returns:
            `Batch(x, y, mask)`: `x`, `y` `(batch_size, seq_len)` int64, `mask` `(batch_size, seq_len)`
            bool; `y[mask]` is `x[:, :n_tokens]`, row by row.

        Raises:
            ValueError: for a non-positive `batch_size` or an unknown split.
        """
        self._check_sample_args(batch_size, split)
        B, T, n = batch_size, self.seq_len, self.n_tokens
        symbols = torch.randint(1, self.alphabet + 1, (B, n), generator=generator)  # (B, n)
        x = torch.full((B, T), BLANK, dtype=torch.long)
        x[:, :n] = symbols
        return self._batch(x, symbols)


class SelectiveCopy(_CopyTask):
    r"""Selective copying: `n_tokens` symbols scattered among noise; write them out in order at the end.

    Tokens: `0` is the noise token, `1 .. alphabet` are the symbols, `alphabet + 1` is the
    delimiter (`vocab_size = alphabet + 2`). With $L$ = `seq_len` and $n$ = `n_tokens`, the
    first $L - n - 1$ positions hold $n$ symbols (drawn uniformly and independently) at $n$
    distinct positions chosen uniformly at random, and noise everywhere else; then come the
    delimiter and $n$ noise tokens, where the network must emit the symbols in the order they
    appeared:

        x = noise .. s_1 .. noise .. s_2 .. s_n .. noise | delimiter | noise x n
        y = noise ...                                                | s_1 .. s_n

    Unlike `Copy`, the symbols' positions vary, so a fixed delay line (a convolution, an LTI state
    space model) cannot solve it: the network must decide from each token's content whether to
    keep it, the selection mechanism of Gu & Dao (2023). At `seq_len = 2 * n_tokens + 1` there
    is no noise and it is the copy task.

    Shapes: `x`, `y` are `(batch, seq_len)` int64 (`y` noise outside the output region); `mask` is
    `(batch, seq_len)` bool, true at the last `n_tokens` positions. Metric: per-symbol accuracy
    over the output region; chance `1 / alphabet`.

    Args:
        seq_len: length of every sequence, at least `2 * n_tokens + 1`.
        n_tokens: number of symbols to find and copy (default 8).
        alphabet: number of distinct symbols, at least 2 (default 8).

    Raises:
        ValueError: if `n_tokens < 1`, `alphabet < 2`, or `seq_len < 2 * n_tokens + 1`.

    References:
        Gu, A. & Dao, T. (2023). Mamba: linear-time sequence modeling with selective state spaces.
        arXiv:2312.00752, section 3.1 and figure 2 (selective copying), section 4.1.1.
        Arjovsky, M., Shah, A. & Bengio, Y. (2016). Unitary evolution recurrent neural networks.
        ICML, section 4.1 (the copy task it generalises).

    Example:
        >>> import torch
        >>> from seqmem.tasks import SelectiveCopy
        >>> task = SelectiveCopy(seq_len=16, n_tokens=3, alphabet=4)
        >>> x, y, mask = task.sample(1, torch.Generator().manual_seed(0))
        >>> data = x[0, :12]
        >>> bool(torch.equal(y[mask], data[(data > 0) & (data <= 4)]))
        True
    """

    name = "selective-copy"
    description = "copy n_tokens symbols scattered among noise, in order (accuracy; chance 1/alphabet)"

    def __init__(self, seq_len: int, n_tokens: int = 8, alphabet: int = 8) -> None:
        super().__init__(seq_len, n_tokens, alphabet)
        check_min_seq_len(
            "selective-copy", seq_len, 2 * n_tokens + 1,
            f"2 * n_tokens + 1: {n_tokens} symbols, the delimiter and {n_tokens} output positions",
        )

    def sample(self, batch_size: int, generator: torch.Generator, split: str = "train") -> Batch:
        """Draw `batch_size` sequences with `n_tokens` symbols at random positions among noise.

        Args:
            batch_size: number of sequences.
            generator: source of randomness.
            split: `"train"` or `"eval"` (same distribution; use another generator seed).

        Returns:
            `Batch(x, y, mask)`: `x`, `y` `(batch_size, seq_len)` int64, `mask` `(batch_size, seq_len)`
            bool; `y[mask]` is the symbols of `x` before the delimiter, in order, row by row.

        Raises:
            ValueError: for a non-positive `batch_size` or an unknown split.
        """
        self._check_sample_args(batch_size, split)
        B, T, n = batch_size, self.seq_len, self.n_tokens
        symbols = torch.randint(1, self.alphabet + 1, (B, n), generator=generator)  # (B, n)
        pos = distinct_positions(B, n, 0, T - n - 1, generator)  # (B, n), increasing
        x = torch.full((B, T), BLANK, dtype=torch.long)
        x.scatter_(1, pos, symbols)
        return self._batch(x, symbols)
