"""The report of `check_sequence_model`: one row per property and dtype, as text, Markdown or a rich table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .properties import ConformanceFailure
from .tolerances import dtype_name

__all__ = ["ConformanceReport", "PropertyResult"]

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class PropertyResult:
    """The outcome of one property in one dtype.

    Attributes:
        name: the property (one of `PROPERTIES`).
        status: `"passed"`, `"failed"` or `"skipped"`.
        detail: what was checked, why it failed (the failure's message, without the model's name),
            or why it was skipped.
        dtype: the dtype it ran in.
        max_error: the largest absolute difference between the two sides of the property's
            comparisons (`None` for a property that compares nothing, or did not run).
        failure: the `ConformanceFailure`, for a failed row.
    """

    name: str
    status: str
    detail: str
    dtype: torch.dtype | None = None
    max_error: float | None = None
    failure: ConformanceFailure | None = field(default=None, repr=False, compare=False)

    @property
    def summary(self) -> str:
        """The first line of `detail`."""
        return self.detail.split("\n", 1)[0]

    def cells(self) -> tuple[str, str, str, str, str]:
        """`(property, dtype, status, max error, summary)` as strings."""
        err = "" if self.max_error is None else f"{self.max_error:.1e}"
        dt = "" if self.dtype is None else dtype_name(self.dtype)
        return self.name, dt, self.status, err, self.summary


@dataclass
class ConformanceReport:
    """What `check_sequence_model` checked: one `PropertyResult` per property and dtype.

    `print(report)` gives a plain table, `report.to_markdown()` a Markdown one, and
    `rich.print(report)` (or `report.table()`) a rich `Table`; in a notebook the report displays as
    Markdown.

    Attributes:
        model: a short description of the model.
        dtypes: the dtypes the model was checked in, in order.
        batch_size: batch of the input sequence.
        seq_len: length of the input sequence.
        seed: seed of the input sequence and of the perturbations.
        results: one `PropertyResult` per property and dtype, in the order they ran.
    """

    model: str
    dtypes: tuple[torch.dtype, ...]
    batch_size: int
    seq_len: int
    seed: int
    results: list[PropertyResult] = field(default_factory=list)

    @property
    def dtype(self) -> torch.dtype:
        """The first dtype checked."""
        return self.dtypes[0]

    @property
    def passed(self) -> bool:
        """True when no property failed in any dtype (skipped ones do not count)."""
        return not self.failures

    @property
    def failures(self) -> list[PropertyResult]:
        """The failed rows, in the order they ran."""
        return [r for r in self.results if r.status == FAILED]

    def _names(self, keep: Any) -> list[str]:
        names = list(dict.fromkeys(r.name for r in self.results))
        return [n for n in names if keep([r.status for r in self.results if r.name == n])]

    @property
    def checked(self) -> list[str]:
        """Properties that passed in some dtype and failed in none."""
        return self._names(lambda s: PASSED in s and FAILED not in s)

    @property
    def skipped(self) -> list[str]:
        """Properties skipped in every dtype."""
        return self._names(lambda s: set(s) == {SKIPPED})

    @property
    def failed(self) -> list[str]:
        """Properties that failed in some dtype."""
        return self._names(lambda s: FAILED in s)

    def result(self, name: str, dtype: torch.dtype | None = None) -> PropertyResult:
        """The row of property `name` (in `dtype`, by default the first dtype checked).

        Raises:
            KeyError: if the report has no such row.
        """
        dtype = self.dtypes[0] if dtype is None else dtype
        for r in self.results:
            if r.name == name and r.dtype == dtype:
                return r
        raise KeyError(f"no result for property {name!r} in {dtype_name(dtype)}")

    def raise_if_failed(self) -> None:
        """Raise the first failure, if any.

        Raises:
            ConformanceFailure: the first failed row's.
        """
        for r in self.failures:
            if r.failure is not None:
                raise r.failure

    def __iter__(self) -> Iterator[PropertyResult]:
        return iter(self.results)

    @property
    def title(self) -> str:
        """`"Model(3 -> 4): float64, float32, batch 3, seq_len 12, seed 0"`."""
        dts = ", ".join(dtype_name(d) for d in self.dtypes)
        return f"{self.model}: {dts}, batch {self.batch_size}, seq_len {self.seq_len}, seed {self.seed}"

    def __str__(self) -> str:
        rows = [r.cells() for r in self.results]
        widths = [max((len(c[i]) for c in rows), default=0) for i in range(4)]
        lines = [self.title]
        for name, dt, status, err, summary in rows:
            lines.append(
                f"  {status.upper():7s} {dt:{widths[1]}s}  {name:{widths[0]}s}  {err:>{widths[3]}s}  {summary}".rstrip()
            )
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The report as a Markdown table (property, dtype, status, max error, detail).

        Returns:
            Markdown text: a title line, then the table.
        """

        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        lines = [
            f"**{cell(self.title)}**",
            "",
            "| property | dtype | status | max error | detail |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, dt, status, err, summary in (r.cells() for r in self.results):
            mark = {PASSED: "passed", FAILED: "**FAILED**", SKIPPED: "skipped"}.get(status, status)
            lines.append(f"| {cell(name)} | {dt} | {mark} | {err} | {cell(summary)} |")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def table(self) -> Any:
        """The report as a `rich.table.Table` (`rich.print(report.table())`).

        Returns:
            A `rich.table.Table`, the status coloured.
        """
        from rich.table import Table
        from rich.text import Text

        table = Table(title=self.title, title_justify="left")
        for column, justify in (("property", "left"), ("dtype", "left"), ("status", "left"),
                                ("max error", "right"), ("detail", "left")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        style = {PASSED: "green", FAILED: "bold red", SKIPPED: "yellow"}
        for r in self.results:
            name, dt, status, err, summary = r.cells()
            table.add_row(Text(name), dt, Text(status, style=style.get(status, "")), err, Text(summary))
        return table

    def __rich__(self) -> Any:
        return self.table()
