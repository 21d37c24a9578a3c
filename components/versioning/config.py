"""Configuration of DVC dataset versioning."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class VersioningConfig(BaseModel):
    """Which DVC remote accepted datasets are pushed to.

    ``remote_url`` empty means the local default remote inside the workspace; an
    ``s3://``, ``gs://`` or MinIO URL (with ``remote_endpoint_url``) selects a cloud remote.
    """

    model_config = ConfigDict(extra="forbid")

    remote_name: str = "storage"
    remote_url: str | None = None
    remote_endpoint_url: str | None = None
    push: bool = True
