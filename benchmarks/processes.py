"""Processes the benchmarks start: a tool timed and its memory watched, and busy loops for load.

``measure`` runs a command to its end and returns its wall time and the peak resident memory of
its whole process tree (sling drives DuckDB CLI children; what the machine pays is the tree).
Every ``SAMPLE_SECONDS`` it reads, for each live process of the tree, its high-water mark
(``VmHWM`` of /proc/PID/status: the largest resident size since its exec, so no short peak
between two samples escapes) and keeps the largest sum. For a single process that is its exact
peak; for a tree, an upper bound (the children's peaks need not coincide). ``ru_maxrss`` is no
use here: a child counts the parent's memory that it carried over the fork until its exec.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SAMPLE_SECONDS = 0.05
TIMEOUT_SECONDS = 3600.0  # one tool's one run, even at 10 M rows on a loaded machine


@dataclass(frozen=True)
class Measured:
    seconds: float  # wall time, start to exit
    peak_rss_mb: float  # the largest sum of the tree's resident memory seen
    stdout: str
    stderr: str


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def _high_water_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, IndexError, ValueError):
        pass  # the process ended between the listing and the read
    return 0


def tree_high_water_bytes(pid: int, skip_root: bool = False) -> int:
    """The sum of the high-water marks of ``pid`` and its live descendants."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        if not (skip_root and current == pid):
            total += _high_water_bytes(current)
        todo += _children(current)
    return total


def _before_exec(pid: int) -> bool:
    """Forked but not yet exec'd: the child still shows our own memory."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() == OWN_CMDLINE
    except OSError:
        return False


OWN_CMDLINE = Path("/proc/self/cmdline").read_bytes()


def _kill_tree(pid: int) -> None:
    """SIGKILL to the command's process group (it leads one: ``start_new_session``) and to every
    descendant found under it (one that left the group too), then a wait, bounded, until none
    of them runs any more: SIGKILL is delivered at once, but a process takes a moment to exit."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    todo, found = [pid], []
    while todo:
        current = todo.pop()
        found.append(current)
        todo += _children(current)
    for current in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(current, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_running(p) for p in found[1:]) and time.monotonic() < deadline:
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited process waiting to be reaped runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def measure(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = TIMEOUT_SECONDS
) -> Measured:
    """Run ``command`` (environment: ours plus ``env``); a failure raises with its output's end,
    and so does a run longer than ``timeout`` (killed with its children: a hung peer must not
    hang the benchmark)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True
        )
        peak = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, tree_high_water_bytes(process.pid, skip_root=_before_exec(process.pid)))
                stop.wait(SAMPLE_SECONDS)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(process.pid)
            process.wait()
        seconds = time.perf_counter() - started
        stop.set()
        watcher.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if seconds >= timeout:
        raise RuntimeError(f"{' '.join(command[:5])} ... killed after {timeout:g} s:\n{(stdout + stderr)[-3000:]}")
    if process.returncode:
        raise RuntimeError(f"{' '.join(command[:5])} ... exited {process.returncode}:\n{(stdout + stderr)[-3000:]}")
    return Measured(seconds, peak / 2**20, stdout, stderr)


BUSY_LOOP = "while True: pass"


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[list[int]]:
    """``count`` processes spinning on a core each (a loaded machine); stopped by their pids."""
    started = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]
    try:
        yield [p.pid for p in started]
    finally:
        for p in started:
            p.kill()
        for p in started:
            p.wait()
