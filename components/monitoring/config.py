"""Configuration of the serving log, online metrics, drift checks and retrain triggers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServingLogConfig(BaseModel):
    """How the bento records what it answered (``components.monitoring.servelog``).

    Memory is bounded by ``max_buffer_rows``: rows beyond it are dropped and counted,
    never waited for. A part file is closed (and becomes readable) when it reaches
    ``rotate_bytes`` or ``rotate_s`` seconds, whichever comes first. Each served row keeps
    the request's ``history_items`` most recent history item ids (live item popularity for
    drift comes from them; 0 keeps none), so a row's size is bounded too.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    dir: str | None = None  # default: <workspace>/serving-log
    max_buffer_rows: int = Field(200_000, ge=1)
    flush_rows: int = Field(10_000, ge=1)
    flush_interval_s: float = Field(2.0, gt=0)
    rotate_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    rotate_s: float = Field(300.0, gt=0)
    max_feedback_events: int = Field(1000, ge=1)  # per POST /feedback
    history_items: int = Field(20, ge=0)  # most recent history item ids kept per served row


class DriftThresholds(BaseModel):
    """Live traffic vs the serving version's training data; a value above its bound is drift."""

    model_config = ConfigDict(extra="forbid")

    item_popularity_js: float = Field(0.10, ge=0, le=1)  # Jensen–Shannon distance, base 2
    history_length_js: float = Field(0.10, ge=0, le=1)
    max_unknown_item_share: float = Field(0.05, ge=0, le=1)
    max_cold_start_share: float = Field(0.5, ge=0, le=1)
    min_events: int = Field(200, ge=1)  # fewer live events: no popularity verdict


class MonitoringConfig(BaseModel):
    """Online metrics and the retrain trigger."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1)  # hit-rate@k counts the first k served items
    window_hours: float = Field(24.0, gt=0)  # feedback this long after a served list counts
    confidence: float = Field(0.95, gt=0, lt=1)
    drift: DriftThresholds = DriftThresholds()
    retrain_after_events: int = Field(10_000, ge=1)  # new accepted events since the champion's data
    retrain_on_drift: bool = True
