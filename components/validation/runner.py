"""Run the event-contract suite with Great Expectations 1.x and return a typed report.

One file-backed GX context per workspace per process (``workspace.gx_dir``), quiet (no
analytics, no progress bars). A batch is validated in chunks of ``cfg.chunk_rows`` rows,
each chunk through the same Checkpoint (which also updates Data Docs); the chunk results
are merged into one :class:`ValidationReport` (counts summed, ``mostly`` re-applied to the
batch-wide share). Duplicates are flagged over the whole batch before chunking, so a
duplicate pair split across two chunks is still caught.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pandas as pd
import polars as pl
from filelock import FileLock

from components.data.config import ColumnMapping
from components.data.schema import ITEM, USER, VALUE
from components.quiet import quiet_environment, quiet_loggers
from components.validation.config import ValidationConfig
from components.validation.report import BatchStats, ExpectationResult, ValidationReport, summarize
from components.validation.suite import (
    DRIFT_SUITE,
    ENCODED_IDS,
    EVENTS_SUITE,
    USER_RATIO,
    VOLUME_RATIO,
    CheckSpec,
    check_spec,
    drift_expectations,
    duplicate_flags,
    event_expectations,
    with_derived_columns,
)
from components.workspace import Workspace

if TYPE_CHECKING:
    from components.data.stream import UserBuckets

log = logging.getLogger(__name__)

DATASOURCE = "recops"
#: GX's native Spark datasource (``data.engine=spark``): the suite runs on the executors
SPARK_DATASOURCE = "recops-spark"
_CONTEXTS: dict[Path, Any] = {}
_CONTEXT_GUARD = threading.Lock()
_EXAMPLES = 5
NOT_EVALUATED = "not evaluated"


def _quiet_gx() -> None:
    quiet_environment()
    quiet_loggers()


def gx_context(workspace: Workspace):
    """The file-backed GX context of ``workspace`` (created once per process, then reused)."""
    key = workspace.gx_dir
    with _CONTEXT_GUARD:
        if key not in _CONTEXTS:
            _quiet_gx()
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            started = time.perf_counter()
            key.mkdir(parents=True, exist_ok=True)
            context = gx.get_context(mode="file", project_root_dir=str(key))
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            _CONTEXTS[key] = context
            log.debug("GX context at %s in %.2fs", key, time.perf_counter() - started)
        return _CONTEXTS[key]


def _batch_definition(context, asset_name: str, source_name: str = DATASOURCE):
    # get_datasource() binds the context; data_sources.all() returns unbound copies when
    # the datasource was loaded from great_expectations.yml.
    if source_name in context.data_sources.all():
        source = context.get_datasource(source_name)
    elif source_name == SPARK_DATASOURCE:
        # the caller persists (and unpersists) the frame: GX's own persist never releases it
        source = context.data_sources.add_spark(source_name, persist=False)
    else:
        source = context.data_sources.add_pandas(source_name)
    if asset_name in {asset.name for asset in source.assets}:
        asset = source.get_asset(asset_name)
    else:
        asset = source.add_dataframe_asset(asset_name)
    if "whole" in {bd.name for bd in asset.batch_definitions}:
        return asset.get_batch_definition("whole")
    return asset.add_batch_definition_whole_dataframe("whole")


def _checkpoint(
    context, name: str, expectations: list, docs: bool = True, source_name: str = DATASOURCE
):
    """(Re)register suite ``name`` with ``expectations`` and its checkpoint; return it.

    ``docs=False``: a checkpoint without the Data Docs action (results are still
    stored), for chunks whose pages are built once afterwards (:func:`_docs_pages`).
    ``source_name``: the datasource the batches come from (pandas, or
    :data:`SPARK_DATASOURCE`); the suite keeps its name, so reports and Data Docs name
    the same suite whatever the engine."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction, ValidationAction

    suite = context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
    run_name = name if source_name == DATASOURCE else f"{name}-{source_name}"
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(
            name=run_name, data=_batch_definition(context, name, source_name), suite=suite
        )
    )
    actions: list[ValidationAction] = (
        [UpdateDataDocsAction(name="update_data_docs")] if docs else []
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=run_name if docs else f"{run_name}-chunks",
            validation_definitions=[definition],
            actions=actions,
            result_format="SUMMARY",
        )
    )


@dataclass
class _Run:
    """One checkpoint run: its expectation results, result id and Data Docs page."""

    results: list
    docs_page: str | None
    identifier: Any = None


def _run_checkpoint(context, checkpoint, frame: Any, run_name: str) -> _Run:
    """``frame``: a pandas frame, or a Spark frame for a checkpoint on the Spark source."""
    from great_expectations.core.run_identifier import RunIdentifier

    outcome = checkpoint.run(
        batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name)
    )
    identifier, result = next(iter(outcome.run_results.items()))
    page = _docs_page(context, identifier) if checkpoint.actions else None
    return _Run(results=list(result.results), docs_page=page, identifier=identifier)


def _docs_page(context, identifier) -> str | None:
    """The local Data Docs page of one validation result."""
    for site in context.get_docs_sites_urls(resource_identifier=identifier):
        url = site.get("site_url") or ""
        if url.startswith("file://"):
            return unquote(urlparse(url).path)
    return None


def _docs_pages(context, identifiers: list) -> list[str]:
    """Build the Data Docs pages of ``identifiers`` (and the index) in one go: building
    them per chunk re-rendered the site index each time (~2.5 s a chunk)."""
    if not identifiers:
        return []
    context.build_data_docs(resource_identifiers=identifiers)
    return [page for page in (_docs_page(context, i) for i in identifiers) if page]


def _exception_text(er) -> str | None:
    info = er.exception_info or {}
    if "raised_exception" in info:
        infos = [info]
    else:
        infos = [v for v in info.values() if isinstance(v, dict)]
    for item in infos:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "error").splitlines()[0][:200]
    return None


@dataclass
class _Merged:
    """Running totals of one check over chunks."""

    spec: CheckSpec
    column: str | None
    expectation_type: str
    severity: str
    success: bool = True
    element_count: int = 0
    missing_count: int = 0
    unexpected_count: int = 0
    rows: int = 0
    observed: Any = None
    error: str | None = None
    examples: list = field(default_factory=list)
    column_missing: bool = False

    def add(self, er) -> None:
        result = er.result or {}
        error = _exception_text(er)
        if error and self.error is None:
            self.error = error
        if self.spec.kind == "rows":
            self.rows += int(result.get("observed_value") or 0)
            return
        if self.spec.kind == "schema":
            if not er.success:
                self.success = False
                if self.observed is None:
                    self.observed = result.get("observed_value")
            return
        self.element_count += int(result.get("element_count") or 0)
        self.missing_count += int(result.get("missing_count") or 0)
        self.unexpected_count += int(result.get("unexpected_count") or 0)
        if not result and not er.success:
            self.success = False
        for value in result.get("partial_unexpected_list") or []:
            if len(self.examples) < _EXAMPLES and not isinstance(value, bool):
                self.examples.append(value)

    def finish(self) -> ExpectationResult:
        success, observed, details = self._verdict()
        return ExpectationResult(
            name=self.spec.check,
            column=self.column,
            success=success,
            severity="warning" if self.severity == "warning" else "failure",
            observed=_jsonable(observed),
            details=details,
            expectation_type=self.expectation_type,
        )

    def _verdict(self) -> tuple[bool, Any, str]:
        if self.column_missing and self.expectation_type != "expect_column_to_exist":
            return False, None, f"{NOT_EVALUATED}: column {self.column!r} is missing"
        if self.error is not None:
            return False, None, f"{self.expectation_type} could not run: {self.error}"
        if self.spec.kind == "rows":
            minimum = int(self.spec.min_value or 0)
            return self.rows >= minimum, self.rows, f"{self.rows} rows (minimum {minimum})"
        if self.spec.kind == "schema":
            if self.success:
                return True, None, f"{self.expectation_type} ok"
            if self.expectation_type == "expect_column_to_exist":
                return False, None, f"column {self.column!r} is missing"
            return False, self.observed, f"column {self.column!r} has type {self.observed}"
        if not self.success and self.element_count == 0:
            return False, None, f"{self.expectation_type} failed (column {self.column!r} missing?)"
        considered = self.element_count - self.missing_count
        if self.expectation_type == "expect_column_values_to_not_be_null":
            considered = self.element_count
        share = self.unexpected_count / considered if considered else 0.0
        allowed = 1.0 - self.spec.mostly if self.spec.mostly is not None else 0.0
        ok = self.unexpected_count == 0 if self.spec.mostly is None else share <= allowed + 1e-12
        text = (
            f"{self.unexpected_count} of {considered} rows unexpected ({share:.2%}, "
            f"allowed {allowed:.2%})"
        )
        if self.examples and not ok:
            text += f"; e.g. {', '.join(str(v) for v in self.examples)}"
        return ok, share, text


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _severity(er) -> str:
    raw = getattr(er.expectation_config, "severity", "critical")
    return str(getattr(raw, "value", raw))


def _chunks(events: pd.DataFrame, size: int) -> list[tuple[int, int]]:
    n = len(events)
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)] or [(0, 0)]


def _validate_rows(
    context,
    events: pd.DataFrame,
    cfg: ValidationConfig,
    batch_id: str,
    catalogue: set[str] | None,
) -> tuple[list[ExpectationResult], list[str]]:
    expectations = event_expectations(
        cfg, with_catalogue=catalogue is not None, with_value=VALUE in events.columns
    )
    duplicates = duplicate_flags(events)
    chunks = (
        with_derived_columns(
            events.iloc[lo:hi], None if duplicates is None else duplicates[lo:hi], catalogue
        )
        for lo, hi in _chunks(events, cfg.chunk_rows)
    )
    return _validate_chunks(context, expectations, chunks, batch_id)


def _validate_chunks(
    context,
    expectations: list,
    chunks: Iterable[Any],
    batch_id: str,
    source_name: str = DATASOURCE,
) -> tuple[list[ExpectationResult], list[str]]:
    """Run the events suite on each chunk (derived columns included) and merge the
    results into one per check (counts summed, ``mostly`` applied to the batch-wide
    share). Only one chunk is alive at a time. Chunks are pandas frames, or (with
    :data:`SPARK_DATASOURCE`) Spark frames: the whole batch is then one chunk."""
    checkpoint = _checkpoint(
        context, EVENTS_SUITE, expectations, docs=False, source_name=source_name
    )
    merged: dict[str, _Merged] = {}
    identifiers = []
    for number, frame in enumerate(chunks):
        run = _run_checkpoint(context, checkpoint, frame, f"{batch_id}-part{number}")
        identifiers.append(run.identifier)
        for er in run.results:
            config = er.expectation_config
            check = config.meta["check"]
            if check not in merged:
                merged[check] = _Merged(
                    spec=check_spec(config),
                    column=config.kwargs.get("column"),
                    expectation_type=config.type,
                    severity=_severity(er),
                )
            column = config.kwargs.get("column")
            if column is not None and column not in frame.columns:
                merged[check].column_missing = True
            merged[check].add(er)
        log.debug("validated chunk %d of batch %s", number, batch_id)
        del frame
    order = [e.meta["check"] for e in expectations]
    return [merged[c].finish() for c in order if c in merged], _docs_pages(context, identifiers)


def _validate_drift(
    context, stats: BatchStats, previous: BatchStats, cfg: ValidationConfig, batch_id: str
) -> tuple[list[ExpectationResult], str | None]:
    summary = pd.DataFrame(
        {
            VOLUME_RATIO: [stats.n_rows / max(previous.n_rows, 1)],
            USER_RATIO: [stats.n_users / max(previous.n_users, 1)],
        }
    )
    checkpoint = _checkpoint(context, DRIFT_SUITE, drift_expectations(cfg))
    run = _run_checkpoint(context, checkpoint, summary, f"{batch_id}-drift")
    out = []
    for er in run.results:
        config = er.expectation_config
        ratio = float(summary[config.kwargs["column"]].iloc[0])
        low, high = config.kwargs.get("min_value"), config.kwargs.get("max_value")
        out.append(
            ExpectationResult(
                name=config.meta["check"],
                column=config.kwargs["column"],
                success=bool(er.success),
                severity="warning" if _severity(er) == "warning" else "failure",
                observed=round(ratio, 6),
                details=(
                    f"ratio {ratio:.3g} vs previous batch {previous.batch_id or ''} "
                    f"(allowed {low:.3g}..{high:.3g})"
                ),
                expectation_type=config.type,
            )
        )
    return out, run.docs_page


def validate_summary(
    workspace: Workspace, suite: str, expectations: list, summary: pd.DataFrame, run_name: str
) -> tuple[list, str | None]:
    """Run ``expectations`` as GX suite ``suite`` on a small summary frame (the drift
    suites use this); returns the GX results and the Data Docs page."""
    workspace.lock_dir.mkdir(parents=True, exist_ok=True)
    context = gx_context(workspace)
    with FileLock(str(workspace.lock_dir / "gx.lock")):
        checkpoint = _checkpoint(context, suite, expectations)
        run = _run_checkpoint(context, checkpoint, summary, run_name)
    return run.results, run.docs_page


def batch_stats(events: pd.DataFrame, batch_id: str | None = None) -> BatchStats:
    """Row, user and item counts (and time range) of a contract-shaped frame."""
    from components.data.schema import TIME

    has_time = TIME in events.columns and isinstance(events[TIME].dtype, pd.DatetimeTZDtype)
    return BatchStats(
        batch_id=batch_id,
        n_rows=len(events),
        n_users=int(events[USER].nunique()) if USER in events.columns else 0,
        n_items=int(events[ITEM].nunique()) if ITEM in events.columns else 0,
        min_timestamp=events[TIME].min() if has_time and len(events) else None,
        max_timestamp=events[TIME].max() if has_time and len(events) else None,
    )


def validate_events(
    events: pd.DataFrame,
    cfg: ValidationConfig,
    workspace: Workspace,
    *,
    batch_id: str,
    catalogue_items: set[str] | None = None,
    previous: BatchStats | None = None,
) -> ValidationReport:
    """Validate ``events`` with the event-contract suite; never raises for bad data.

    ``catalogue_items`` enables the unknown-item check; ``previous`` (the last accepted
    batch) enables the drift checks. GX results and Data Docs are written under
    ``workspace.gx_dir``; ``report.data_docs_path`` is the HTML page of the batch (the
    site index when the batch was validated in several chunks).
    """
    started = time.perf_counter()
    workspace.lock_dir.mkdir(parents=True, exist_ok=True)
    context = gx_context(workspace)
    stats = batch_stats(events, batch_id)
    with FileLock(str(workspace.lock_dir / "gx.lock")):
        results, pages = _validate_rows(context, events, cfg, batch_id, catalogue_items)
        _add_drift(context, stats, previous, cfg, batch_id, results, pages)
    n_chunks = len(_chunks(events, cfg.chunk_rows))
    docs = pages[0] if n_chunks == 1 and pages else _site_index(pages)
    return _events_report(batch_id, stats, results, pages, docs, n_chunks, started)


def _add_drift(
    context: Any,
    stats: BatchStats,
    previous: BatchStats | None,
    cfg: ValidationConfig,
    batch_id: str,
    results: list[ExpectationResult],
    pages: list[str],
) -> None:
    """Append the drift checks against ``previous`` (when there is one and data)."""
    if previous is not None and stats.n_rows > 0:
        drift, page = _validate_drift(context, stats, previous, cfg, batch_id)
        results += drift
        if page:
            pages.append(page)


def _events_report(
    batch_id: str,
    stats: BatchStats,
    results: list[ExpectationResult],
    pages: list[str],
    docs: str | None,
    n_chunks: int,
    started: float,
    passes: int = 1,
) -> ValidationReport:
    """The report of an event batch validated in ``n_chunks`` chunks over ``passes``."""
    passed = not any(not r.success and r.severity == "failure" for r in results)
    seconds = time.perf_counter() - started
    log.info(
        "batch %s: %s in %.1fs (%d pass(es))",
        batch_id,
        "passed" if passed else "FAILED",
        seconds,
        passes,
    )
    return ValidationReport(
        batch_id=batch_id,
        passed=passed,
        n_rows=stats.n_rows,
        n_users=stats.n_users,
        n_items=stats.n_items,
        results=results,
        data_docs_path=docs,
        summary=summarize(results, stats.n_rows),
        validated_at=datetime.now(timezone.utc),
        seconds=round(seconds, 3),
        n_chunks=n_chunks,
        data_docs_pages=pages,
    )


def file_batch_stats(lazy: pl.LazyFrame, n_rows: int, batch_id: str | None) -> BatchStats:
    """:func:`batch_stats` of a lazy contract frame, computed by polars' streaming engine."""
    from components.data.schema import TIME

    row = lazy.select(
        pl.col(USER).n_unique().alias("users"),
        pl.col(ITEM).n_unique().alias("items"),
        pl.col(TIME).min().alias("first"),
        pl.col(TIME).max().alias("last"),
    ).collect(engine="streaming")
    first, last = row["first"][0], row["last"][0]
    return BatchStats(
        batch_id=batch_id,
        n_rows=n_rows,
        n_users=int(row["users"][0]),
        n_items=int(row["items"][0]),
        min_timestamp=pd.Timestamp(first) if first is not None else None,
        max_timestamp=pd.Timestamp(last) if last is not None else None,
    )


def _pass_chunks(
    source: pl.LazyFrame | UserBuckets, passes: int, chunk_rows: int, catalogue: set[str] | None
) -> Iterator[pd.DataFrame]:
    """The batch as pandas chunks with the suite's derived columns, one pass of users at a
    time (duplicates share a user, so flagging them inside a pass is exact); ids and
    event types dictionary-encoded (:data:`~components.validation.suite.ENCODED_IDS`)."""
    from components.data.schema import EVENT, TIME
    from components.data.stream import ROW, user_passes

    # a 64-bit hash of the key, like the frame path's duplicate_flags (a struct key
    # cost ~3x more); a user's rows are in input order in its bucket or file
    key = pl.struct(USER, ITEM, TIME, EVENT).hash(seed=0)
    for chosen in user_passes(source, passes):
        rows = chosen.collect(engine="streaming")
        duplicates = (~rows.select(key.is_first_distinct()).to_series()).to_numpy()
        frame = rows.drop(ROW).with_columns(pl.col(USER, ITEM, EVENT).cast(pl.Categorical))
        frame = frame.to_pandas()
        del rows
        for lo in range(0, max(len(frame), 1), chunk_rows):
            yield with_derived_columns(
                frame.iloc[lo : lo + chunk_rows], duplicates[lo : lo + chunk_rows], catalogue
            )
        del frame


def validate_event_files(
    path: str | Path,
    cfg: ValidationConfig,
    workspace: Workspace,
    *,
    batch_id: str,
    memory_budget_mb: int,
    columns: ColumnMapping | None = None,
    default_event_type: str = "interaction",
    catalogue_items: set[str] | None = None,
    previous: BatchStats | None = None,
    buckets: UserBuckets | None = None,
) -> ValidationReport:
    """:func:`validate_events` for a Parquet file or folder too big for one frame.

    Batch statistics (rows, users, items, time range: the drift checks' input) come from
    polars over the files; the rows reach GX one pass of users at a time, in chunks of
    ``cfg.chunk_rows``, with duplicates flagged by polars inside each pass. Passes are
    planned from ``memory_budget_mb`` (``data.memory_budget_mb``) like the streaming
    data path's; with more than one, each pass reads only its own user buckets
    (``buckets``, the batch already written by user hash, or written here for the call).
    A file that is not readable Parquet raises :class:`DataError` naming it.
    """
    from components.data.stream import (
        GX_ROW_BYTES,
        list_event_files,
        plan_passes,
        scan_events,
        staged_buckets,
    )

    started = time.perf_counter()
    files = list_event_files(path)
    lazy = scan_events(files, columns, default_event_type)
    workspace.lock_dir.mkdir(parents=True, exist_ok=True)
    context = gx_context(workspace)
    stats = file_batch_stats(lazy, files.n_rows, batch_id)
    plan = plan_passes(
        files.n_rows, stats.n_users, stats.n_items, 0, memory_budget_mb, row_bytes=GX_ROW_BYTES
    )
    expectations = event_expectations(
        cfg, with_catalogue=catalogue_items is not None, with_value=True, id_type=ENCODED_IDS
    )
    with ExitStack() as stack:
        source: pl.LazyFrame | UserBuckets = lazy
        if buckets is not None:
            source = buckets
        elif plan.passes > 1:
            source = stack.enter_context(
                staged_buckets(lazy, files.n_rows, workspace.inbox_dir / ".buckets")
            )
        chunks = _pass_chunks(source, plan.passes, cfg.chunk_rows, catalogue_items)
        with FileLock(str(workspace.lock_dir / "gx.lock")):
            results, pages = _validate_chunks(context, expectations, chunks, batch_id)
            _add_drift(context, stats, previous, cfg, batch_id, results, pages)
    docs = _site_index(pages) if len(pages) > 1 else next(iter(pages), None)
    n_chunks = max(1, len([p for p in pages if "drift" not in p]))
    return _events_report(batch_id, stats, results, pages, docs, n_chunks, started, plan.passes)


def validate_catalogue(
    catalogue: pd.DataFrame,
    cfg: ValidationConfig,
    workspace: Workspace,
    *,
    batch_id: str,
    event_items: set[str] | None = None,
) -> ValidationReport:
    """Validate an item catalogue (catalogue contract) with the ``recops_catalogue`` suite:
    duplicate ids and a text share under the minimum fail; items without a category or
    without events are warnings (reported, accepted). Never raises for bad data."""
    from components.validation.suite import (
        CATALOGUE_SUITE,
        catalogue_expectations,
        catalogue_with_derived_columns,
    )

    started = time.perf_counter()
    workspace.lock_dir.mkdir(parents=True, exist_ok=True)
    context = gx_context(workspace)
    expectations = catalogue_expectations(cfg, with_events=event_items is not None)
    frame = catalogue_with_derived_columns(catalogue, event_items)
    with FileLock(str(workspace.lock_dir / "gx.lock")):
        checkpoint = _checkpoint(context, CATALOGUE_SUITE, expectations)
        run = _run_checkpoint(context, checkpoint, frame, f"{batch_id}-catalogue")
    merged: dict[str, _Merged] = {}
    for er in run.results:
        config = er.expectation_config
        check = config.meta["check"]
        merged[check] = _Merged(
            spec=check_spec(config),
            column=config.kwargs.get("column"),
            expectation_type=config.type,
            severity=_severity(er),
        )
        merged[check].add(er)
    results = [merged[e.meta["check"]].finish() for e in expectations if e.meta["check"] in merged]
    passed = not any(not r.success and r.severity == "failure" for r in results)
    seconds = time.perf_counter() - started
    n_items = int(catalogue[ITEM].nunique()) if ITEM in catalogue.columns else 0
    return ValidationReport(
        batch_id=batch_id,
        passed=passed,
        n_rows=len(catalogue),
        n_users=0,
        n_items=n_items,
        results=results,
        data_docs_path=run.docs_page,
        summary=summarize(results, len(catalogue)),
        validated_at=datetime.now(timezone.utc),
        seconds=round(seconds, 3),
        n_chunks=1,
        data_docs_pages=[run.docs_page] if run.docs_page else [],
    )


def _site_index(pages: list[str]) -> str | None:
    """The Data Docs ``index.html`` above the validation pages, if any."""
    for page in pages:
        parts = Path(page).parts
        if "validations" in parts:
            root = Path(*parts[: parts.index("validations")])
            return str(root / "index.html")
    return None
