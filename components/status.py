"""One picture of a workspace: serving, champion, last runs, data versions, quarantine.

:func:`workspace_status` reads only what the other stages recorded (deployment state,
registry history, run records, the dataset index, quarantine folders); the one live probe
is the serving health check. Schedules live in Prefect and are added by the caller
(``components`` never imports Prefect).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from components.config import RecopsConfig
from components.records import RUNNING, RunRecord, recover_interrupted
from components.workspace import Workspace

RECORD_FILE = "run_record.json"


class RunLine(BaseModel):
    """One retrain run as the status screen lists it."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    created_at: datetime
    model_name: str
    model_version: str | None
    status: str  # champion / rejected / candidate (stopped before the gate) / running / failed / interrupted
    ndcg_at_10: float | None
    report_path: str | None


class QuarantinedBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: str
    folder: str
    summary: str


class DataVersionLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    created_at: datetime
    n_rows: int
    batches: int
    current: bool


class WorkspaceStatus(BaseModel):
    """Everything ``recops status`` shows (``--json`` prints this model)."""

    model_config = ConfigDict(extra="forbid")

    workspace: str
    serving: dict[str, Any]
    champion: dict[str, Any] | None
    runs: list[RunLine]
    data_versions: list[DataVersionLine]
    quarantined: list[QuarantinedBatch]
    schedules: list[dict[str, Any]] = []
    schedules_note: str | None = None


def run_records(ws: Workspace) -> list[RunRecord]:
    """Every retrain run record in the workspace, newest first (unreadable ones skipped);
    a run whose training process died is marked ``interrupted`` first."""
    records = []
    for path in ws.runs_dir.glob(f"*/{RECORD_FILE}"):
        try:
            record = RunRecord.load(path)
        except (OSError, ValueError):
            continue
        if record.status == RUNNING:
            record = recover_interrupted(path) or record
        records.append(record)
    return sorted(records, key=lambda r: r.created_at, reverse=True)


def run_line(record: RunRecord) -> RunLine:
    return RunLine(
        run_id=record.run_id,
        created_at=record.created_at,
        model_name=record.model_name,
        model_version=record.model_version,
        status=record.status,
        ndcg_at_10=record.metrics_test.get("ndcg@10"),
        report_path=record.report_path,
    )


def quarantined_batches(ws: Workspace) -> list[QuarantinedBatch]:
    """Rejected batches, newest folder first, with their one-line validation summary."""
    if not ws.quarantine_dir.exists():
        return []
    out = []
    folders = sorted(ws.quarantine_dir.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for folder in folders:
        if not folder.is_dir():
            continue
        out.append(
            QuarantinedBatch(
                batch_id=_batch_id(folder), folder=str(folder), summary=_summary(folder)
            )
        )
    return out


def _batch_id(folder: Path) -> str:
    report = folder / "report.json"
    if report.exists():
        try:
            return str(json.loads(report.read_text()).get("batch_id") or folder.name)
        except ValueError:
            pass
    return folder.name


def _summary(folder: Path) -> str:
    path = folder / "SUMMARY.txt"
    return path.read_text().strip().splitlines()[0] if path.exists() else "(no summary)"


def data_versions(ws: Workspace, cfg: RecopsConfig) -> list[DataVersionLine]:
    """Accepted dataset versions, newest first; ``current`` marks the checked-out one."""
    from components.versioning.dvc_store import DatasetStore

    store = DatasetStore(ws, cfg.versioning)
    if not (ws.data_dir / ".dvc").exists():
        return []
    current = store.current()
    return [
        DataVersionLine(
            version=v.version,
            created_at=v.created_at,
            n_rows=v.n_rows,
            batches=len(v.batches),
            current=current is not None and v.version == current.version,
        )
        for v in reversed(store.versions())
    ]


def champion_summary(ws: Workspace) -> dict[str, Any] | None:
    """The champion's version, model, data version and test NDCG@10 (None before the first)."""
    from components.registry.store import ModelRegistry

    champion = ModelRegistry(ws).champion()
    if champion is None:
        return None
    return {
        "version": champion.version,
        "model_name": champion.model_name,
        "data_version": champion.record.data_version,
        "ndcg@10": champion.record.metrics_test.get("ndcg@10"),
        "created_at": champion.created_at.isoformat(),
    }


def workspace_status(ws: Workspace, cfg: RecopsConfig, last_runs: int = 5) -> WorkspaceStatus:
    """Gather the status screen's content (probes the serving endpoint, 5 s timeout)."""
    from components.deploy.local import serve_status

    return WorkspaceStatus(
        workspace=str(ws.root),
        serving=serve_status(ws, cfg.serve),
        champion=champion_summary(ws),
        runs=[run_line(r) for r in run_records(ws)[:last_runs]],
        data_versions=data_versions(ws, cfg),
        quarantined=quarantined_batches(ws),
    )


def find_run(ws: Workspace, run_id: str) -> RunRecord:
    """The run record of ``run_id`` (a unique prefix works), or of the newest run (``latest``)."""
    from components.errors import RecopsError

    records = run_records(ws)
    if not records:
        raise RecopsError(f"no retrain runs in {ws.runs_dir}", hint="start one with `recops run`")
    if run_id == "latest":
        return records[0]
    matches = [r for r in records if r.run_id.startswith(run_id)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs match"
        raise RecopsError(
            f"{what} {run_id!r} in {ws.runs_dir}", hint="list them with `recops status`"
        )
    return matches[0]


def report_for(ws: Workspace, record: RunRecord) -> Path:
    """The run's report page; rendered now from its record when the run predates reports."""
    from components.reporting.page import REPORT_NAME, write_report

    run_dir = ws.runs_dir / record.run_id
    path = run_dir / REPORT_NAME
    return path if path.exists() else write_report(record, run_dir)
