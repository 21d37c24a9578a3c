"""The monitoring flow: feedback in, online metrics and drift out, retraining when due.

1. ingest the bento's new feedback parts through the one validated, versioned ingest;
2. compute online metrics per model version and drift of the champion's live traffic;
3. publish them (Prefect artifacts with a key, so they keep a history; Prometheus gauges
   in ``<workspace>/monitoring/recops_monitoring.prom``; a JSON report);
4. when new data or drift crosses its threshold, send ``recops.retrain.requested`` (the
   retrain deployment's automation starts a run on the Prefect server).

Runs on Prefect's temporary server (``recops monitor --run``) or as a deployment.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from components.config import RecopsConfig
from components.errors import ValidationFailed
from components.workspace import Workspace
from flows.results import FeedbackIngest, MonitorResult
from flows.retrain import resolve_config


@task(name="ingest-feedback", retries=0, cache_policy=NO_CACHE)
def ingest_feedback(cfg: RecopsConfig, ws: Workspace) -> FeedbackIngest:
    """New feedback parts -> one batch through the normal ingest (accepted or quarantined)."""
    from components.lifecycle.ingest import ingest_events
    from components.monitoring.feedback import feedback_events, mark_ingested, pending_parts
    from components.versioning.dvc_store import events_digest

    parts = pending_parts(ws)
    if not parts:
        return FeedbackIngest(parts=0, events=0)
    events = feedback_events(parts)
    batch_id = f"feedback-{events_digest(events)[:12]}"  # same events, same batch: never twice
    try:
        ingested = ingest_events(
            events, ws, cfg.data, cfg.validation, cfg.versioning, batch_id=batch_id
        )
    except ValidationFailed as exc:
        mark_ingested(ws, parts, batch_id, "quarantined")
        get_run_logger().warning("feedback batch quarantined: %s", exc.message)
        return FeedbackIngest(parts=len(parts), events=len(events), quarantined=exc.quarantine_path)
    mark_ingested(ws, parts, batch_id, "accepted")
    return FeedbackIngest(
        parts=len(parts),
        events=len(events),
        batch_id=batch_id,
        data_version=ingested.version.version,
    )


@task(name="online-metrics-and-drift", retries=0, cache_policy=NO_CACHE)
def monitoring_report(
    cfg: RecopsConfig, ws: Workspace, version: str | None, since: datetime | None
) -> dict[str, Any]:
    from components.monitoring.report import build_report
    from components.registry.store import ModelRegistry

    champion = ModelRegistry(ws).champion()
    return build_report(
        ws,
        cfg.monitoring,
        cfg.versioning,
        version=version,
        since=since,
        drift_version=version or (champion.version if champion else None),
    )


def _table(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for m in report["versions"]:
        hr = m["hit_rate"]
        rows.append(
            {
                "model_version": m["model_version"],
                "requests": m["requests"],
                "cold_start_share": round(m["cold_start_share"], 4),
                "unknown_item_share": round(m["unknown_item_share"], 4),
                "coverage": None if m["coverage"] is None else round(m["coverage"], 4),
                f"hit_rate@{report['k']}": None if hr["value"] is None else round(hr["value"], 4),
                "ci_low": None if hr["low"] is None else round(hr["low"], 4),
                "ci_high": None if hr["high"] is None else round(hr["high"], 4),
                "lists_counted": hr["n"],
            }
        )
    return rows


def _markdown(report: dict[str, Any], retrain: str | None, sent: bool) -> str:
    drift = report["drift"]
    lines = [f"# recops monitoring ({report['as_of']})", ""]
    lines.append(
        f"feedback events: {report['feedback_events']} "
        f"({report['feedback_unknown_request_ids']} name an unknown request id)"
    )
    if drift is None:
        lines.append("drift: not evaluated (no champion or its training data is elsewhere)")
    else:
        verdict = "**DRIFT**" if drift["drifted"] else "no drift"
        lines.append(f"drift of {report['drift_version']}: {verdict}")
        lines += [f"- {c['details']}" for c in drift["checks"]]
    if retrain:
        lines.append(
            f"retraining due: {retrain} (event {'sent' if sent else 'not sent: no server'})"
        )
    return "\n".join(lines)


@flow(name="recops-monitor", description="Online metrics, drift and the retrain trigger.")
def monitor_flow(
    config: dict[str, Any] | None = None,
    version: str | None = None,
    since: str | None = None,
) -> MonitorResult:
    from components.monitoring.drift import DriftCheck, DriftReport
    from components.monitoring.report import GAUGES_FILE, write_gauges
    from components.monitoring.triggers import new_events_since_champion, retrain_reason
    from flows.events import emit_retrain_request

    cfg = resolve_config(config)
    ws = Workspace.at(cfg.workspace).activate()
    feedback = ingest_feedback(cfg, ws)
    since_at = datetime.fromisoformat(since) if since else None
    report = monitoring_report(cfg, ws, version, since_at)
    report["feedback_ingest"] = feedback.model_dump()
    drift = report["drift"]
    drift_obj = (
        DriftReport(**{**drift, "checks": [DriftCheck(**c) for c in drift["checks"]]})
        if drift
        else None
    )
    new_events = new_events_since_champion(ws, cfg.versioning)
    reason = retrain_reason(new_events, drift_obj, cfg.monitoring)
    sent = emit_retrain_request(ws, reason, {"new_events": new_events}) if reason else False
    report.update(
        new_events_since_champion=new_events, retrain_reason=reason, retrain_event_sent=sent
    )
    ws.monitoring_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    report_path = ws.monitoring_dir / f"report-{stamp}.json"
    report_path.write_text(json.dumps(report, indent=2, default=str))
    report["gauges"] = str(write_gauges(report, ws.monitoring_dir / GAUGES_FILE))
    create_table_artifact(
        key="recops-online-metrics",
        table=_table(report),
        description="Online metrics per model version",
    )
    create_markdown_artifact(key="recops-monitoring", markdown=_markdown(report, reason, sent))
    get_run_logger().info(
        "monitoring: %d versions, drift=%s, retrain=%s",
        len(report["versions"]),
        bool(drift_obj and drift_obj.drifted),
        reason,
    )
    return MonitorResult(
        feedback_ingest=feedback,
        new_events_since_champion=new_events,
        drifted=drift_obj.drifted if drift_obj else None,
        retrain_reason=reason,
        retrain_event_sent=sent,
        report_path=str(report_path),
        gauges=report["gauges"],
        report=report,
    )
