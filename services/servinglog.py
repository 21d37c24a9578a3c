"""The service's hook into ``components.monitoring.servelog``: one row per answered request,
feedback rows, and their counters in ``/metrics``.

Kept out of ``services/recommender.py`` so the request path gains two calls: a request id
per response and :meth:`ServiceLogs.served` (a tuple appended to a buffer).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from components.data.config import EVENT_TYPES
from components.monitoring import servelog
from components.monitoring.config import ServingLogConfig
from components.monitoring.servelog import FEEDBACK, SERVED, ParquetLog, now_us
from components.workspace import Workspace
from services import metrics

if TYPE_CHECKING:  # the service module imports this in BentoML's parent: no torch there
    from services.engine import Plan


class FeedbackEvent(BaseModel):
    """One thing a user did with an item, optionally naming the served list it answers.

    ``event_type`` must be one the deployed validation config accepts: the service
    validates with :func:`feedback_event_model` of its recorded event types (this base
    class accepts the default config's).
    """

    model_config = ConfigDict(extra="forbid")
    event_types: ClassVar[frozenset[str]] = frozenset(EVENT_TYPES)

    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    event_type: str = Field("click", validate_default=True)
    timestamp: datetime | None = None  # default: when the bento received it
    value: float | None = None
    request_id: str | None = Field(None, min_length=1, max_length=64)

    @field_validator("event_type")
    @classmethod
    def _known_event_type(cls, value: str) -> str:
        if value not in cls.event_types:
            raise ValueError(f"unknown event_type {value!r}; use one of {sorted(cls.event_types)}")
        return value

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


def feedback_event_model(event_types: list[str]) -> type[FeedbackEvent]:
    """:class:`FeedbackEvent` accepting exactly ``event_types`` (the deployed config's)."""
    return type("FeedbackEvent", (FeedbackEvent,), {"event_types": frozenset(event_types)})


def _us(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000)


class ServiceLogs:
    """The served and feedback logs of one service process, counted in Prometheus."""

    def __init__(self, workspace: Workspace, cfg: ServingLogConfig) -> None:
        self.cfg = cfg
        folder = Path(cfg.dir) if cfg.dir else workspace.serving_log_dir
        self.rows = metrics.SERVING_LOG_ROWS  # bounded labels, services/metrics.py
        self.errors = metrics.SERVING_LOG_ERRORS
        served, feedback = servelog.SERVED_SCHEMA, servelog.FEEDBACK_SCHEMA  # pyarrow from here
        self.served_log = self._open(folder, SERVED, served) if cfg.enabled else None
        self.feedback_log = self._open(folder / FEEDBACK, FEEDBACK, feedback)

    def _open(self, folder: Path, name: str, schema) -> ParquetLog:
        def count(kind: str, n: int) -> None:
            if kind == "error":
                self.errors.labels(log=name).inc(n)
            else:
                self.rows.labels(log=name, outcome=kind).inc(n)

        return ParquetLog(folder, name, schema, self.cfg, on_event=count)

    def served(self, request: Any, plan: Plan, answer: dict[str, Any], history: list[str]) -> None:
        """Record one answered request (``answer``: the engine's rendered dict;
        ``history``: the item ids it was answered from, oldest first; no I/O)."""
        if self.served_log is None:
            return
        keep = self.cfg.history_items
        self.served_log.record(
            (
                answer["request_id"],
                now_us(),
                request.user_id,
                plan.given_length,
                plan.n_unknown,
                plan.source,
                answer["model_version"],
                [i["item_id"] for i in answer["items"]],
                [i["score"] for i in answer["items"]],
                history[-keep:] if keep else [],
            )
        )

    def feedback(self, events: list[FeedbackEvent]) -> int:
        """Buffer feedback events; returns how many were accepted into the buffer."""
        received = now_us()
        accepted = 0
        for e in events:
            ts = _us(e.timestamp) if e.timestamp else received
            row = (e.user_id, e.item_id, ts, e.event_type, e.value, e.request_id, received)
            accepted += self.feedback_log.record(row)
        return accepted

    def stats(self) -> dict[str, Any]:
        out = {"feedback": self.feedback_log.stats.as_dict()}
        if self.served_log is not None:
            out["served"] = self.served_log.stats.as_dict()
        return out

    def close(self) -> None:
        for part in (self.served_log, self.feedback_log):
            if part is not None:
                part.close()
