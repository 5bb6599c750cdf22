"""What every benchmark shares: sizes, timings, results, the servers, the machine's description."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from roundtrip.dev.services import PostgresEndpoint, RedisEndpoint, postgres_server, redis_server

SIZE_SUFFIXES = {"k": 1_000, "m": 1_000_000}


def parse_size(text: str) -> int:
    """``1m`` -> 1_000_000, ``250k`` -> 250_000, ``12345`` -> 12345."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([km]?)", text.strip().lower())
    if not match:
        raise ValueError(f"size must look like 1m, 250k or 12345, got {text!r}")
    number, suffix = match.groups()
    return int(float(number) * SIZE_SUFFIXES.get(suffix, 1))


def human(n: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:g}{unit}"
    return f"{n:g}"


@dataclass
class Result:
    """One measured figure, as a ratio against its baseline where it has one."""

    benchmark: str
    metric: str  # what was measured, e.g. "rows/s, first sync"
    value: float  # the candidate's figure (rows/s, seconds, MB ...)
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    target: str | None = None  # e.g. ">= 0.5" (on the ratio), or "<= 2 s" (on the value, in its unit)
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline  # type: ignore[operator]

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        op, limit, *unit = self.target.split()
        if unit and unit != [self.unit]:
            raise ValueError(f"target {self.target!r} is not in the result's unit {self.unit!r}")
        measured = self.value if unit else self.ratio
        if measured is None:
            return None
        return measured >= float(limit) if op == ">=" else measured <= float(limit)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "passed": self.passed}


@dataclass
class Context:
    """One benchmark run: the size asked for, a work folder, servers started on demand."""

    size: int
    workdir: Path
    repeat: int = 2
    peers: tuple[str, ...] = ()  # sync_peers: the peers raced (empty: all)
    multiples: tuple[int, ...] = (1, 5, 10)  # growth: the sizes run, as multiples of size
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _postgres: PostgresEndpoint | None = None
    _redis: RedisEndpoint | None = None

    def postgres(self) -> PostgresEndpoint:
        if self._postgres is None:
            self._postgres = self.stack.enter_context(postgres_server(self.workdir / "services"))
        return self._postgres

    def redis(self) -> RedisEndpoint:
        if self._redis is None:
            self._redis = self.stack.enter_context(redis_server(self.workdir / "services"))
        return self._redis

    def path(self, name: str) -> Path:
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for a block (the project reads its paths from them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def interleaved(runs: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[float]]:
    """Seconds of each run, repeated round-robin (A B C A B C ...) so load hits all alike."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            seconds[name].append(timed(fn)[0])
    return seconds


def run_checked(command: list[str], env: dict[str, str] | None = None) -> str:
    """Run ``command``, return its output; a failure raises with the output's end."""
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode:
        raise RuntimeError(
            f"{' '.join(command[:4])} ... failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
        )
    return done.stdout


def python() -> str:
    return sys.executable


def machine() -> dict[str, Any]:
    """What the figures were measured on, and how busy it was."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
