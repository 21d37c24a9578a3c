"""``recops bench validation``: GX suite throughput and memory on synthetic events.

Figures: GX import and context creation time, the fixed per-call overhead (a 100-row
batch on a warm context), validation time and rows/s on N events, resident memory before
validation (the batch itself) and the peak during validation (sampled every 50 ms).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil


class _PeakRss:
    """Samples this process's RSS in a thread; ``peak`` is the maximum seen (bytes), and
    ``children_peak`` that of its child processes together (Spark's JVM)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self.children_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._process = psutil.Process()

    def _children_rss(self) -> int:
        total = 0
        for child in self._process.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # exited between listing and reading
                total += child.memory_info().rss
        return total

    def _sample(self) -> None:
        self.peak = max(self.peak, self._process.memory_info().rss)
        self.children_peak = max(self.children_peak, self._children_rss())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> _PeakRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _events(n_events: int):
    from components.data.config import SyntheticConfig
    from components.data.synthetic import generate_events

    cfg = SyntheticConfig(
        n_users=max(10, n_events // 40),
        n_items=max(10, min(100_000, n_events // 100)),
        n_events=n_events,
        start="2024-01-01T00:00:00Z",
    )
    return generate_events(cfg)


def _validate_stream(
    n_events: int, cfg, ws, budget_mb: int, events_per_file: int
) -> tuple[Any, int, float, int]:
    """Write the events as partitioned Parquet (untimed) and validate the folder in
    passes; returns (report, RSS before, seconds, peak RSS)."""
    from benchmarks.data import bench_synthetic
    from components.data.stream import write_events_dataset
    from components.validation.runner import validate_event_files

    folder = ws.root / "bench-events"
    write_events_dataset(bench_synthetic(n_events), folder, events_per_file)
    rss_before = psutil.Process().memory_info().rss
    with _PeakRss() as peak:
        started = time.perf_counter()
        report = validate_event_files(
            folder, cfg, ws, batch_id=f"bench-stream-{n_events}", memory_budget_mb=budget_mb
        )
        seconds = time.perf_counter() - started
    return report, rss_before, seconds, peak.peak


def _validate_spark(
    n_events: int, cfg, ws, events_per_file: int, master: str, driver_memory_mb: int
) -> tuple[Any, int, float, _PeakRss, dict[str, Any]]:
    """The stream engine's files validated by GX's Spark datasource at ``master`` (the
    session started, untimed, first, with a ``driver_memory_mb`` heap); returns (report, RSS before, seconds, peaks, extra
    figures: the session start and whether the stream engine's report is the same)."""
    from benchmarks.data import bench_synthetic
    from components.data.spark import spark_session
    from components.data.stream import write_events_dataset
    from components.validation.runner import validate_event_files
    from components.validation.spark import validate_spark_files

    folder = ws.root / "bench-events"
    write_events_dataset(bench_synthetic(n_events), folder, events_per_file)
    started = time.perf_counter()
    spark = spark_session(master, driver_memory_mb)
    session_s = time.perf_counter() - started
    # a warm-up run on a small batch: the JVM compiles Spark's and GX's code paths on
    # first use (minutes on a loaded 2-core machine), a fixed cost, not the batch's
    warmup = ws.root / "bench-warmup"
    write_events_dataset(bench_synthetic(2_000), warmup, 1_000)
    validate_spark_files(
        warmup,
        cfg,
        ws,
        batch_id="bench-spark-warmup",
        master=master,
        driver_memory_mb=driver_memory_mb,
    )
    warmup_s = time.perf_counter() - started - session_s
    rss_before = psutil.Process().memory_info().rss
    with _PeakRss() as peak:
        started = time.perf_counter()
        report = validate_spark_files(
            folder,
            cfg,
            ws,
            batch_id=f"bench-spark-{n_events}",
            master=master,
            driver_memory_mb=driver_memory_mb,
        )
        seconds = time.perf_counter() - started
    started = time.perf_counter()
    streamed = validate_event_files(
        folder, cfg, ws, batch_id=f"bench-stream-{n_events}", memory_budget_mb=2048
    )
    extra = {
        "spark_master": master,
        "spark_driver_memory": spark.sparkContext.getConf().get("spark.driver.memory"),
        "spark_session_start_s": round(session_s, 3),
        "spark_warmup_s": round(warmup_s, 3),
        "stream_validation_s": round(time.perf_counter() - started, 3),
        "same_results_as_stream": _outcome(report) == _outcome(streamed),
    }
    return report, rss_before, seconds, peak, extra


def _outcome(report) -> dict[str, tuple[bool, Any]]:
    return {r.name: (r.success, r.observed) for r in report.results}


def run_validation_benchmark(
    n_events: int,
    *,
    workspace: str | Path | None = None,
    chunk_rows: int | None = None,
    engine: str = "memory",
    budget_mb: int = 2048,
    events_per_file: int = 1_000_000,
    spark_master: str = "local[2]",
    spark_driver_memory_mb: int = 1024,
) -> dict[str, Any]:
    """Validate ``n_events`` synthetic events with the full suite; return the figures.

    ``engine="stream"`` validates a partitioned Parquet folder in hash passes planned
    from ``budget_mb`` (:func:`components.validation.runner.validate_event_files`); the
    events are never one frame in this process. ``engine="spark"``: the same folder
    through GX's Spark datasource at ``spark_master`` (the driver's heap
    ``spark_driver_memory_mb``, as ``data.spark_driver_memory_mb``); the peak RSS then counts Spark's
    JVM too (``jvm_peak_rss_mib``), and the stream engine's report is compared."""
    mib = 1024 * 1024
    started = time.perf_counter()
    import great_expectations  # noqa: F401

    import_s = time.perf_counter() - started
    from components.validation.config import ValidationConfig
    from components.validation.runner import gx_context, validate_events
    from components.workspace import Workspace

    root = Path(workspace) if workspace else Path(tempfile.mkdtemp(prefix="recops-bench-"))
    ws = Workspace.at(root).ensure()
    cfg = ValidationConfig() if chunk_rows is None else ValidationConfig(chunk_rows=chunk_rows)
    started = time.perf_counter()
    gx_context(ws)
    context_s = time.perf_counter() - started

    small = _events(100)
    validate_events(small, cfg, ws, batch_id="bench-warmup")
    started = time.perf_counter()
    validate_events(small, cfg, ws, batch_id="bench-overhead")
    overhead_s = time.perf_counter() - started

    extra: dict[str, Any] = {}
    jvm_peak = 0
    if engine == "stream":
        report, rss_before, seconds, peak_rss = _validate_stream(
            n_events, cfg, ws, budget_mb, events_per_file
        )
    elif engine == "spark":
        report, rss_before, seconds, peaks, extra = _validate_spark(
            n_events, cfg, ws, events_per_file, spark_master, spark_driver_memory_mb
        )
        peak_rss, jvm_peak = peaks.peak, peaks.children_peak
    else:
        events = _events(n_events)
        rss_before = psutil.Process().memory_info().rss
        with _PeakRss() as peak:
            started = time.perf_counter()
            report = validate_events(events, cfg, ws, batch_id=f"bench-{n_events}")
            seconds = time.perf_counter() - started
        peak_rss = peak.peak
    return {
        "events": n_events,
        "engine": engine,
        "memory_budget_mb": budget_mb if engine == "stream" else None,
        "chunk_rows": cfg.chunk_rows,
        "chunks": report.n_chunks,
        "passed": report.passed,
        "failed": [r.name for r in report.failures],
        "gx_import_s": round(import_s, 3),
        "gx_context_s": round(context_s, 3),
        "per_call_overhead_s": round(overhead_s, 3),
        "validation_s": round(seconds, 3),
        "rows_per_s": round(n_events / seconds) if seconds else None,
        "rss_before_mib": round(rss_before / mib, 1),
        "peak_rss_mib": round(peak_rss / mib, 1),
        "peak_minus_before_mib": round((peak_rss - rss_before) / mib, 1),
        "jvm_peak_rss_mib": round(jvm_peak / mib, 1) if engine == "spark" else None,
        **extra,
        "cpu_count": os.cpu_count(),
        "workspace": str(root),
    }


def print_table(figures: dict[str, Any], console) -> None:
    """A two-column table of the figures."""
    from rich.table import Table

    table = Table("figure", "value", title="recops bench validation")
    for key, value in figures.items():
        table.add_row(key, str(value))
    console.print(table)
