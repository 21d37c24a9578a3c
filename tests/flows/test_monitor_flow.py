"""The monitoring flow on a real workspace (ephemeral Prefect): bento feedback goes through
the normal ingest into a new dataset version, online metrics and drift come out, the
retrain decision is made and, without a server, honestly not sent."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from components.config import load_config
from components.errors import ValidationFailed
from components.lifecycle.ingest import ingest_events
from components.monitoring.config import ServingLogConfig
from components.monitoring.feedback import feedback_dir, pending_parts
from components.monitoring.servelog import (
    FEEDBACK,
    FEEDBACK_SCHEMA,
    SERVED,
    SERVED_SCHEMA,
    ParquetLog,
)
from components.records import RunRecord
from components.registry.store import ModelRegistry
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace
from tests.services.conftest import make_bundle

pytestmark = pytest.mark.slow
NOW = datetime.now(timezone.utc)


def _us(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


@pytest.fixture
def monitored(tmp_path: Path, tiny_events: pd.DataFrame) -> tuple[Workspace, object]:
    ws = Workspace.at(tmp_path / "ws").activate()
    cfg = load_config(
        overrides=["monitoring.retrain_after_events=10", "monitoring.drift.min_events=50"]
    )
    version = ingest_events(
        tiny_events, ws, cfg.data, cfg.validation, cfg.versioning, batch_id="tiny"
    ).version
    registry = ModelRegistry(ws)
    record = RunRecord(
        run_id="r1",
        model_name="sasrec",
        config={},
        config_hash="t",
        code_rev="t",
        data_version=version.version,
        metrics_test={"ndcg@10": 0.1},
    )
    v1 = registry.register(make_bundle(tiny_events, seed=1), record)
    registry.promote(v1.version, actor="test", reason="champion")
    log_cfg = ServingLogConfig(flush_interval_s=60)
    served = ParquetLog(ws.serving_log_dir, SERVED, SERVED_SCHEMA, log_cfg)
    feedback = ParquetLog(feedback_dir(ws), FEEDBACK, FEEDBACK_SCHEMA, log_cfg)
    sample = tiny_events.sample(120, random_state=0)
    items = tiny_events["item_id"].astype(str).unique().tolist()
    served_at = NOW - timedelta(days=2)
    for n, (user, item) in enumerate(
        zip(sample["user_id"].astype(str), sample["item_id"].astype(str), strict=True)
    ):
        top = [item, *items[:4]] if n % 3 == 0 else items[5:10]
        served.record(
            (f"req{n}", _us(served_at), user, 5, 0, "model", v1.version, top, [1.0] * 5, [item])
        )
        # every user clicks the first item of "their" sample row an hour later
        feedback.record(
            (user, item, _us(served_at + timedelta(hours=1)), "click", None, f"req{n}", _us(NOW))
        )
    feedback.record(
        ("stranger", items[0], _us(served_at), "click", None, "no-such-request", _us(NOW))
    )
    served.rotate()
    feedback.rotate()
    served.close()
    feedback.close()
    return ws, cfg


def test_monitor_run_ingests_feedback_and_reports(monitored) -> None:
    from flows.monitor import monitor_flow

    ws, cfg = monitored
    result = monitor_flow(
        config=cfg.model_copy(update={"workspace": str(ws.root)}).model_dump(mode="json")
    )
    assert result.feedback_ingest.events == 121 and result.feedback_ingest.batch_id
    assert result.retrain_reason and result.retrain_reason.startswith("121 new accepted events")
    assert result.retrain_event_sent is False and result.drifted is not None
    assert Path(result.report_path).exists()
    report = result.report
    assert report["feedback_ingest"]["events"] == 121
    assert pending_parts(ws) == []  # ingested once, recorded in the ledger
    events = DatasetStore(ws, cfg.versioning).load_events()
    assert "request_id" in events.columns
    assert events["request_id"].notna().sum() == 121
    (v1,) = report["versions"]
    assert v1["requests"] == 120 and v1["hit_rate"]["n"] == 120
    # lists n % 3 == 0 hold the clicked item (40 of 120); others only by chance of items[5:10]
    assert v1["hit_rate"]["hits"] >= 40 and v1["hit_rate"]["low"] < v1["hit_rate"]["value"]
    assert report["feedback_unknown_request_ids"] == 1
    assert report["drift"] is not None and report["drift"]["checks"]
    assert report["retrain_reason"].startswith("121 new accepted events")
    assert report["retrain_event_sent"] is False  # no Prefect server: said, not pretended
    gauges = Path(report["gauges"]).read_text()
    assert (
        f'recops_online_hit_rate{{bound="value",model_version="{v1["model_version"]}"}}' in gauges
    )


def test_cli_monitor_prints_metrics_without_a_flow(monitored, tmp_path: Path) -> None:
    import json

    from flows.cli import app

    ws, _ = monitored
    out = CliRunner().invoke(
        app, ["monitor", "-w", str(ws.root), "--json", str(tmp_path / "m.json")]
    )
    assert out.exit_code == 0, out.output
    assert "online metrics" in out.output and "feedback events 121" in out.output
    (v1,) = json.loads((tmp_path / "m.json").read_text())["versions"]
    assert v1["requests"] == 120 and v1["hit_rate"]["hits"] >= 40
    bad = CliRunner().invoke(app, ["monitor", "-w", str(ws.root), "--since", "yesterday"])
    assert bad.exit_code != 0


def test_feedback_add_is_the_data_add_ingest_and_counts_unknown_requests(
    monitored, tmp_path: Path
) -> None:
    from flows.cli import app

    ws, _ = monitored
    before = DatasetStore(ws).current()
    path = tmp_path / "feedback.csv"
    path.write_text(
        "user_id,item_id,timestamp,event_type,request_id\n"
        "u1,i1,2026-01-02T00:00:00Z,click,req0\n"
        "u2,i2,2026-01-02T00:01:00Z,purchase,not-a-served-request\n"
    )
    out = CliRunner().invoke(app, ["feedback", "add", str(path), "-w", str(ws.root)])
    assert out.exit_code == 0, out.output
    assert "accepted" in out.output
    assert "1 events name a request id the serving log does not hold" in out.output
    after = DatasetStore(ws).current()
    assert after.n_rows == before.n_rows + 2
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp,event_type\nu1,i1,2026-01-02T00:00:00Z,teleport\n")
    rejected = CliRunner().invoke(app, ["feedback", "add", str(bad), "-w", str(ws.root)])
    # main() turns this into one line and exit code 4, as for `recops data add`
    assert isinstance(rejected.exception, ValidationFailed)
    assert DatasetStore(ws).current().n_rows == after.n_rows
