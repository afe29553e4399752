"""Atomic file writes: a reader sees the old file or the complete new one, never half of either.

Every file seqmem writes for a user (results, reports, plots, weights, benchmark JSON) goes through
`atomic_open`: the bytes go to a temporary file beside the target, are flushed to disk, and the
temporary file is renamed over the target (`os.replace`, atomic on POSIX and Windows).

The new file gets the permissions a plain `open(path, "wb")` would give it: `0o666` less the
process's umask for a new file (the kernel applies the umask, as for any `open`), and the old
file's permissions when it replaces one. `tempfile.mkstemp` would create it `0o600`, unreadable to
the user's group and to a web server serving a report.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_open", "atomic_write_bytes"]

_NEW_FILE_MODE = 0o666  # what open() asks for; the kernel removes the umask's bits
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty, exclusively created file beside `path`: `(fd, its path)`."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, _FLAGS, _NEW_FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")  # pragma: no cover


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open `path` for writing bytes, atomically: the file appears, complete, when the block ends.

    The parent folder is created if missing. If the block raises, the target is left as it was and
    the temporary file is removed.

    Args:
        path: the file to write.

    Yields:
        A binary file object to write to.

    Examples:
        >>> import pathlib, tempfile
        >>> from seqmem._files import atomic_open
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
        >>> with atomic_open(target) as f:
        ...     _ = f.write(b"all or nothing")
        >>> target.read_bytes()
        b'all or nothing'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(FileNotFoundError):  # replacing a file: keep its permissions
                os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically, with the permissions `open(path, "wb")` would give.

    Args:
        path: the file to write (its folder is created if missing).
        data: the complete contents.

    Returns:
        The path written, as a `Path`.
    """
    with atomic_open(path) as f:
        f.write(data)
    return Path(path)
