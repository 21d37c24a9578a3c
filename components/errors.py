"""The recops error hierarchy.

Every error a user can cause or meet carries a one-line, user-facing message (``str(err)``)
and an optional hint. The CLI prints ``error: <message>`` (plus the hint) and exits with
``exit_code``; tracebacks are reserved for bugs.
"""

from __future__ import annotations


class RecopsError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(RecopsError):
    """A configuration file or ``--set`` override is invalid."""

    exit_code = 2


class DataError(RecopsError):
    """Input events cannot be read or do not fit the event contract."""

    exit_code = 3


class ValidationFailed(RecopsError):
    """A batch failed the Great Expectations suite and was quarantined."""

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        quarantine_path: str | None = None,
        report_path: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.quarantine_path = quarantine_path
        self.report_path = report_path


class VersioningError(RecopsError):
    """DVC could not record or restore a dataset version."""

    exit_code = 5


class FeatureStoreError(RecopsError):
    """Feast could not apply, materialize or serve features."""

    exit_code = 6


class TrainingError(RecopsError):
    """A model could not be trained (bad hyperparameters, too little data, ...)."""

    exit_code = 7


class RegistryError(RecopsError):
    """The model registry is missing a version or refused a transition."""

    exit_code = 8


class DeployFailed(RecopsError):
    """A deployment failed its checks; the previous deployment keeps serving."""

    exit_code = 10
