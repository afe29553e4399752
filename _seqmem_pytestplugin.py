"""seqmem's pytest plugin: the table of the conformance tests that `seqmem.testing.conformance` makes.

pytest loads this module at start-up through the `pytest11` entry point `seqmem`. It imports
neither torch nor seqmem (it reads the rows the tests record in `user_properties`), so a pytest run
that does not use seqmem pays nothing for it; like hypothesis' `_hypothesis_pytestplugin`, it is a
top-level module because any module inside the `seqmem` package imports `seqmem` first.

Options:

- `--seqmem-report`: print the table of every conformance test run (model, property, dtype, status,
  max error, detail) at the end of the session;
- `--seqmem-report-md PATH`: write that table as Markdown to `PATH`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

ROW_KEY = "seqmem_conformance"  # seqmem.testing.plugin.ROW_KEY
_COLUMNS = ("property", "dtype", "status", "max error", "detail")


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("seqmem", "seqmem conformance tests (seqmem.testing.conformance)")
    group.addoption(
        "--seqmem-report", action="store_true", default=False,
        help="print the table of the conformance tests run (property x dtype, per model) at the end",
    )
    group.addoption(
        "--seqmem-report-md", metavar="PATH", default=None,
        help="write the table of the conformance tests run as Markdown to PATH",
    )


def pytest_configure(config: Any) -> None:
    if config.getoption("seqmem_report") or config.getoption("seqmem_report_md"):
        config.pluginmanager.register(ConformanceTable(config), "seqmem-conformance-table")


class ConformanceTable:
    """Collects the rows conformance tests record and prints or writes them at the end of the session."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.rows: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when != "call" and not (report.when == "setup" and report.skipped):
            return
        for key, value in getattr(report, "user_properties", ()):
            if key == ROW_KEY and isinstance(value, dict):
                self.rows.append(value)

    def _tables(self) -> dict[str, list[tuple[str, ...]]]:
        tables: dict[str, list[tuple[str, ...]]] = {}
        for row in self.rows:
            err = row.get("max_error")
            cells = (
                str(row.get("property", "")), str(row.get("dtype", "")), str(row.get("status", "")),
                "" if err is None else f"{err:.1e}", str(row.get("detail", "")),
            )
            tables.setdefault(str(row.get("model", "?")), []).append(cells)
        return tables

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        path = self.config.getoption("seqmem_report_md")
        if path:
            self._write_markdown(path)
        if not self.config.getoption("seqmem_report"):
            return
        terminalreporter.write_sep("=", "seqmem conformance")
        if not self.rows:
            terminalreporter.write_line("no conformance tests ran")
        for model, rows in self._tables().items():
            widths = [max(len(c[i]) for c in (_COLUMNS, *rows)) for i in range(4)]
            terminalreporter.write_line(model)
            for cells in (_COLUMNS, *rows):
                line = "  ".join(f"{c:>{w}s}" if i == 3 else f"{c:{w}s}" for i, (c, w) in enumerate(zip(cells, widths)))
                terminalreporter.write_line(f"  {line}  {cells[4]}".rstrip())
        if path:
            terminalreporter.write_line(f"written to {path}")

    def _write_markdown(self, path: str) -> None:
        lines: list[str] = []
        for model, rows in self._tables().items():
            lines += [f"**{model}**", "", "| " + " | ".join(_COLUMNS) + " |", "|" + " --- |" * len(_COLUMNS)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in rows]
            lines.append("")
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".seqmem-report-", suffix=".md")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(lines))
            os.replace(tmp, path)  # whole or not at all
        except BaseException:
            os.unlink(tmp)
            raise
