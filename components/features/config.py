"""Configuration of the Feast feature store."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FeaturesConfig(BaseModel):
    """Feast settings: which store backends, and the shape of the features."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "localhost:6379"
    registry: Literal["file", "sql"] = "file"
    registry_path: str | None = None
    history_length: int = Field(50, ge=1)
    windows_days: list[int] = [1, 7, 30]
