"""Connection secrets are references (env:NAME, file:PATH), never stored values."""

from __future__ import annotations

import json

import pytest

from components.config import load_config
from components.errors import ConfigError
from components.features.config import FeaturesConfig
from components.secrets import inline_secret, redact, resolve


@pytest.mark.parametrize(
    "value",
    [
        "redis.prod:6379,password=hunter2",
        "redis.prod:6379,ssl=true,password=hunter2",
        "postgresql+psycopg://feast:hunter2@db:5432/feast",
    ],
)
def test_a_literal_password_in_config_is_a_one_line_error(value: str) -> None:
    key = "registry_path" if value.startswith("postgres") else "redis_connection_string"
    with pytest.raises(ConfigError, match=f"features.{key}.*env:NAME or file:PATH") as err:
        load_config(overrides=[f"features.{key}={value}"])
    assert "hunter2" not in str(err.value) and "\n" not in str(err.value)


def test_references_resolve_where_used_and_serialise_as_references(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("RECOPS_TEST_REDIS", "redis:6379,password=hunter2")
    (tmp_path / "pg").write_text("postgresql://u:hunter2@db/feast\n")
    cfg = load_config(
        overrides=[
            "features.redis_connection_string=env:RECOPS_TEST_REDIS",
            f"features.registry_path=file:{tmp_path / 'pg'}",
        ]
    )
    # what run records, flow parameters and bento arguments hold
    dumped = json.dumps(cfg.model_dump(mode="json"))
    assert "hunter2" not in dumped and "env:RECOPS_TEST_REDIS" in dumped
    assert resolve(cfg.features.redis_connection_string, what="x").endswith("password=hunter2")
    assert resolve(cfg.features.registry_path, what="x") == "postgresql://u:hunter2@db/feast"


def test_an_unset_reference_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECOPS_TEST_NOPE", raising=False)
    with pytest.raises(ConfigError, match=r"\$RECOPS_TEST_NOPE, which is not set"):
        resolve("env:RECOPS_TEST_NOPE", what="features.redis_connection_string")


def test_redaction_masks_credentials_and_keeps_the_rest() -> None:
    assert redact("postgresql://u:pw@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact("r:6379,ssl=true,password=pw,db=0") == "r:6379,ssl=true,password=***,db=0"
    assert redact("env:X") == "env:X" and redact("r:6379") == "r:6379"
    assert not inline_secret("redis:6379") and not inline_secret("s3://bucket/path")
    # a config built in code (no validation path skipped) still serialises redacted
    built = FeaturesConfig.model_construct(redis_connection_string="r:1,password=pw")
    assert "pw" not in json.dumps(built.model_dump(mode="json")["redis_connection_string"])
