"""Ingest: fetch a batch, validate it with GX, version it with DVC or quarantine it.

Item catalogue batches (:func:`ingest_catalogue`) go the same way through the
``recops_catalogue`` suite: accepted into the current dataset version (a new version with
the same events) or quarantined with their report.

The one path behind the retrain flow's first steps, ``recops data add`` and the
benchmarks. The same events are never appended twice: batch ids of files, directories and
synthetic batches are derived from their content, and the store refuses a batch whose
events (digest over the rows, whatever the file or id) are already in the current version
(:class:`~components.versioning.dvc_store.AlreadyAccepted`); both come back as a result
with nothing appended, not as an error. A full disk anywhere in the step is one line
(:class:`~components.errors.StorageFull`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pandas as pd

from components.data.config import DataConfig
from components.data.stream import GX_ROW_BYTES, plan_passes, staged_buckets
from components.errors import DataError, ValidationFailed, VersioningError, full_disk_is_one_line
from components.validation.config import ValidationConfig
from components.validation.ingest import quarantine, read_batch, with_load_failure
from components.validation.report import ValidationReport
from components.validation.runner import validate_event_files, validate_events
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import (
    BATCH_ID,
    AlreadyAccepted,
    DatasetStore,
    DatasetVersion,
    FileBatch,
    events_digest,
    file_md5,
)
from components.workspace import Workspace

if TYPE_CHECKING:
    from components.data.stream import UserBuckets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRef:
    """Where a batch of new events is, how to read it, and its id."""

    path: str
    fmt: str
    batch_id: str
    synthetic: bool = False


@dataclass(frozen=True)
class Ingested:
    """The dataset version that holds the batch; ``report`` is None when the batch was
    already part of it (nothing appended)."""

    batch_id: str
    version: DatasetVersion
    report: ValidationReport | None
    same_as: str | None = None  # the accepted batch holding the same events

    @property
    def appended(self) -> bool:
        return self.report is not None


def content_batch_id(path: Path) -> str:
    """``<name>-<digest>`` from the bytes of a file, or of every file in a directory (with
    their relative paths): the same input always gets the same id, and a directory that
    gained files gets a new one (never "already in this version")."""
    if path.is_dir():
        digest = hashlib.md5()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path).as_posix()}\0{file_md5(file)}\n".encode())
        content = digest.hexdigest()
    else:
        content = file_md5(path)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-._") or "batch"
    return f"{stem[:80]}-{content[:10]}"


def batch_from_file(path: str | Path, fmt: str = "auto", batch_id: str | None = None) -> BatchRef:
    """A user's file or directory; its default id is derived from the content."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise DataError(f"{resolved}: no such file or directory")
    return BatchRef(str(resolved), fmt, batch_id or content_batch_id(resolved))


def synthetic_batch(
    ws: Workspace, data_cfg: DataConfig, versioning_cfg: VersioningConfig
) -> BatchRef:
    """The next batch of the bundled synthetic world, written to the inbox.

    Written under a private name, then renamed by content: concurrent runs never read a
    half-written batch, and identical batches share one file and one batch id.
    """
    from components.data.synthetic import write_events_parquet

    current = DatasetStore(ws, versioning_cfg).current()
    batch_no = len(current.batches) if current is not None else 0
    ws.inbox_dir.mkdir(parents=True, exist_ok=True)
    partial = ws.inbox_dir / f".synthetic-{batch_no:04d}-{uuid.uuid4().hex}.parquet"
    write_events_parquet(data_cfg.synthetic, partial, batch=batch_no)
    batch_id = f"synthetic-{batch_no:04d}-{file_md5(partial)[:10]}"
    path = ws.inbox_dir / f"{batch_id}.parquet"
    partial.replace(path)
    return BatchRef(str(path), "parquet", batch_id, synthetic=True)


def fetch_batch(
    ws: Workspace,
    data_cfg: DataConfig,
    versioning_cfg: VersioningConfig,
    data_path: str | None = None,
    data_format: str = "auto",
) -> BatchRef:
    """The user's file, or (without one) a new synthetic batch."""
    if data_path is not None:
        return batch_from_file(data_path, data_format)
    return synthetic_batch(ws, data_cfg, versioning_cfg)


def ingest(
    batch: BatchRef,
    ws: Workspace,
    data_cfg: DataConfig,
    validation_cfg: ValidationConfig,
    versioning_cfg: VersioningConfig,
    *,
    catalogue_items: set[str] | None = None,
) -> Ingested:
    """Validate ``batch``; accept it as a new dataset version or quarantine it.

    A batch already in the current version is not appended again (``report`` is None).
    On failure raises :class:`ValidationFailed` naming each failed expectation and the
    quarantine folder; the accepted dataset is untouched.
    """
    store = DatasetStore(ws, versioning_cfg)
    already = _version_holding(store, batch.batch_id)
    if already is not None:
        return Ingested(batch.batch_id, already, None, same_as=batch.batch_id)
    try:
        return ingest_events(
            Path(batch.path),
            ws,
            data_cfg,
            validation_cfg,
            versioning_cfg,
            fmt=batch.fmt,
            batch_id=batch.batch_id,
            catalogue_items=catalogue_items,
        )
    except VersioningError:
        # a concurrent run accepted the same batch between our check and our accept
        already = _version_holding(store, batch.batch_id)
        if already is None:
            raise
        log.info("batch %s was accepted by a concurrent run", batch.batch_id)
        return Ingested(batch.batch_id, already, None, same_as=batch.batch_id)


def _version_holding(store: DatasetStore, batch_id: str) -> DatasetVersion | None:
    current = store.current()
    if current is not None and batch_id in current.batches:
        log.info("batch %s is already in dataset version %s", batch_id, current.version)
        return current
    return None


def ingest_events(
    source: Path | str | pd.DataFrame,
    ws: Workspace,
    data_cfg: DataConfig,
    validation_cfg: ValidationConfig,
    versioning_cfg: VersioningConfig,
    *,
    fmt: str = "auto",
    batch_id: str | None = None,
    catalogue_items: set[str] | None = None,
) -> Ingested:
    """Validate one batch (a file or a frame) and accept or quarantine it.

    ``data_cfg`` supplies the column mapping and ``default_event_type`` (the same on
    every path). Nothing is lost: a file the loader cannot read is still validated as raw
    text and quarantined with a report; the user's file is only ever copied. The default
    batch id comes from the content (:func:`content_batch_id`; the events' digest for a
    frame).
    """
    if not isinstance(source, pd.DataFrame):
        source = Path(source)
        batch_id = batch_id or content_batch_id(source)
    if batch_id is not None and not BATCH_ID.match(batch_id):
        raise DataError(f"bad batch id {batch_id!r}: use letters, digits, '.', '_', '-'")
    with full_disk_is_one_line():
        return _validate_and_accept(
            source, ws, data_cfg, validation_cfg, versioning_cfg, fmt, batch_id, catalogue_items
        )


def _validate_and_accept(
    source: Path | pd.DataFrame,
    ws: Workspace,
    data_cfg: DataConfig,
    validation_cfg: ValidationConfig,
    versioning_cfg: VersioningConfig,
    fmt: str,
    batch_id: str | None,
    catalogue_items: set[str] | None,
) -> Ingested:
    ws.ensure()
    if data_cfg.engine == "spark" and isinstance(source, Path) and _is_parquet(source):
        return _validate_and_accept_on_spark(
            source, ws, data_cfg, validation_cfg, versioning_cfg, batch_id, catalogue_items
        )
    if data_cfg.engine == "stream" and isinstance(source, Path) and _is_parquet(source):
        return _validate_and_accept_files(
            source, ws, data_cfg, validation_cfg, versioning_cfg, batch_id, catalogue_items
        )
    checked = check_batch(
        source,
        ws,
        data_cfg,
        validation_cfg,
        versioning_cfg,
        fmt=fmt,
        batch_id=batch_id,
        catalogue_items=catalogue_items,
    )
    if not checked.report.passed:
        reject(ws, source, checked.report, checked.batch_id)
    store = DatasetStore(ws, versioning_cfg)
    return _accept(store, checked.events, checked.batch_id, checked.report)


@dataclass(frozen=True)
class CheckedBatch:
    """A batch read into the event contract and its validation report."""

    events: pd.DataFrame
    report: ValidationReport
    batch_id: str


def check_batch(
    source: Path | pd.DataFrame,
    ws: Workspace,
    data_cfg: DataConfig,
    validation_cfg: ValidationConfig,
    versioning_cfg: VersioningConfig,
    *,
    fmt: str = "auto",
    batch_id: str | None = None,
    catalogue_items: set[str] | None = None,
) -> CheckedBatch:
    """Read one batch (column mapping, ``default_event_type``) and run the GX suite on it,
    drift included against the accepted version's statistics: the validation of
    :func:`ingest`, which ``recops stage validate`` (``dvc repro``) runs on its own.
    Nothing is versioned or quarantined here (:func:`reject` does that)."""
    events, load_error = read_batch(
        source, fmt=fmt, columns=data_cfg.columns, default_event_type=data_cfg.default_event_type
    )
    batch_id = batch_id or f"frame-{events_digest(events)[:12]}"
    report = validate_events(
        events,
        validation_cfg,
        ws,
        batch_id=batch_id,
        catalogue_items=catalogue_items,
        previous=DatasetStore(ws, versioning_cfg).stats(),
    )
    if load_error is not None:
        report = with_load_failure(report, load_error)
    return CheckedBatch(events, report, batch_id)


def reject(
    ws: Workspace, source: Path | pd.DataFrame, report: ValidationReport, batch_id: str
) -> NoReturn:
    """Quarantine the batch and raise :class:`ValidationFailed` naming the failed checks."""
    folder, report_path = quarantine(ws, source, report)
    names = ", ".join(r.name for r in report.root_failures or report.failures)
    log.warning("batch %s rejected (%s); quarantined in %s", batch_id, names, folder)
    raise ValidationFailed(
        f"batch {batch_id} rejected, failed: {names}; quarantined in {folder}",
        quarantine_path=str(folder),
        report_path=str(report_path),
        hint=f"report: {report_path}; Data Docs: {report.data_docs_path}",
    )


def reject_unreadable(
    ws: Workspace, source: Path, exc: DataError, validation_cfg: ValidationConfig, batch_id: str
) -> NoReturn:
    """A file of the batch cannot be read: the whole batch is rejected as a load failure
    naming the file and its batch row (:func:`reject`); nothing is versioned."""
    empty = validate_events(pd.DataFrame(), validation_cfg, ws, batch_id=batch_id)
    reject(ws, source, with_load_failure(empty, exc), batch_id)


def _accept(
    store: DatasetStore, events: pd.DataFrame | FileBatch, batch_id: str, report: ValidationReport
) -> Ingested:
    try:
        version = store.accept(events, batch_id, report)
    except AlreadyAccepted as exc:
        log.info("%s", exc)
        return Ingested(batch_id, exc.version, None, same_as=exc.same_as)
    log.info("batch %s accepted: dataset version %s", batch_id, version.version)
    return Ingested(batch_id, version, report)


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq") or (
        path.is_dir() and any(path.rglob("*.parquet"))
    )


def _validate_and_accept_files(
    source: Path,
    ws: Workspace,
    data_cfg: DataConfig,
    validation_cfg: ValidationConfig,
    versioning_cfg: VersioningConfig,
    batch_id: str | None,
    catalogue_items: set[str] | None,
) -> Ingested:
    """``data.engine=stream``: validate and version a Parquet file or folder in hash passes
    of users, never holding the batch as one frame (memory bounded by
    ``data.memory_budget_mb``). An unreadable file rejects the whole batch: validated as
    a load failure naming the file and batch row, quarantined, nothing versioned."""
    from components.data.stream import list_event_files, scan_events

    batch_id = batch_id or content_batch_id(source)
    store = DatasetStore(ws, versioning_cfg)
    try:
        files = list_event_files(source)
    except DataError as exc:
        reject_unreadable(ws, source, exc, validation_cfg, batch_id)
    with ExitStack() as stack:
        buckets = None
        if _needs_passes(files.n_rows, data_cfg.memory_budget_mb):
            lazy = scan_events(files, data_cfg.columns, data_cfg.default_event_type)
            buckets = stack.enter_context(
                staged_buckets(lazy, files.n_rows, ws.inbox_dir / ".buckets")
            )
        report = validate_event_files(
            source,
            validation_cfg,
            ws,
            batch_id=batch_id,
            memory_budget_mb=data_cfg.memory_budget_mb,
            columns=data_cfg.columns,
            default_event_type=data_cfg.default_event_type,
            catalogue_items=catalogue_items,
            previous=store.stats(),
            buckets=buckets,
        )
        if not report.passed:
            reject(ws, source, report, batch_id)
        return _accept_files(store, source, data_cfg, report, batch_id, buckets)


def _accept_files(
    store: DatasetStore,
    source: Path,
    data_cfg: DataConfig,
    report: ValidationReport,
    batch_id: str,
    buckets: UserBuckets | None = None,
) -> Ingested:
    """Version a validated Parquet file or folder through polars' streaming sink, in as
    many user passes as ``data.memory_budget_mb`` needs for the digest."""
    passes = plan_passes(
        report.n_rows, report.n_users, report.n_items, 0, data_cfg.memory_budget_mb, GX_ROW_BYTES
    ).passes
    batch = FileBatch(
        source, passes, data_cfg.columns, data_cfg.default_event_type, buckets=buckets
    )
    return _accept(store, batch, batch_id, report)


def _validate_and_accept_on_spark(
    source: Path,
    ws: Workspace,
    data_cfg: DataConfig,
    validation_cfg: ValidationConfig,
    versioning_cfg: VersioningConfig,
    batch_id: str | None,
    catalogue_items: set[str] | None,
) -> Ingested:
    """``data.engine=spark``: the GX suite runs on Spark at ``data.spark_master`` through
    GX's Spark datasource (batch-wide duplicates and drift statistics computed by Spark);
    an accepted batch is versioned like the stream engine's (DVC tracks files: the
    version is one Parquet file written by polars' streaming sink, whoever validated it).
    An unreadable file rejects the whole batch, named with its batch row."""
    from components.validation.spark import validate_spark_files

    batch_id = batch_id or content_batch_id(source)
    store = DatasetStore(ws, versioning_cfg)
    try:
        report = validate_spark_files(
            source,
            validation_cfg,
            ws,
            batch_id=batch_id,
            master=data_cfg.spark_master,
            columns=data_cfg.columns,
            default_event_type=data_cfg.default_event_type,
            catalogue_items=catalogue_items,
            previous=store.stats(),
            driver_memory_mb=data_cfg.spark_driver_memory_mb,
        )
    except DataError as exc:
        reject_unreadable(ws, source, exc, validation_cfg, batch_id)
    if not report.passed:
        reject(ws, source, report, batch_id)
    return _accept_files(store, source, data_cfg, report, batch_id)


def _needs_passes(n_rows: int, budget_mb: int) -> bool:
    """Whether validating ``n_rows`` events within ``budget_mb`` takes more than one pass
    (a lower bound: the vocabulary's share is not known before reading the ids)."""
    return plan_passes(n_rows, 0, 0, 0, budget_mb, GX_ROW_BYTES).passes > 1


# --- item catalogue batches ----------------------------------------------------------
def ingest_catalogue(
    path: str | Path,
    ws: Workspace,
    data_cfg: DataConfig,
    validation_cfg: ValidationConfig,
    versioning_cfg: VersioningConfig,
    *,
    batch_id: str | None = None,
) -> Ingested:
    """Validate an item catalogue file (RecBole ``.item``, csv or Parquet, columns mapped
    by ``data.item_columns``) against the current version's events; add it to that version
    or quarantine it.

    The default batch id is ``items-`` + :func:`content_batch_id`; a catalogue already in
    the current version comes back with ``report`` None. Raises :class:`ValidationFailed`
    (duplicate ids, too little text, an unreadable file: the file is copied to the
    quarantine with its report) and :class:`DataError` before any events were accepted.
    """
    source = Path(path).expanduser().resolve()
    if not source.exists():
        raise DataError(f"{source}: no such catalogue file")
    batch_id = batch_id or f"items-{content_batch_id(source)}"[:128]
    if not BATCH_ID.match(batch_id):
        raise DataError(f"bad batch id {batch_id!r}: use letters, digits, '.', '_', '-'")
    store = DatasetStore(ws, versioning_cfg)
    current = store.current()
    if current is None:
        raise DataError(
            f"{source}: no dataset version to add an item catalogue to",
            hint="add events first (recops data add, or recops run)",
        )
    if batch_id in current.catalogue_batches:
        log.info("catalogue %s is already in dataset version %s", batch_id, current.short)
        return Ingested(batch_id, current, None, same_as=batch_id)
    with full_disk_is_one_line():
        return _validate_and_accept_catalogue(
            source, ws, data_cfg, validation_cfg, store, batch_id, current
        )


def _validate_and_accept_catalogue(
    source: Path,
    ws: Workspace,
    data_cfg: DataConfig,
    validation_cfg: ValidationConfig,
    store: DatasetStore,
    batch_id: str,
    current: DatasetVersion,
) -> Ingested:
    from components.data.catalogue import check_catalogue, load_catalogue, make_catalogue
    from components.data.schema import ITEM
    from components.validation.runner import validate_catalogue

    ws.ensure()
    load_error: DataError | None = None
    try:
        catalogue = load_catalogue(source, data_cfg.item_columns)
    except DataError as exc:  # validated as an empty catalogue, reported, quarantined
        catalogue, load_error = make_catalogue([], []), exc
    event_items = set(store.load_events(current.version)[ITEM].astype(str).unique())
    report = validate_catalogue(
        catalogue, validation_cfg, ws, batch_id=batch_id, event_items=event_items
    )
    if load_error is not None:
        report = with_load_failure(report, load_error)
    if not report.passed:
        reject(ws, source, report, batch_id)
    accepted, _ = check_catalogue(catalogue)  # the suite's tolerated duplicates: last row wins
    version = store.accept_catalogue(accepted, batch_id, report)
    log.info("catalogue %s accepted: dataset version %s", batch_id, version.version)
    return Ingested(batch_id, version, report)
