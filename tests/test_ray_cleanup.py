"""A sweep on a local Ray instance leaves no Ray process behind, even when it is killed with `kill -9`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import seqmem

ROOT = Path(seqmem.__file__).resolve().parent.parent
REAPER = ROOT / "seqmem" / "_ray_reaper.py"
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="the reaper reads /proc (Linux)")


def _processes_naming(folder: str) -> dict[int, str]:
    """Processes whose command line or open files name `folder` (found independently of the reaper's code)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            named = folder in cmd
            for fd in [] if named else os.listdir(f"/proc/{entry}/fd"):
                try:
                    named = named or os.readlink(f"/proc/{entry}/fd/{fd}").startswith(folder)
                except OSError:
                    pass
        except OSError:
            continue
        if named:
            found[int(entry)] = cmd.strip()
    return found


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


def _kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


_SLEEPER = """
import signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
if sys.argv[2] != "-":
    log = open(sys.argv[2], "w")  # like a Ray agent writing its log into the session folder
print("ready", flush=True)
time.sleep(600)
"""

_SWEEP = """
import subprocess, sys
log = open(sys.argv[2] + "/driver.log", "w")  # the sweep process holds session files too
reaper = subprocess.Popen([sys.executable, sys.argv[1], sys.argv[2]], stdin=subprocess.PIPE)
reaper.stdin.close()  # as RayExecutor does after ray.shutdown()
reaper.wait()
print("sweep alive", flush=True)
"""


def test_the_reaper_ends_the_session_processes_and_spares_the_rest(tmp_path):
    session = tmp_path / "session_2026"
    session.mkdir()
    started = []
    try:
        for mode, log in (("polite", str(session / "a.log")), ("stubborn", str(session / "b.log")),
                          ("polite", "-"), ("polite", str(tmp_path / "elsewhere.log"))):
            started.append(subprocess.Popen([sys.executable, "-c", _SLEEPER, mode, log], stdout=subprocess.PIPE,
                                            text=True))
            assert started[-1].stdout.readline().strip() == "ready"
        in_session = {p.pid for p in started[:2]}
        assert in_session <= set(_processes_naming(str(session)))
        sweep = subprocess.run([sys.executable, "-c", _SWEEP, str(REAPER), str(session)], capture_output=True,
                               text=True, timeout=60)
        assert sweep.stdout.strip() == "sweep alive", sweep.stderr  # the process that started it is spared
        assert _wait_until(lambda: all(p.poll() is not None for p in started[:2]), 10)
        assert started[0].returncode == -signal.SIGTERM and started[1].returncode == -signal.SIGKILL
        assert all(p.poll() is None for p in started[2:])  # processes outside the session are left alone
    finally:
        for p in started:
            p.kill()
            p.wait()


_RAY_SWEEP = [sys.executable, "-m", "seqmem", "compare", "--task", "xor-echo", "--models", "rnn", "--seq-lens", "3",
              "--steps", "1000000", "--params", "1500", "--batch-size", "8", "--eval-batches", "1", "--no-plot",
              "--executor", "ray", "--jobs", "1"]


@pytest.mark.ray
@pytest.mark.slow
def test_a_ray_sweep_killed_with_sigkill_leaves_no_ray_process():
    pytest.importorskip("ray")
    # a short folder of its own: Ray's socket paths must stay under 108 bytes, and the session is told apart
    # from any other Ray instance on the machine by it
    ray_tmp = tempfile.mkdtemp(prefix="sqr", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(ROOT)}
    sweep = subprocess.Popen([*_RAY_SWEEP, "--out", f"{ray_tmp}/out"], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: dict[int, str] = {}
    try:
        def training() -> bool:  # the run's task is on a Ray worker
            seen.update(_processes_naming(ray_tmp))
            return sweep.poll() is not None or any("_ray_call" in cmd for cmd in seen.values())

        assert _wait_until(training, 240), "the sweep did not start a Ray task in time"
        assert sweep.poll() is None, sweep.stderr.read()
        names = " ".join(seen.values())
        assert "raylet" in names and "gcs_server" in names  # what is checked below is a live Ray session
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
        # Ray's agents used to linger for a minute (a 60 s timeout reporting the raylet's death to the dead GCS)
        gone = _wait_until(lambda: not _processes_naming(ray_tmp), 20)
        assert gone, f"left running 20 s after kill -9: {sorted(_processes_naming(ray_tmp).values())}"
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
        _kill_all(_processes_naming(ray_tmp))  # never leave a process behind, even when the test fails
        shutil.rmtree(ray_tmp, ignore_errors=True)
