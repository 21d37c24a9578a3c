"""Append-only Parquet logs written off the request path: what the bento served, and the
feedback it received.

:class:`ParquetLog` is the whole mechanism. ``record(row)`` appends a tuple to an
in-memory buffer under a lock and returns (no I/O, no conversion); a background thread
wakes every ``flush_interval_s`` (or when ``flush_rows`` rows wait), turns the rows into
one Arrow table and appends it as a row group to the open part file. A part is written as
``<name>.parquet.tmp`` and renamed to ``<name>.parquet`` when it is closed (size
``rotate_bytes`` or age ``rotate_s``, or at shutdown), so readers only ever see complete
files. Memory is bounded: rows beyond ``max_buffer_rows`` are dropped and counted. A
write error (full disk, unwritable folder) loses that flush's rows, is counted and
reported through ``on_event``, and never reaches the caller.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.monitoring.config import ServingLogConfig

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)

# The Arrow schemas are built on first use (module ``__getattr__``): pyarrow is ~0.15 s
# of import that BentoML's arbiter and the bento build pay only to throw away (both import
# the service module, which imports this one); the worker builds them when it opens its
# logs.
TS: pa.DataType
SERVED_SCHEMA: pa.Schema
FEEDBACK_SCHEMA: pa.Schema


def _served_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("request_id", pa.string()),
            ("ts", _timestamp()),
            ("user_id", pa.string()),
            ("history_len", pa.int32()),
            ("unknown_items", pa.int32()),
            ("source", pa.string()),
            ("model_version", pa.string()),
            ("items", pa.list_(pa.string())),
            ("scores", pa.list_(pa.float32())),
            # the most recent ``serve.log.history_items`` history item ids (null in parts
            # written before the column existed)
            ("history", pa.list_(pa.string())),
        ]
    )


def _feedback_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("timestamp", _timestamp()),
            ("event_type", pa.string()),
            ("value", pa.float64()),
            ("request_id", pa.string()),
            ("received_at", _timestamp()),
        ]
    )


def _timestamp() -> pa.DataType:
    import pyarrow as pa

    return pa.timestamp("us", tz="UTC")


_LAZY: dict[str, Callable[[], Any]] = {
    "TS": _timestamp,
    "SERVED_SCHEMA": _served_schema,
    "FEEDBACK_SCHEMA": _feedback_schema,
}


def __getattr__(name: str) -> Any:
    """:data:`TS`, :data:`SERVED_SCHEMA`, :data:`FEEDBACK_SCHEMA`, built once on first use."""
    build = _LAZY.get(name)
    if build is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = build()
    return value


SERVED = "served"
HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:63] or "host"
FEEDBACK = "feedback"
PART_SUFFIX = ".parquet"
EventHook = Callable[[str, int], None]


def now_us() -> int:
    """Now as integer microseconds since the epoch (the log's timestamp unit)."""
    return time.time_ns() // 1000


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass
class LogStats:
    """Counts since start: rows written, dropped (buffer full), lost to write errors."""

    rows_written: int = 0
    rows_dropped: int = 0
    rows_failed: int = 0
    write_errors: int = 0
    parts_closed: int = 0
    last_error: str | None = None
    buffered: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Part:
    writer: pq.ParquetWriter
    tmp: Path
    final: Path
    opened: float = field(default_factory=time.monotonic)


def rows_to_table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    """Row tuples (timestamps as integer microseconds) as an Arrow table of ``schema``."""
    import pyarrow as pa

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for values, fld in zip(columns, schema, strict=True):
        if pa.types.is_timestamp(fld.type):
            arrays.append(pa.array(values, pa.int64()).cast(fld.type))
        else:
            arrays.append(pa.array(values, fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class ParquetLog:
    """A bounded, buffered, rotated Parquet log written by one background thread."""

    def __init__(
        self,
        folder: Path,
        name: str,
        schema: pa.Schema,
        cfg: ServingLogConfig,
        on_event: EventHook | None = None,
    ) -> None:
        self.folder = folder
        self.name = name
        self.schema = schema
        self.cfg = cfg
        self.on_event = on_event or (lambda kind, n: None)
        self.stats = LogStats()
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._part: _Part | None = None
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name=f"recops-{name}-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # --- the hot path ------------------------------------------------------------------
    def record(self, row: tuple) -> bool:
        """Buffer one row; False (and counted) when the buffer is full. Never raises."""
        full = False
        with self._lock:
            if len(self._rows) >= self.cfg.max_buffer_rows:
                self.stats.rows_dropped += 1
                dropped = True
            else:
                self._rows.append(row)
                dropped = False
                full = len(self._rows) >= self.cfg.flush_rows
        if dropped:
            self.on_event("dropped", 1)
            return False
        if full:
            self._wake.set()
        return True

    # --- the writer thread -------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.cfg.flush_interval_s)
            self._wake.clear()
            self.flush()
        self.flush()
        self._close_part()

    def flush(self) -> int:
        """Write what is buffered now (called by the thread; tests may call it). Rows."""
        with self._lock:
            rows, self._rows = self._rows, []
        self.stats.buffered = 0
        try:
            if rows:
                self._write(rows_to_table(rows, self.schema))
            self._rotate_if_due()
        except Exception as exc:  # a full disk or a bad folder must never reach a request
            self._failed(exc, len(rows))
            return 0
        if rows:
            self.stats.rows_written += len(rows)
            self.on_event("written", len(rows))
        return len(rows)

    def _failed(self, exc: Exception, n_rows: int) -> None:
        self.stats.write_errors += 1
        self.stats.rows_failed += n_rows
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self.on_event("failed", n_rows)
        self.on_event("error", 1)
        if self.stats.write_errors <= 3 or self.stats.write_errors % 100 == 0:
            log.error("%s log: write failed (%s); %d rows lost", self.name, exc, n_rows)
        part, self._part = self._part, None
        if part is not None:
            try:
                part.writer.close()
                os.replace(part.tmp, part.final)
            except Exception:
                log.warning("%s log: could not close %s after a write error", self.name, part.tmp)

    def _open_part(self) -> _Part:
        import pyarrow.parquet as pq

        self.folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        # the host too: pods sharing one volume (the k8s arms) may run the same pid
        stem = f"{self.name}-{stamp}-{HOST}-{os.getpid()}-{self._seq:05d}"
        tmp = self.folder / f"{stem}{PART_SUFFIX}.tmp"
        return _Part(
            pq.ParquetWriter(str(tmp), self.schema), tmp, self.folder / f"{stem}{PART_SUFFIX}"
        )

    def _write(self, table: pa.Table) -> None:
        if self._part is None:
            self._part = self._open_part()
        self._part.writer.write_table(table)

    def _rotate_if_due(self) -> None:
        part = self._part
        if part is None:
            return
        too_old = time.monotonic() - part.opened >= self.cfg.rotate_s
        if too_old or part.tmp.stat().st_size >= self.cfg.rotate_bytes:
            self._close_part()

    def _close_part(self) -> None:
        part, self._part = self._part, None
        if part is None:
            return
        part.writer.close()
        os.replace(part.tmp, part.final)
        self.stats.parts_closed += 1

    def rotate(self) -> None:
        """Flush and close the open part now (its rows become readable)."""
        self.flush()
        try:
            self._close_part()
        except Exception as exc:
            self._failed(exc, 0)

    def close(self) -> None:
        """Stop the thread after a last flush; idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)


def part_files(folder: Path, name: str) -> list[Path]:
    """Closed parts of log ``name`` in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{name}-*{PART_SUFFIX}"))


def read_log(
    folder: Path, name: str, schema: pa.Schema, columns: list[str] | None = None
) -> pa.Table:
    """Every closed part of log ``name`` as one table (empty with ``schema`` when none)."""
    import pyarrow.parquet as pq

    files = part_files(folder, name)
    if not files:
        table = schema.empty_table()
        return table.select(columns) if columns else table
    return pq.read_table([str(f) for f in files], columns=columns, schema=schema)
