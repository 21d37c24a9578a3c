"""One monitoring report: online metrics per model version, feedback counts, and drift of
the serving version's live traffic against its training data.

``recops monitor`` prints it; the monitoring flow (``flows/monitor.py``) also publishes it
as a Prefect artifact and as Prometheus gauges (:func:`write_gauges`, a node-exporter
textfile) and sends the retrain event when it is due.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.monitoring.config import MonitoringConfig
from components.monitoring.drift import (
    DriftReport,
    check_drift,
    drift_summary,
    live_item_counts,
)
from components.monitoring.online import metrics_by_version, unknown_request_ids
from components.monitoring.servelog import (
    FEEDBACK,
    FEEDBACK_SCHEMA,
    SERVED,
    SERVED_SCHEMA,
    read_log,
)
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace

log = logging.getLogger(__name__)
GAUGES_FILE = "recops_monitoring.prom"


def _since(table: pa.Table, column: str, since: datetime | None) -> pa.Table:
    if since is None or table.num_rows == 0:
        return table
    bound = pa.scalar(since.astimezone(timezone.utc), pa.timestamp("us", tz="UTC"))
    return table.filter(pc.greater_equal(table[column], bound))


def read_logs(
    ws: Workspace,
    *,
    version: str | None = None,
    since: datetime | None = None,
    folder: Path | None = None,
) -> tuple[pa.Table, pa.Table]:
    """(served lists, feedback events) from the closed log parts in ``folder`` (default:
    the workspace's serving log), filtered."""
    folder = folder or ws.serving_log_dir
    served = _since(read_log(folder, SERVED, SERVED_SCHEMA), "ts", since)
    if version is not None:
        served = served.filter(pc.equal(served["model_version"], version))
    feedback = read_log(folder / FEEDBACK, FEEDBACK, FEEDBACK_SCHEMA)
    return served, _since(feedback, "timestamp", since)


def _data_version(ws: Workspace, model_version: str) -> str | None:
    from components.registry.store import ModelRegistry

    try:
        return ModelRegistry(ws).get(model_version).record.data_version
    except Exception:  # a version this workspace's registry does not know
        return None


def catalogue_sizes(ws: Workspace, versions: list[str], cfg: VersioningConfig) -> dict[str, int]:
    """Items in each model version's training data (for catalogue coverage)."""
    store = DatasetStore(ws, cfg)
    sizes: dict[str, int] = {}
    for version in versions:
        data_version = _data_version(ws, version)
        try:
            sizes[version] = store.show(data_version).n_items if data_version else 0
        except Exception:
            log.info("no dataset version %s for model %s: coverage unknown", data_version, version)
    return {k: v for k, v in sizes.items() if v}


def serving_drift(
    ws: Workspace,
    model_version: str,
    served: pa.Table,
    feedback: pa.Table,
    cfg: MonitoringConfig,
    versioning_cfg: VersioningConfig,
) -> DriftReport | None:
    """Live traffic of ``model_version`` against its training data (None without it)."""
    data_version = _data_version(ws, model_version)
    if data_version is None:
        return None
    try:
        reference = DatasetStore(ws, versioning_cfg).load_events(data_version)
    except Exception:
        log.info("training data %s of %s is not in this workspace", data_version, model_version)
        return None
    same = pc.equal(served["model_version"], model_version)
    mine = served if pc.all(same).as_py() in (True, None) else served.filter(same)  # no copy
    lengths = mine["history_len"].to_numpy(zero_copy_only=False)
    cold = (
        float(pc.mean(pc.cast(pc.equal(mine["source"], "cold_start"), pa.float64())).as_py())
        if mine.num_rows
        else None
    )
    live_items = live_item_counts(mine, feedback)
    summary, text = drift_summary(
        reference["item_id"].astype(str),
        reference.groupby("user_id", observed=True).size().to_numpy(),
        live_items,
        np.asarray(lengths),
        cold,
        cfg.drift,
    )
    run_name = f"live-{model_version}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    return check_drift(
        ws,
        summary,
        text,
        cfg.drift,
        run_name=run_name,
        n_live_events=int(live_items.sum()),
        n_requests=mine.num_rows,
    )


def build_report(
    ws: Workspace,
    cfg: MonitoringConfig,
    versioning_cfg: VersioningConfig,
    *,
    version: str | None = None,
    since: datetime | None = None,
    as_of: datetime | None = None,
    drift_version: str | None = None,
) -> dict[str, Any]:
    """Metrics per version; drift for ``drift_version`` (default: none)."""
    as_of = as_of or datetime.now(timezone.utc)
    served, feedback = read_logs(ws, version=version, since=since)
    versions = sorted(pc.unique(served["model_version"]).to_pylist()) if served.num_rows else []
    metrics = metrics_by_version(
        served,
        feedback,
        k=cfg.k,
        window=timedelta(hours=cfg.window_hours),
        as_of=as_of,
        catalogue_sizes=catalogue_sizes(ws, versions, versioning_cfg),
        confidence=cfg.confidence,
    )
    drift = (
        serving_drift(ws, drift_version, served, feedback, cfg, versioning_cfg)
        if drift_version
        else None
    )
    return {
        "as_of": as_of.isoformat(),
        "since": since.isoformat() if since else None,
        "k": cfg.k,
        "window_hours": cfg.window_hours,
        "versions": [m.as_dict() for m in metrics],
        "feedback_events": feedback.num_rows,
        "feedback_unknown_request_ids": unknown_request_ids(served, feedback),
        "drift": drift.as_dict() if drift else None,
        "drift_version": drift_version,
    }


def write_gauges(report: dict[str, Any], path: Path) -> Path:
    """The report as Prometheus gauges in text format (for a node-exporter textfile
    collector or any scraper that reads files); labels: model version, drift check."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: list[str]) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    requests = gauge("recops_online_requests", "Served lists in the window.", ["model_version"])
    hit = gauge(
        "recops_online_hit_rate", "hit-rate@k of closed served lists.", ["model_version", "bound"]
    )
    cold = gauge("recops_online_cold_start_share", "Cold-start share.", ["model_version"])
    unknown = gauge("recops_online_unknown_item_share", "Unknown history items.", ["model_version"])
    coverage = gauge(
        "recops_online_catalogue_coverage", "Distinct items served / catalogue.", ["model_version"]
    )
    for m in report["versions"]:
        v = m["model_version"]
        requests.labels(v).set(m["requests"])
        cold.labels(v).set(m["cold_start_share"])
        unknown.labels(v).set(m["unknown_item_share"])
        if m["coverage"] is not None:
            coverage.labels(v).set(m["coverage"])
        share = m["hit_rate"]
        for bound in ("value", "low", "high"):
            if share[bound] is not None:
                hit.labels(v, bound).set(share[bound])
    if report["drift"]:
        stat = gauge(
            "recops_drift_statistic", "Drift statistics of the serving version.", ["check"]
        )
        for check in report["drift"]["checks"]:
            stat.labels(check["name"]).set(check["observed"] or 0.0)
        gauge("recops_drift_detected", "1 when any drift check failed.", []).set(
            1.0 if report["drift"]["drifted"] else 0.0
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path
