"""Timing, records, progress and memory helpers shared by the scenario runners."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

OURS = "crdt-mls"
PEER = "mls-rs"


@dataclass(frozen=True, slots=True)
class Record:
    """One JSON result: a scenario at one group size for one implementation.

    ``median_s``/``min_s``/``max_s`` are wall-clock seconds (what the caller waits for);
    ``median_cpu_s``/``min_cpu_s``/``max_cpu_s`` the process CPU seconds of the same calls
    (all threads: above the wall time when the work ran on both cores)."""

    scenario: str
    members: int
    impl: str
    median_s: float
    min_s: float
    max_s: float
    peak_rss_bytes: int
    samples: int
    median_cpu_s: float
    min_cpu_s: float
    max_cpu_s: float
    #: replica scenarios: median bytes the call asked the store to write (benchmarks.replica_bench)
    bytes_written: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far: Linux ``VmHWM`` (``ru_maxrss`` would
    carry the parent's peak over into a child started by fork+exec), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def record(scenario: str, members: int, impl: str, timer: Timer | list[float], rss: int | None = None) -> Record:
    """Summarize timing samples as a `Record`: a `Timer`, or a list of seconds measured
    without one (used as both wall and CPU time)."""
    wall = timer.wall if isinstance(timer, Timer) else timer
    cpu = timer.cpu if isinstance(timer, Timer) else timer
    if not wall or len(cpu) != len(wall):
        raise ValueError(f"no samples for {scenario}")
    return Record(
        scenario,
        members,
        impl,
        statistics.median(wall),
        min(wall),
        max(wall),
        peak_rss_bytes() if rss is None else rss,
        len(wall),
        statistics.median(cpu),
        min(cpu),
        max(cpu),
    )


class Timer:
    """Accumulates samples: ``with timer: ...`` adds one.  ``wall`` are wall-clock seconds
    (``time.perf_counter``), ``cpu`` the process CPU seconds of the same calls (all threads;
    robust against other processes competing for the cores)."""

    __slots__ = ("_c0", "_t0", "cpu", "wall")

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._t0 = 0.0
        self._c0 = 0.0

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu.append(time.process_time() - self._c0)
        self.wall.append(time.perf_counter() - self._t0)


class Progress:
    """A one-line progress bar on stderr (only drawn on a terminal or with ``force``)."""

    __slots__ = ("_active", "_last", "_start", "label", "total")

    def __init__(self, label: str, total: int, *, force: bool = False) -> None:
        self.label = label
        self.total = max(1, total)
        self._active = force or sys.stderr.isatty()
        self._start = time.perf_counter()
        self._last = 0.0

    def update(self, done: int, note: str = "") -> None:
        if not self._active:
            return
        now = time.perf_counter()
        if done < self.total and now - self._last < 0.1:
            return
        self._last = now
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 30)
        elapsed = now - self._start
        sys.stderr.write(f"\r{self.label:32.32s} [{bar:30s}] {done}/{self.total} {elapsed:7.1f}s {note:24.24s}")
        sys.stderr.flush()

    def done(self) -> None:
        if self._active:
            self.update(self.total)
            sys.stderr.write("\n")
            sys.stderr.flush()


def log(msg: str) -> None:
    """A status line on stderr."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
