"""Stop the processes of a local Ray session once the process that started it is gone, even after `kill -9`.

`RayExecutor` runs this file as a script (it imports nothing from seqmem, so it starts in a few
milliseconds) when it starts a local Ray instance, with the session's folder as its argument and a
pipe from the sweep process as its standard input. It blocks reading that pipe; the read returns
when the sweep process closes it (after `ray.shutdown()`) or dies, whatever killed it. Then it ends
every process of the session still alive: SIGTERM, and SIGKILL after a grace period.

Why: Ray's own fate sharing ends the raylet, the GCS server and the workers within about two
seconds of a `kill -9` of the driver, but its dashboard and runtime-env agents first try to report
the raylet's death to the (dead) GCS server, with a 60-second timeout, and only then exit.

A process belongs to the session if its command line or one of its open files names the session
folder (`/tmp/ray/session_<date>_<pid>`, unique to the session): the raylet and GCS server take it as
an argument, the agents and workers write their logs there. Linux only (it reads `/proc`); elsewhere
it does nothing and Ray's own clean-up applies.
"""

from __future__ import annotations

import os
import signal
import sys
import time

GRACE_S = 2.0
"""Seconds between SIGTERM and SIGKILL."""


def session_processes(session_dir: str, spare: tuple[int, ...] = ()) -> list[int]:
    """The ids of the processes whose command line or open files name `session_dir`, but for this one and `spare`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (os.getpid(), *spare):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                named = session_dir.encode() in f.read()
            if not named:
                fds = f"/proc/{entry}/fd"
                named = any(_link(f"{fds}/{fd}").startswith(session_dir) for fd in os.listdir(fds))
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if named:
            found.append(int(entry))
    return found


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def reap(session_dir: str, spare: tuple[int, ...] = (), grace: float = GRACE_S) -> list[int]:
    """End every process of the session but `spare`: SIGTERM, then SIGKILL for those alive after `grace` seconds.

    Returns:
        The ids of the processes signalled.
    """
    if not os.path.isdir("/proc"):
        return []
    signalled = pids = session_processes(session_dir, spare)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = session_processes(session_dir, spare)  # a fresh look: never signal a pid that was reused
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    return signalled


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the sweep; it stops Ray itself
    session_dir, sweep = argv[1], os.getppid()  # the sweep process holds session files too: never end it
    try:
        while sys.stdin.buffer.read(4096):  # the sweep process writes nothing: this waits for EOF
            pass
    except OSError:
        pass
    reap(session_dir, spare=(sweep,))


if __name__ == "__main__":
    main(sys.argv)
