"""The results file of a sweep: `results.jsonl`, one complete JSON record per finished run.

Only the process that runs a sweep writes it, one complete line per finished run in a single `write`,
flushed and fsynced before the next run is recorded, and never rewritten. So a sweep killed at any
moment (even `kill -9`) keeps every run that finished; at worst the line being written is torn, and a
torn last line is ignored on reading and closed with a newline before the next append. An advisory
lock keeps two sweeps from appending to the same file at once.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["RECORD_VERSION", "RESULTS_FILE", "WEIGHTS_DIR", "append_record", "read_results", "sweep_lock"]

RECORD_VERSION = 1
"""Version of the record format; it enters every run id, so a new format reruns everything."""

RESULTS_FILE = "results.jsonl"
"""The name of the results file in a sweep's folder."""

WEIGHTS_DIR = "weights"
"""The folder, inside a sweep's folder, of the networks saved with `save_weights=True`."""


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the records of a `results.jsonl`, skipping lines that are not complete records.

    A run killed while writing leaves a torn last line; it is ignored (and re-run by `compare`).

    Args:
        path: the file, or a directory holding `results.jsonl`.

    Returns:
        The records, in file order; an empty list if the file does not exist.
    """
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.exists():
        return []
    records = []
    with open(p, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue
            if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                records.append(rec)
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


@contextlib.contextmanager
def sweep_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `<folder>/results.jsonl` (creating it; released if killed).

    Args:
        folder: the sweep's folder.

    Raises:
        RuntimeError: if another sweep holds the lock.
    """
    path = folder / RESULTS_FILE
    new = not path.exists()
    with open(path, "ab") as f:
        if new:
            fsync_dir(folder)
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"compare: another sweep is writing to {path} (it holds a lock on it); "
                f"wait for it to finish or choose another output folder"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
