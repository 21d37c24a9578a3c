"""Reading and quarantining one event batch (the validation half of ingest).

:mod:`components.lifecycle.ingest` puts these together with versioning. Nothing is lost:
a file the loader cannot read (missing column, unparseable timestamp, empty file...) is
still validated as raw text, so the report names the failed expectations, and it is
quarantined like any other failing batch. The user's file is only ever copied.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from components.data.config import ColumnMapping
from components.data.schema import (
    EVENT,
    ITEM,
    STRING_DTYPE,
    TIME,
    USER,
    VALUE,
    normalize_events,
)
from components.errors import DataError
from components.validation.report import ExpectationResult, ValidationReport, summarize
from components.validation.suite import parse_utc
from components.workspace import Workspace

log = logging.getLogger(__name__)

LOAD_CHECK = "file_loads_as_event_contract"


def _is_contract(frame: pd.DataFrame) -> bool:
    wanted = {
        USER: STRING_DTYPE,
        ITEM: STRING_DTYPE,
        EVENT: STRING_DTYPE,
        TIME: "datetime64[ns, UTC]",
    }
    return all(col in frame.columns and frame[col].dtype == dtype for col, dtype in wanted.items())


def _raw_frame(source: Path | pd.DataFrame, columns: ColumnMapping | None) -> pd.DataFrame:
    """What a loader-rejected input looks like, read as leniently as possible.

    Contract columns are renamed from ``columns``; timestamps are parsed (NaT when
    unparseable) so the suite reports the actual problem rather than a type mismatch.
    """
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
    else:
        try:
            if source.suffix.lower() in (".parquet", ".pq") or source.is_dir():
                frame = pd.read_parquet(source)
            else:
                frame = pd.read_csv(source, sep=None, engine="python", dtype=str)
        except Exception as exc:  # anything unreadable validates as an empty table
            log.info("%s is not readable as a table (%s); validating it as empty", source, exc)
            frame = pd.DataFrame()
    mapping = (columns or ColumnMapping()).model_dump()
    renames = {
        src: dst for dst, src in mapping.items() if src and src in frame.columns and src != dst
    }
    frame = frame.rename(columns=renames)
    for col in (USER, ITEM):
        if col in frame.columns:
            frame[col] = frame[col].astype(STRING_DTYPE)
    if TIME in frame.columns:
        frame[TIME] = parse_utc(frame[TIME])
    if VALUE in frame.columns:
        frame[VALUE] = pd.to_numeric(frame[VALUE], errors="coerce").astype("float64")
    if len(frame.columns) and EVENT not in frame.columns:
        frame[EVENT] = pd.Series(["interaction"] * len(frame), dtype=STRING_DTYPE)
    return frame


def read_batch(
    source: Path | pd.DataFrame,
    *,
    fmt: str = "auto",
    columns: ColumnMapping | None = None,
    default_event_type: str = "interaction",
) -> tuple[pd.DataFrame, DataError | None]:
    """The batch in the event contract, or its raw form plus the loader's error."""
    if isinstance(source, pd.DataFrame):
        if _is_contract(source):
            return source, None
        try:
            events = normalize_events(
                source,
                source="<dataframe>",
                columns=(columns or ColumnMapping()).model_dump(),
                default_event_type=default_event_type,
            )
            return events, None
        except DataError as exc:
            return _raw_frame(source, columns), exc
    from components.data.loaders import load_events

    try:
        return load_events(
            source, fmt, columns=columns, default_event_type=default_event_type
        ), None
    except DataError as exc:
        return _raw_frame(source, columns), exc


def with_load_failure(report: ValidationReport, error: DataError) -> ValidationReport:
    failed = ExpectationResult(
        name=LOAD_CHECK,
        success=False,
        severity="failure",
        details=error.message,
        expectation_type="recops_loader",
    )
    results = [failed, *report.results]
    return report.model_copy(
        update={"passed": False, "results": results, "summary": summarize(results, report.n_rows)}
    )


def _free_folder(parent: Path, name: str) -> Path:
    folder, n = parent / name, 1
    while folder.exists():
        n += 1
        folder = parent / f"{name}.{n}"
    folder.mkdir(parents=True)
    return folder


def quarantine(
    workspace: Workspace,
    source: Path | pd.DataFrame,
    report: ValidationReport,
) -> tuple[Path, Path]:
    """Copy the batch, its report JSON and its Data Docs pages to ``quarantine/<batch-id>/``.

    Returns (quarantine folder, report path). The source file is copied, never moved.
    """
    folder = _free_folder(workspace.quarantine_dir, report.batch_id)
    if isinstance(source, pd.DataFrame):
        try:
            source.to_parquet(folder / "events.parquet", index=False)
        except Exception:  # mixed-type object columns: keep the data as text instead
            source.to_csv(folder / "events.csv", index=False)
    elif source.is_dir():
        shutil.copytree(source, folder / source.name)
    elif source.exists():
        shutil.copy2(source, folder / source.name)
    docs = folder / "data_docs"
    for page in report.data_docs_pages:
        if Path(page).is_file():
            docs.mkdir(exist_ok=True)
            shutil.copy2(page, docs / f"{len(list(docs.iterdir())):02d}-{Path(page).name}")
    report_path = folder / "report.json"
    report_path.write_text(report.model_dump_json(indent=2) + "\n")
    (folder / "SUMMARY.txt").write_text(report.summary + "\n")
    return folder, report_path
