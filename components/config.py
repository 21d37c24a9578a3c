"""Typed configuration: YAML files and ``--set`` overrides validated into one object per run.

``load_config(paths, overrides)`` merges YAML files left to right, applies dotted
overrides (``model.name=gru4rec``, values parsed as YAML scalars/lists), and validates the
result into :class:`RecopsConfig`. Unknown keys and bad values raise :class:`ConfigError`
with a one-line message naming the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from components.data.config import DataConfig
from components.deploy.config import DeployConfig, LocalDeployConfig, ServeConfig
from components.errors import ConfigError
from components.evaluation.config import EvalConfig, GateConfig
from components.explain.config import ExplainConfig
from components.features.config import FeaturesConfig
from components.models.config import ModelConfig
from components.monitoring.config import MonitoringConfig
from components.training.config import TrainConfig
from components.validation.config import ValidationConfig
from components.versioning.config import VersioningConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


class RecopsConfig(BaseModel):
    """Everything one run needs, validated once at the CLI or flow boundary."""

    model_config = ConfigDict(extra="forbid")

    workspace: str | None = None
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    versioning: VersioningConfig = VersioningConfig()
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    gate: GateConfig = GateConfig()
    serve: ServeConfig = ServeConfig()
    deploy: DeployConfig = LocalDeployConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    explain: ExplainConfig = ExplainConfig()

    @model_validator(mode="after")
    def _one_spark_heap(self) -> RecopsConfig:
        """A process has one JVM: a Spark session the feature store starts gets the heap
        of ``data.spark_driver_memory_mb`` too."""
        self.features._spark_driver_memory_mb = self.data.spark_driver_memory_mb
        return self

    def fingerprint(self) -> str:
        """Stable short hash of the settings that affect a trained model."""
        relevant = self.model_dump(mode="json", include={"data", "model", "train"})
        relevant["data"].pop("path", None)
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return loaded


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=1"`` -> (["a", "b"], 1); the value is parsed as a YAML scalar or list."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML") from exc
    return [part for part in key.strip().split(".")], value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a raw config mapping (returns a new dict)."""
    result = json.loads(json.dumps(raw))
    for text in overrides:
        keys, value = parse_override(text)
        node = result
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {key!r} is not a section")
            node = child
        node[keys[-1]] = value
    return result


def _format_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"unknown config key {where!r}"
    return f"bad config value for {where!r}: {first['msg']}"


def validate_config(raw: Mapping[str, Any]) -> RecopsConfig:
    """Validate a raw mapping into :class:`RecopsConfig` or raise a one-line ConfigError."""
    try:
        return RecopsConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def config_from_mapping(raw: Mapping[str, Any]) -> RecopsConfig:
    """Validate ``raw`` merged over the default config (used for flow parameters)."""
    base = _read_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else {}
    return validate_config(_deep_merge(base, raw))


def load_config(paths: Iterable[str | Path] = (), overrides: Iterable[str] = ()) -> RecopsConfig:
    """Merge the default config, then ``paths`` in order, then ``overrides``; validate."""
    raw: dict[str, Any] = _read_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else {}
    for path in paths:
        raw = _deep_merge(raw, _read_yaml(Path(path)))
    return validate_config(apply_overrides(raw, overrides))
