"""``recops data add|items|versions|show|checkout`` and ``recops bench validation``.

Exit codes: 0 accepted / done; ValidationFailed (4) when a batch is rejected, after the
failed expectations and the quarantine folder are printed; VersioningError (5) for DVC.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.app import (
    ConfigOpt,
    JsonOutOpt,
    SetOpt,
    SparkDriverMemoryOpt,
    WorkspaceOpt,
    bench_app,
    console,
    data_app,
    err_console,
    load_run_config,
    open_workspace,
    prologue,
    write_json,
)

if TYPE_CHECKING:
    from components.validation.report import ValidationReport

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _store(config, overrides, workspace):
    from components.versioning.dvc_store import DatasetStore

    cfg = load_run_config(config, overrides, workspace)
    return DatasetStore(open_workspace(cfg), cfg.versioning)


def _read_catalogue(path: Path) -> set[str]:
    import pandas as pd

    from components.errors import DataError

    try:
        frame = (
            pd.read_parquet(path)
            if path.suffix in (".parquet", ".pq")
            else pd.read_csv(path, dtype=str)
        )
    except Exception as exc:
        raise DataError(f"{path}: cannot read the item catalogue ({exc})") from None
    if "item_id" not in frame.columns:
        raise DataError(f"{path}: the item catalogue needs an 'item_id' column")
    return set(frame["item_id"].astype(str))


@data_app.command("add")
def add(
    path: Annotated[Path, typer.Argument(help="Event file (csv, parquet, RecBole .inter, ...).")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Input format (default: guessed).")
    ] = "auto",
    batch_id: Annotated[
        str | None,
        typer.Option("--batch-id", help="Batch id (default: the file's name and content hash)."),
    ] = None,
    catalogue: Annotated[
        Path | None, typer.Option("--catalogue", help="Item catalogue (csv/parquet with item_id).")
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Validate a batch with the GX suite; accept it as a new dataset version or quarantine it."""
    from components.errors import ValidationFailed
    from components.lifecycle.ingest import batch_from_file, ingest

    cfg, ws = prologue(config, overrides, workspace)
    try:
        result = ingest(
            batch_from_file(path, fmt, batch_id),  # default id: from the content
            ws,
            cfg.data,
            cfg.validation,
            cfg.versioning,
            catalogue_items=_read_catalogue(catalogue) if catalogue else None,
        )
    except ValidationFailed as exc:
        _print_rejection(path, exc)
        raise
    version, report = result.version, result.report
    if report is None:
        console.print(
            f"batch {result.batch_id} holds the same events as batch {result.same_as}, already "
            f"in dataset version {version.version}: not appended again",
            highlight=False,
        )
        return
    _print_acceptance(
        f"batch {result.batch_id}: {report.n_rows} events",
        report,
        f"dataset version {version.version} (git {(version.git_rev or '-')[:10]}): "
        f"{version.n_rows} events, {version.n_users} users, {version.n_items} items, "
        f"{len(version.batches)} batches",
    )
    from flows.cli.monitor_cmds import retrain_if_due

    retrain_if_due(cfg, ws)


def _print_acceptance(what: str, report: ValidationReport, version_line: str) -> None:
    """An accepted batch (events or catalogue): its size, its warnings, the new version."""
    console.print(
        f"[green]accepted[/green] {what}, {len(report.warnings)} warnings", highlight=False
    )
    for warning in report.warnings:
        console.print(f"  ! {warning.name}: {warning.details}", highlight=False)
    console.print(version_line, highlight=False)


def _print_rejection(path: Path, exc: Exception) -> None:
    """The failed expectations of a rejected batch and where it was quarantined."""
    report_path = getattr(exc, "report_path", None)
    err_console.print(f"[bold red]rejected[/bold red] {path}", highlight=False)
    report = json.loads(Path(report_path).read_text()) if report_path else {}
    for item in report.get("results", []):
        if not item["success"] and item["severity"] == "failure":
            err_console.print(f"  x {item['name']}: {item['details']}", highlight=False)
    err_console.print(f"quarantine: {getattr(exc, 'quarantine_path', None)}", highlight=False)


@data_app.command("items")
def add_items(
    path: Annotated[Path, typer.Argument(help="Item catalogue (RecBole .item, csv or parquet).")],
    batch_id: Annotated[
        str | None,
        typer.Option("--batch-id", help="Batch id (default: items- + name and content hash)."),
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Validate an item catalogue with the recops_catalogue suite; add it to the current
    dataset version (versioned with the events) or quarantine it."""
    from components.errors import ValidationFailed
    from components.lifecycle.ingest import ingest_catalogue

    cfg, ws = prologue(config, overrides, workspace)
    try:
        result = ingest_catalogue(
            path, ws, cfg.data, cfg.validation, cfg.versioning, batch_id=batch_id
        )
    except ValidationFailed as exc:
        _print_rejection(path, exc)
        raise
    version, report = result.version, result.report
    if report is None:
        console.print(
            f"catalogue {result.batch_id} is already in dataset version {version.short}",
            highlight=False,
        )
        return
    _print_acceptance(
        f"catalogue {result.batch_id}: {report.n_rows} items",
        report,
        f"dataset version {version.version}: {version.n_rows} events, "
        f"{version.n_catalogue_items} catalogue items ({len(version.catalogue_batches)} "
        "catalogue batches)",
    )


@data_app.command("versions")
def versions(
    as_json: JsonFlag = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """List dataset versions (id, time, rows, users, items, batches, validation)."""
    from rich.table import Table

    store = _store(config, overrides, workspace)
    listed = store.versions()
    current = store.current()
    if as_json:
        payload = [
            {**v.model_dump(mode="json"), "current": bool(current and v.version == current.version)}
            for v in listed
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    table = Table(
        "", "version", "git", "created (UTC)", "rows", "users", "items", "batches", "validation"
    )
    for v in listed:
        table.add_row(
            "*" if current and v.version == current.version else "",
            v.short,
            (v.git_rev or "-")[:10],
            v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(v.n_rows),
            str(v.n_users),
            str(v.n_items),
            str(len(v.batches)),
            v.validation,
        )
    console.print(
        table if listed else "no dataset versions yet: add a batch with `recops data add PATH`"
    )


@data_app.command("show")
def show(
    version: Annotated[str, typer.Argument(help="Version id or a unique prefix (6+ hex digits).")],
    as_json: JsonFlag = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Show one dataset version."""
    found = _store(config, overrides, workspace).show(version)
    payload = found.model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    for key, value in payload.items():
        console.print(f"[bold]{key}[/bold]: {value}", highlight=False)


@data_app.command("checkout")
def checkout(
    version: Annotated[str, typer.Argument(help="Version id or a unique prefix (6+ hex digits).")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Restore the accepted dataset to VERSION exactly (verified by its DVC md5)."""
    restored = _store(config, overrides, workspace).checkout(version)
    console.print(
        f"checked out dataset version {restored.version}: {restored.n_rows} events, "
        f"{len(restored.batches)} batches (hash verified)",
        highlight=False,
    )


@bench_app.command("validation")
def bench_validation(
    events: Annotated[
        int, typer.Option("--events", "-n", help="Synthetic events to validate.")
    ] = 1_000_000,
    chunk_rows: Annotated[int | None, typer.Option("--chunk-rows", help="Rows per GX run.")] = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="memory (one frame), stream (Parquet folder in hash passes) or spark "
            "(the same folder through GX's Spark datasource at --spark-master).",
        ),
    ] = "memory",
    budget_mb: Annotated[
        int, typer.Option("--budget-mb", help="data.memory_budget_mb for the stream engine.")
    ] = 2048,
    events_per_file: Annotated[
        int, typer.Option("--events-per-file", help="Events per Parquet part (stream engine).")
    ] = 1_000_000,
    spark_master: Annotated[
        str, typer.Option("--spark-master", help="Spark master for --engine spark.")
    ] = "local[2]",
    spark_driver_memory_mb: SparkDriverMemoryOpt = 1024,
    json_out: JsonOutOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Time the GX suite on N synthetic events; print time and peak RSS."""
    from benchmarks.data import ENGINES
    from benchmarks.validation import print_table, run_validation_benchmark

    if engine not in ENGINES:
        raise typer.BadParameter(f"choose one of {', '.join(ENGINES)}", param_hint="--engine")
    figures = run_validation_benchmark(
        events,
        workspace=workspace,
        chunk_rows=chunk_rows,
        engine=engine,
        budget_mb=budget_mb,
        events_per_file=events_per_file,
        spark_master=spark_master,
        spark_driver_memory_mb=spark_driver_memory_mb,
    )
    print_table(figures, console)
    write_json(json_out, figures)
