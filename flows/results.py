"""What the flows return at their Prefect boundary: typed results the CLI, benchmarks and
tests read (pydantic models, which Prefect persists and returns as they are)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from components.features.store import MaterializeResult
from components.records import RunRecord


class RunOutcome(BaseModel):
    """How a retrain run ended: the gate's status, what it deployed, what serves now."""

    model_config = ConfigDict(extra="forbid")

    status: str
    deployed_version: str | None = None
    deploy_target: str | None = None
    deploy_detail: dict[str, str] = {}
    serving_version: str | None = None  # what the local deployment serves now
    url: str | None = None
    example_user: str | None = None  # a user id to try the service with


class RetrainResult(BaseModel):
    """One retrain run: its record (also saved in the run folder) and its outcome."""

    model_config = ConfigDict(extra="forbid")

    record: RunRecord
    outcome: RunOutcome


class RollbackResult(BaseModel):
    """A rollback: the champion before and after, and where the restored version serves."""

    model_config = ConfigDict(extra="forbid")

    before: str | None
    after: str
    url: str | None = None


class FeedbackIngest(BaseModel):
    """The monitoring flow's feedback batch: accepted (with its batch and data version),
    quarantined (with where it went), or nothing new."""

    model_config = ConfigDict(extra="forbid")

    parts: int
    events: int
    batch_id: str | None = None
    data_version: str | None = None
    quarantined: str | None = None


class MonitorResult(BaseModel):
    """One monitoring run: its decisions, typed, and the report document it wrote (the
    JSON of ``recops monitor --json``: online metrics per version and drift checks)."""

    model_config = ConfigDict(extra="forbid")

    feedback_ingest: FeedbackIngest
    new_events_since_champion: int | None
    drifted: bool | None  # None: drift not evaluated (no champion, or its data elsewhere)
    retrain_reason: str | None
    retrain_event_sent: bool
    report_path: str
    gauges: str
    report: dict[str, Any]


class MaterializeRun(BaseModel):
    """A materialization run: the dataset version whose features now serve online."""

    model_config = ConfigDict(extra="forbid")

    data_version: str
    materialized: MaterializeResult
