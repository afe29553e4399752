"""The results file of a sweep: `results.jsonl`, one complete JSON record per finished run.

Only the process that runs a sweep writes it, one complete line per finished run in a single `write`,
flushed and fsynced before the next run is recorded, and never rewritten. So a sweep killed at any
moment (even `kill -9`) keeps every run that finished; at worst the line being written is torn, and a
torn last line is ignored on reading and closed with a newline before the next append. An advisory
lock file in the folder keeps two sweeps from appending to the same file at once. Reading names
every line it skips (`SkippedLine`) and keeps one record per run id.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "LOCK_FILE",
    "RECORD_VERSION",
    "RESULTS_FILE",
    "WEIGHTS_DIR",
    "ResultsWarning",
    "SkippedLine",
    "append_record",
    "read_results",
    "sweep_lock",
]

RECORD_VERSION = 1
"""Version of the record format; it enters every run id, so a new format reruns everything."""

RESULTS_FILE = "results.jsonl"
"""The name of the results file in a sweep's folder."""

WEIGHTS_DIR = "weights"
"""The folder, inside a sweep's folder, of the networks saved with `save_weights=True`."""


class SkippedLine(NamedTuple):
    """A line of a results file that is not a usable record, and why.

    Attributes:
        path: the file.
        line: its 1-based line number.
        reason: why it was skipped (torn write, not JSON, a field missing or of the wrong type, an
            id that does not match the record, a duplicate of an earlier line).
    """

    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class ResultsWarning(UserWarning):
    """Lines of a results file were skipped (each one is named in the message)."""


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str, "version": int, "task": str, "task_config": dict, "model": str, "seq_len": int, "seed": int,
    "steps": int, "params_budget": int, "batch_size": int, "lr": (int, float), "weight_decay": (int, float),
    "eval_batches": int, "backend": str, "metric": str,
}
"""The fields every record has, with their types (`bool` is refused where an int is expected)."""


def _problem(rec: Any) -> str | None:
    """Why a parsed line is not a usable record, or `None`."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not a record (an object)"
    for key, kind in _FIELDS.items():
        value = rec.get(key)
        if key not in rec:
            return f"no {key!r} field"
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            return f"{key!r} is {value!r}, expected {getattr(kind, '__name__', 'a number')}"
    metric = rec["metric"]
    if metric not in rec or not (rec[metric] is None or isinstance(rec[metric], (int, float))):
        return f"its metric {metric!r} has no number (got {rec.get(metric)!r})"
    if rec.get("clip") is not None and not isinstance(rec["clip"], (int, float)):
        return f"'clip' is {rec['clip']!r}, expected a number or null"
    if rec.get("tbptt") is not None and not isinstance(rec["tbptt"], int):
        return f"'tbptt' is {rec['tbptt']!r}, expected an int or null"
    from .runs import run_id

    fields = {k: rec[k] for k in (*_FIELDS, "clip") if k not in ("id", "metric")}
    if rec.get("tbptt") is not None:
        fields["tbptt"] = rec["tbptt"]
    if rec.get("model_kwargs") is not None:
        fields["model_kwargs"] = rec["model_kwargs"]
    if run_id(fields) != rec["id"]:
        return f"its id {rec['id']} does not match its fields (edited by hand, or damaged)"
    return None


def read_results(
    path: str | os.PathLike[str], *, skipped: list[SkippedLine] | None = None, warn: bool = True
) -> list[dict[str, Any]]:
    """Read the records of a `results.jsonl`, naming every line it skips.

    A line is skipped when it is not a complete record: a torn last line (a run killed while its line
    was written; `compare` re-runs it), text that is not JSON, a record with a field missing or of
    the wrong type, a record whose `id` is not the hash of its own fields (edited or damaged), and a
    second copy of a run already read (so a duplicated line never counts as another seed).

    Args:
        path: the file, or a directory holding `results.jsonl`.
        skipped: a list to which each skipped line is appended (`SkippedLine(path, line, reason)`).
        warn: issue one `ResultsWarning` naming the skipped lines, if any.

    Returns:
        The records, in file order, one per run id; an empty list if the file does not exist.
    """
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.exists():
        return []
    records: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    bad: list[SkippedLine] = []
    with open(p, "rb") as f:
        lines = f.read().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        torn = number == len(lines)  # the last line has no newline: a write that was cut short
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            reason = "a torn last line (a run killed while writing; it is re-run)" if torn else "not JSON"
            bad.append(SkippedLine(p, number, reason))
            continue
        problem = _problem(rec)
        if problem is None and rec["id"] in first_line:
            problem = f"a duplicate of line {first_line[rec['id']]} (run {rec['id']})"
        if problem is not None:
            bad.append(SkippedLine(p, number, problem))
            continue
        first_line[rec["id"]] = number
        records.append(rec)
    if skipped is not None:
        skipped.extend(bad)
    if bad and warn:
        shown = "\n  ".join(str(s) for s in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        warnings.warn(f"{p}: skipped {len(bad)} line{'s' if len(bad) > 1 else ''}:\n  {shown}{more}",
                      ResultsWarning, stacklevel=2)
    return records


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line durably: a single write, flush, fsync; never rewrite the file.

    Args:
        path: the results file (created if missing; its folder must exist).
        record: a JSON-serialisable record without NaN or infinity.
    """
    line = (json.dumps(record, allow_nan=False) + "\n").encode("utf-8")
    new = not path.exists()
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:  # after a torn line, start a fresh one
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = b"\n" + line
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    if new:  # make the new file's name durable too
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a new file's name) durable."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


LOCK_FILE = ".sweep.lock"
"""The lock file in a sweep's folder: held (`flock`) by the sweep writing there."""


@contextlib.contextmanager
def sweep_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `<folder>/.sweep.lock` while a sweep writes there.

    The lock is a file of its own, not `results.jsonl`: a results file deleted or replaced while a
    sweep runs does not let a second sweep in (the lock follows the folder, not the file's inode).
    The kernel releases it when the process ends, even by `kill -9`.

    Args:
        folder: the sweep's folder (must exist).

    Raises:
        RuntimeError: if another sweep holds the lock.
    """
    path = folder / LOCK_FILE
    with open(path, "ab") as f:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"compare: another sweep is writing to {folder} (it holds {path}); "
                f"wait for it to finish or choose another output folder"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
