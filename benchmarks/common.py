"""Shared benchmark plumbing: stage timing with peak-RSS sampling, tables, JSON output.

Every ``recops bench ...`` prints a readable table and writes the same figures as JSON
(with machine facts and the code revision) so runs can be compared across commits.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from components.records import code_revision, utc_now


@contextmanager
def measurement_lock(path: Path | None) -> Iterator[str]:
    """Hold an exclusive ``flock`` on ``path`` (None: no lock) around a timed part of a
    benchmark, so preparation (training, data) runs outside it and two measurements on a
    shared machine never overlap; yields the load average when the lock was taken."""
    import fcntl

    with contextlib.ExitStack() as stack:
        if path is not None:
            handle = stack.enter_context(path.open("a"))
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield " / ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class StageFigures:
    """Wall time, CPU time and peak resident memory of one measured stage.

    ``cpu_seconds`` is this process's CPU time (all its threads): on a shared machine it
    says what the stage costs whatever the load, where wall time says what it took.
    ``children_cpu_seconds``: the CPU time of its child processes that lived through the
    stage (Spark's JVM), when measured with ``children``."""

    name: str
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    cpu_seconds: float = 0.0
    children_cpu_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class _RssSampler(threading.Thread):
    """This process's RSS (with ``children``: plus its child processes') every
    ``interval_s``. The children are listed again every ``list_children_s`` only: a
    recursive listing reads every process on the machine (1.5 ms of CPU here), which
    at every sample was most of a Spark stage's driver CPU; their RSS is read at every
    sample."""

    def __init__(
        self, interval_s: float = 0.01, children: bool = False, list_children_s: float = 1.0
    ) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.children = children
        self.list_children_s = list_children_s
        self.process = psutil.Process()
        self._kids: list[psutil.Process] = []
        self._listed_at = -float("inf")
        self.peak = self._rss()
        self._stop_event = threading.Event()

    def _children(self) -> list[psutil.Process]:
        now = time.monotonic()
        if now - self._listed_at >= self.list_children_s:
            self._kids = self.process.children(recursive=True)
            self._listed_at = now
        return self._kids

    def _rss(self) -> int:
        total = self.process.memory_info().rss
        if self.children:
            for child in self._children():
                with contextlib.suppress(psutil.Error):  # exited since it was listed
                    total += child.memory_info().rss
        return total

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop_event.wait(self.interval_s)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self._rss())


def children_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) of each live child process of this one, by pid."""
    out = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # exited between listing and reading
            times = child.cpu_times()
            out[child.pid] = times.user + times.system
    return out


@contextmanager
def measure(name: str, *, children: bool = False) -> Iterator[StageFigures]:
    """Time the block and sample this process's RSS (plus its child processes' with
    ``children``, e.g. Spark's JVM) every 10 ms to find its peak; with ``children`` also
    the CPU time its child processes spent meanwhile (those alive at its end)."""
    figures = StageFigures(name)
    sampler = _RssSampler(children=children)
    sampler.start()
    before = children_cpu_seconds() if children else {}
    start = time.perf_counter()
    cpu_start = time.process_time()
    try:
        yield figures
    finally:
        figures.seconds = time.perf_counter() - start
        figures.cpu_seconds = time.process_time() - cpu_start
        if children:
            after = children_cpu_seconds()
            figures.children_cpu_seconds = sum(t - before.get(p, 0.0) for p, t in after.items())
        figures.peak_rss_mb = sampler.stop() / 2**20


def machine_facts() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Render ``rows`` as a rich table on stdout."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col not in (columns[0],) else "left")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    Console().print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_report(path: Path | None, benchmark: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Add metadata (benchmark, time, code rev, machine) and write JSON when ``path`` is set."""
    report = {
        "benchmark": benchmark,
        "created_at": utc_now().isoformat(),
        "code_rev": code_revision(),
        "machine": machine_facts(),
        **payload,
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
