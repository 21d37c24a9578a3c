"""The Parquet log: rows written off the caller's thread, bounded, rotated, failures counted."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq

from components.monitoring.config import ServingLogConfig
from components.monitoring.servelog import (
    SERVED,
    SERVED_SCHEMA,
    ParquetLog,
    now_us,
    part_files,
    read_log,
)


def _row(i: int) -> tuple:
    return (f"r{i}", now_us(), f"u{i % 3}", 2, 0, "model", "v1", ["a", "b"], [0.5, 0.25], ["h"])


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_rows_reach_closed_parquet_parts(tmp_path: Path) -> None:
    cfg = ServingLogConfig(flush_interval_s=0.05, rotate_s=0.2)
    events: list[tuple[str, int]] = []
    log = ParquetLog(
        tmp_path, SERVED, SERVED_SCHEMA, cfg, on_event=lambda k, n: events.append((k, n))
    )
    for i in range(25):
        assert log.record(_row(i))
    _wait_for(lambda: read_log(tmp_path, SERVED, SERVED_SCHEMA).num_rows == 25)
    log.close()
    table = read_log(tmp_path, SERVED, SERVED_SCHEMA)
    assert sorted(table["request_id"].to_pylist()) == sorted(f"r{i}" for i in range(25))
    assert table["items"][0].as_py() == ["a", "b"]
    assert sum(n for k, n in events if k == "written") == 25
    assert not list(tmp_path.glob("*.tmp"))  # closed at shutdown


def test_parts_rotate_by_size(tmp_path: Path) -> None:
    cfg = ServingLogConfig(flush_interval_s=60, rotate_bytes=1024, flush_rows=10_000)
    log = ParquetLog(tmp_path, SERVED, SERVED_SCHEMA, cfg)
    for batch in range(3):
        for i in range(200):
            log.record(_row(batch * 200 + i))
        log.flush()
    log.close()
    assert len(part_files(tmp_path, SERVED)) == 3
    assert sum(pq.read_metadata(p).num_rows for p in part_files(tmp_path, SERVED)) == 600


def test_full_buffer_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    cfg = ServingLogConfig(max_buffer_rows=10, flush_interval_s=60, flush_rows=1000)
    log = ParquetLog(tmp_path, SERVED, SERVED_SCHEMA, cfg)
    accepted = [log.record(_row(i)) for i in range(15)]
    assert accepted.count(True) == 10 and log.stats.rows_dropped == 5
    log.close()
    assert read_log(tmp_path, SERVED, SERVED_SCHEMA).num_rows == 10


def test_unwritable_folder_is_counted_and_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    events: list[tuple[str, int]] = []
    cfg = ServingLogConfig(flush_interval_s=0.05)
    log = ParquetLog(
        blocker / "log", SERVED, SERVED_SCHEMA, cfg, on_event=lambda k, n: events.append((k, n))
    )
    for i in range(5):
        assert log.record(_row(i))
    _wait_for(lambda: log.stats.write_errors >= 1)
    log.close()
    assert log.stats.rows_failed == 5 and log.stats.rows_written == 0
    assert ("failed", 5) in events and ("error", 1) in events
    assert "NotADirectoryError" in (log.stats.last_error or "") or "FileExistsError" in (
        log.stats.last_error or ""
    )


def test_service_logs_keep_the_most_recent_history_items(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from components.workspace import Workspace
    from services.engine import Plan
    from services.servinglog import ServiceLogs

    cfg = ServingLogConfig(history_items=3, flush_interval_s=60)
    logs = ServiceLogs(Workspace.at(tmp_path / "ws"), cfg)
    answer = {"request_id": "r1", "model_version": "v1", "items": [{"item_id": "x", "score": 1}]}
    plan = Plan(query=None, k=1, exclude=[], given_length=5)
    logs.served(SimpleNamespace(user_id="u"), plan, answer, ["a", "b", "c", "d", "e"])
    assert logs.served_log is not None
    logs.served_log.rotate()
    logs.close()
    (row,) = read_log(logs.served_log.folder, SERVED, SERVED_SCHEMA).to_pylist()
    assert row["history"] == ["c", "d", "e"] and row["history_len"] == 5
    assert row["items"] == ["x"] and row["source"] == "cold_start"
