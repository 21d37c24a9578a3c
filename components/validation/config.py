"""Configuration of the Great Expectations suite for event batches."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from components.data.config import EVENT_TYPES


class ValidationConfig(BaseModel):
    """Thresholds of the event-contract expectation suite."""

    model_config = ConfigDict(extra="forbid")

    event_types: list[str] = list(EVENT_TYPES)
    min_rows: int = Field(1, ge=1)
    max_duplicate_share: float = Field(0.05, ge=0, le=1)
    future_tolerance_hours: float = Field(24.0, ge=0)
    timestamp_floor: str = "1990-01-01T00:00:00Z"
    max_unknown_item_share: float = Field(0.05, ge=0, le=1)
    # item catalogue suite: duplicate ids and too little text fail; items no event
    # mentions (cold items) and missing categories are reported as warnings
    max_catalogue_duplicate_share: float = Field(0.0, ge=0, le=1)
    min_catalogue_text_share: float = Field(0.5, ge=0, le=1)
    max_volume_change: float = Field(10.0, gt=0)
    max_active_user_change: float = Field(10.0, gt=0)
    drift_severity: Literal["warning", "failure"] = "warning"
    chunk_rows: int = Field(2_000_000, ge=1000)
