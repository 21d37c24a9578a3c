"""Settings of the model-level influence report written at each retrain."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ExplainConfig(BaseModel):
    """Which test users and recommendations the influence report explains."""

    model_config = ConfigDict(extra="forbid")

    report: bool = Field(True, description="write the influence report at each retrain")
    report_users: int = Field(200, ge=1, description="test users sampled (fixed seed)")
    report_k: int = Field(10, ge=1, description="top-k recommendations explained per user")
    max_events: int = Field(50, ge=1, description="most recent events deleted per history")
    seed: int = 0
