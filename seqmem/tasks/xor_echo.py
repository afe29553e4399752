"""XOR-echo: does the last symbol equal the first? A pure test of remembering one symbol over a gap."""

from __future__ import annotations

from typing import Any

import torch

from .base import Batch, Task

__all__ = ["XorEcho"]


class XorEcho(Task):
    r"""Classify a random string by whether its first symbol equals its last.

    Each sequence is `seq_len` symbols drawn uniformly from an alphabet of `alphabet` symbols;
    the label is 1 if `x[0] == x[-1]`, else 0. Everything between is a distractor, so the network
    must carry $\log_2(\text{alphabet})$ bits across `seq_len - 1` steps and compare them with the
    last input: the gradient that teaches it to do so crosses the whole gap. With `alphabet=2`
    the label is the XNOR of the first and last bits, hence the name.

    Classes are balanced exactly in every batch (an odd batch gets one extra label drawn at
    random): half the sequences have their last symbol set to the first, the other half to one of
    the `alphabet - 1` others, uniformly. Every symbol, the last included, stays uniform.

    Shapes: `x` is `(batch, seq_len)` int64 in `[0, alphabet)`; `y` is `(batch,)` int64 in `{0, 1}`,
    read at the last position. Metric: accuracy; chance is 0.5.

    The seed's claim: the Elman RNN fails and the LSTM holds as `seq_len` grows (the vanishing
    gradient of Bengio et al. 1994 against the constant error carousel of Hochreiter &
    Schmidhuber 1997).

    Args:
        seq_len: length of every string, at least 2.
        alphabet: number of distinct symbols, at least 2 (default 4: two bits to remember).

    Raises:
        ValueError: if `seq_len < 2` (the first symbol would be the last) or `alphabet < 2`.

    References:
        Bengio, Y., Simard, P. & Frasconi, P. (1994). Learning long-term dependencies with gradient
        descent is difficult. IEEE Trans. Neural Networks 5(2), the "latching" problem.
        Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8),
        section 5 (long time lags with distractors).

    Example:
        >>> import torch
        >>> from seqmem.tasks import XorEcho
        >>> batch = XorEcho(seq_len=6).sample(4, torch.Generator().manual_seed(0))
        >>> batch.x.shape, batch.y.tolist() == (batch.x[:, 0] == batch.x[:, -1]).long().tolist()
        (torch.Size([4, 6]), True)
    """

    name = "xor-echo"
    description = "is the last symbol equal to the first? (classification, accuracy; chance 0.5)"
    input_kind = "tokens"
    target = "last"
    loss_kind = "cross_entropy"
    metric_name = "accuracy"

    def __init__(self, seq_len: int, alphabet: int = 4) -> None:
        super().__init__(seq_len)
        if seq_len < 2:
            raise ValueError(f"xor-echo: seq_len must be at least 2 (first and last symbol), got {seq_len}")
        if isinstance(alphabet, bool) or not isinstance(alphabet, int) or alphabet < 2:
            raise ValueError(f"xor-echo: alphabet must be an int >= 2, got {alphabet!r}")
        self.alphabet = alphabet
        self.vocab_size = alphabet
        self.output_size = 2

    @property
    def chance(self) -> float:
        """0.5: the classes are balanced."""
        return 0.5

    def config(self) -> dict[str, Any]:
        """`{"alphabet": ...}`."""
        return {"alphabet": self.alphabet}

    def sample(self, batch_size: int, generator: torch.Generator, split: str = "train") -> Batch:
        """Draw `batch_size` strings, exactly half of them (rounded at random) with label 1.

        Args:
            batch_size: number of sequences.
            generator: source of randomness.
            split: `"train"` or `"eval"` (same distribution; use another generator seed).

        Returns:
            `Batch(x, y, None)`: `x` `(batch_size, seq_len)` int64, `y` `(batch_size,)` int64.

        Raises:
            ValueError: for a non-positive `batch_size` or an unknown split.
        """
        self._check_sample_args(batch_size, split)
        B, T, k = batch_size, self.seq_len, self.alphabet
        n_pos = B // 2 + int(torch.randint(0, 2, (1,), generator=generator).item()) * (B % 2)
        labels = torch.zeros(B, dtype=torch.long)
        labels[:n_pos] = 1
        labels = labels[torch.randperm(B, generator=generator)]  # (B,)
        x = torch.randint(0, k, (B, T), generator=generator)  # (B, T)
        other = (x[:, 0] + torch.randint(1, k, (B,), generator=generator)) % k  # never x[:, 0]
        x[:, -1] = torch.where(labels.bool(), x[:, 0], other)
        return Batch(x, labels, None)
