"""The recops error hierarchy.

Every error a user can cause or meet carries a one-line, user-facing message (``str(err)``)
and an optional hint. The CLI prints ``error: <message>`` (plus the hint) and exits with
``exit_code``; tracebacks are reserved for bugs.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager


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


class DeployBusy(DeployFailed):
    """Another deploy command holds the deployment's lock; nothing was changed."""


class StorageFull(RecopsError):
    """A write failed because the disk (or quota) is full; nothing half-written was kept."""

    exit_code = 12


_FULL = (errno.ENOSPC, errno.EDQUOT)


def _full_disk_file(exc: BaseException) -> str | None:
    """The file a full-disk ``exc`` was writing ("" when unnamed), None when ``exc`` is not
    a full disk. ``shutil.copytree`` (BentoML moving a saved model into its store) gathers
    its per-file failures into one :class:`shutil.Error` of ``(src, dst, "[Errno N] ...")``
    strings, so those are read from the message."""
    if isinstance(exc, shutil.Error):
        failures = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        for failure in failures:
            if len(failure) == 3 and any(
                str(failure[2]).startswith(f"[Errno {code}]") for code in _FULL
            ):
                return str(failure[1])
        return None
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return str(exc.filename) if exc.filename else ""
    return None


def storage_full(exc: BaseException) -> StorageFull | None:
    """A :class:`StorageFull` when ``exc`` or any exception it wraps (``__cause__`` /
    ``__context__``: GX, DVC and Prefect re-raise their own types) is a full disk."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageFull):
            return current
        filename = _full_disk_file(current)
        if filename is not None:
            where = f" writing {filename}" if filename else ""
            return StorageFull(
                f"no space left on device{where}",
                hint="free disk space (or move the workspace: --workspace / $RECOPS_HOME) and "
                "run the command again; the failed step kept nothing half-written",
            )
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def full_disk_is_one_line() -> Iterator[None]:
    """Re-raise a full-disk failure inside the block as :class:`StorageFull`."""
    try:
        yield
    except StorageFull:
        raise
    except Exception as exc:
        full = storage_full(exc)
        if full is None:
            raise
        raise full from exc
