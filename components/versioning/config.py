"""Configuration of DVC dataset versioning."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from components.secrets import check_no_inline_secret, redact


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
    #: an S3 remote that does not answer fails a push after this many seconds per request
    #: (DVC's connect_timeout and read_timeout; botocore's default is 60 s, retried)
    remote_timeout_s: int = Field(5, ge=1)

    @field_validator("remote_url", "remote_endpoint_url")
    @classmethod
    def _no_literal_password(cls, value: str | None, info) -> str | None:
        return check_no_inline_secret(
            value,
            what=f"versioning.{info.field_name}",
            instead="let DVC read credentials from its own variables (AWS_ACCESS_KEY_ID, ...)",
        )

    @field_serializer("remote_url", "remote_endpoint_url")
    def _redacted(self, value: str | None) -> str | None:
        return redact(value)
