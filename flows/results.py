"""What the flows return at their Prefect boundary: typed results the CLI, benchmarks and
tests read (pydantic models, which Prefect persists and returns as they are)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

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
