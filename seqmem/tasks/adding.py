"""The adding problem: sum the two marked numbers of a long real-valued sequence."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._module import check_choice
from ._options import check_min_seq_len
from .base import Batch, BatchScore, Task

__all__ = ["Adding"]

ADDING_METRICS = ("mse", "accuracy")


class Adding(Task):
    r"""The adding problem: output the sum of the two marked values, read at the last step.

    Each step carries two real channels: a value drawn uniformly from $[0, 1)$ and a marker in
    $\{0, 1\}$. Exactly two steps are marked: one uniformly at random in the first half,
    positions `[0, seq_len // 2)`, the other uniformly in the second half,
    `[seq_len // 2, seq_len)`. The target is the sum of the two marked values, in $[0, 2)$. This
    is the variant of Arjovsky et al. (2016); Hochreiter & Schmidhuber (1997) drew values from
    $[-1, 1]$, put the first marker in the first ten steps and scaled the target to
    $0.5 + (X_1 + X_2) / 4$.

    The marked values are independent of the markers' positions, so a network that ignores its
    input does best by predicting the mean sum, 1, and scores the variance of a sum of two
    uniforms: MSE $= 2 \cdot \tfrac{1}{12} = 1/6 \approx 0.1667$ (`chance`).

    Loss: mean squared error at the last position. Metric (`metric`):

    - `"mse"` (default; lower is better): the mean squared error; chance $1/6$.
    - `"accuracy"`: the share of sequences whose prediction is within `tolerance` of the sum,
      $|\hat y - y| < \text{tolerance}$ (Hochreiter & Schmidhuber's criterion of a correctly
      processed sequence, absolute error below 0.04). The sum has the triangular density
      $1 - |s - 1|$ on $[0, 2]$, so the best constant guess, 1, is within `tolerance` with
      probability $2\,\text{tol} - \text{tol}^2$ (0.0784 for 0.04): that is `chance`.
      This puts the adding problem on the same "solved above 95%" scale as the classification
      tasks.

    Shapes: `x` is `(batch, seq_len, 2)` float32 (channel 0 the values, channel 1 the markers);
    `y` is `(batch, 1)` float32; `mask` is `None` (only the last position is scored).

    Args:
        seq_len: length of every sequence, at least 2 (one marker in each half).
        metric: `"mse"` or `"accuracy"` (the loss is the squared error either way).
        tolerance: the largest absolute error counted correct by the `"accuracy"` metric, in
            `(0, 1)`.

    Raises:
        ValueError: if `seq_len < 2`, `metric` is unknown, or `tolerance` is not in `(0, 1)`.
        TypeError: if `metric` is not a string.

    References:
        Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8),
        section 5.4, experiment 4 (the adding problem; error criterion 0.04).
        Arjovsky, M., Shah, A. & Bengio, Y. (2016). Unitary evolution recurrent neural networks.
        ICML, section 4.2 (the variant used here; baseline MSE 0.167).

    Example:
        >>> import torch
        >>> from seqmem.tasks import Adding
        >>> x, y, _ = Adding(seq_len=10).sample(3, torch.Generator().manual_seed(0))
        >>> x.shape, y.shape
        (torch.Size([3, 10, 2]), torch.Size([3, 1]))
        >>> torch.allclose((x[..., 0] * x[..., 1]).sum(dim=1, keepdim=True), y)
        True
    """

    name = "adding"
    description = "sum of the two marked values of a real sequence (regression, mse; chance 1/6)"
    input_kind = "real"
    target = "last"
    loss_kind = "mse"
    metric_name = "mse"

    def __init__(self, seq_len: int, metric: str = "mse", tolerance: float = 0.04) -> None:
        super().__init__(seq_len)
        check_min_seq_len("adding", seq_len, 2, "one marker in each half")
        check_choice("metric", metric, ADDING_METRICS, "adding")
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
            raise ValueError(f"adding: tolerance must be a number in (0, 1), got {tolerance!r}")
        self.metric_name = metric  # type: ignore[misc]  # an option of this task
        self.tolerance = float(tolerance)
        self.input_size = 2
        self.output_size = 1

    @property
    def chance(self) -> float:
        """The metric of the best constant guess, 1: MSE 1/6, or accuracy `2 tol - tol**2`."""
        if self.metric_name == "mse":
            return 1.0 / 6.0
        return 2.0 * self.tolerance - self.tolerance**2

    def config(self) -> dict[str, Any]:
        """`{"metric": ..., "tolerance": ...}`."""
        return {"metric": self.metric_name, "tolerance": self.tolerance}

    def sample(self, batch_size: int, generator: torch.Generator, split: str = "train") -> Batch:
        """Draw `batch_size` sequences with one marked value in each half.

        Args:
            batch_size: number of sequences.
            generator: source of randomness.
            split: `"train"` or `"eval"` (same distribution; use another generator seed).

        Returns:
            `Batch(x, y, None)`: `x` `(batch_size, seq_len, 2)` float32, `y` `(batch_size, 1)`
            float32, the sum of the two values whose marker is 1.

        Raises:
            ValueError: for a non-positive `batch_size` or an unknown split.
        """
        self._check_sample_args(batch_size, split)
        B, T = batch_size, self.seq_len
        half = T // 2
        values = torch.rand(B, T, generator=generator)  # (B, T)
        first = torch.randint(0, half, (B,), generator=generator)  # (B,)
        second = torch.randint(half, T, (B,), generator=generator)  # (B,)
        rows = torch.arange(B)
        markers = torch.zeros(B, T)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = torch.stack([values, markers], dim=-1)  # (B, T, 2)
        y = (values[rows, first] + values[rows, second]).unsqueeze(1)  # (B, 1)
        return Batch(x, y, None)

    @torch.no_grad()
    def score(self, logits: Tensor, batch: Batch) -> BatchScore:
        """Squared-error and metric sums over one batch.

        Args:
            logits: `(batch, seq_len, 1)` predictions; the last position is read.
            batch: the batch they were computed from.

        Returns:
            A `BatchScore`: `loss_sum` the summed squared error; `metric_sum` the same (`"mse"`)
            or the number of predictions within `tolerance` (`"accuracy"`); `count` the batch size.

        Raises:
            ValueError: if `logits` does not have the shape `(batch, seq_len, 1)`.
        """
        out, y = self._scored(logits, batch)  # (B, 1), (B, 1)
        err = out.float() - y.reshape(out.shape).float()
        se = err.pow(2).sum().item()
        n = int(y.shape[0])
        if self.metric_name == "mse":
            return BatchScore(se, se, n)
        return BatchScore(se, float((err.abs() < self.tolerance).sum().item()), n)
