"""``recops features apply|materialize|get`` and ``recops bench features``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from components.errors import FeatureStoreError
from flows.cli.app import (
    ConfigOpt,
    JsonOutOpt,
    SetOpt,
    WorkspaceOpt,
    bench_app,
    console,
    features_app,
    prologue,
    write_json,
)


@features_app.command("apply")
def features_apply(
    config: ConfigOpt = None, overrides: SetOpt = None, workspace: WorkspaceOpt = None
) -> None:
    """Register feature_repo/'s entities, feature views and services (feast apply)."""
    from components.features.store import apply_repo, repo_config

    cfg, ws = prologue(config, overrides, workspace)
    apply_repo(ws, cfg.features)
    store = repo_config(ws, cfg.features)
    console.print(
        f"applied feature_repo to {ws.features_dir} "
        f"(online store: {cfg.features.online_store}, registry: {store.registry.registry_type})"
    )


def _parse_end(end: str | None) -> datetime | None:
    if end is None:
        return None
    from components.features.store import as_utc

    try:
        return as_utc(datetime.fromisoformat(end.replace("Z", "+00:00")))
    except ValueError as exc:
        raise FeatureStoreError(f"--end {end!r} is not a timestamp (use ISO 8601)") from exc


def _events_for_tables(ws: Any, cfg: Any, events_path: Path | None, fmt: str):
    """(events, item side table) from --events, else the accepted dataset, else (None, None)."""
    if events_path is not None:
        from components.data.loaders import load_events, load_side_tables

        events = load_events(events_path, fmt)
        side = (
            load_side_tables(events_path).items if events.attrs.get("format") == "recbole" else None
        )
        return events, side
    if not ws.accepted_dir.exists() or not any(ws.accepted_dir.glob("*.parquet")):
        return None, None
    from components.versioning.dvc_store import DatasetStore

    events = DatasetStore(ws, cfg.versioning).load_events()
    return (events, None) if len(events) else (None, None)


@features_app.command("materialize")
def features_materialize(
    end: Annotated[
        str | None,
        typer.Option("--end", help="Materialize up to this UTC time (ISO 8601; default now)."),
    ] = None,
    full: Annotated[
        bool,
        typer.Option("--full", help="Start from the earliest snapshot, not the last run's end."),
    ] = False,
    events_path: Annotated[
        Path | None,
        typer.Option("--events", help="Build the feature tables from this event file first."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Format of --events.")] = "auto",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Rebuild the feature tables (from --events or the accepted dataset), apply, materialize."""
    from components.features.store import apply_repo, materialize, write_feature_tables

    cfg, ws = prologue(config, overrides, workspace)
    events, side = _events_for_tables(ws, cfg, events_path, fmt)
    if events is not None:
        write_feature_tables(events, ws, cfg.features, side)
        console.print(f"feature tables rebuilt from {len(events):,} events")
    apply_repo(ws, cfg.features)
    result = materialize(ws, cfg.features, end=_parse_end(end), incremental=not full)
    for view in result.views:
        console.print(
            f"{view.view:>14}  {view.start.isoformat()} .. {view.end.isoformat()}  "
            f"{view.rows:,} rows, {view.entities:,} entities"
        )
    console.print(f"materialized into {result.online_store} in {result.seconds:.2f}s")
    write_json(json_out, result.model_dump(mode="json"))


@features_app.command("get")
def features_get(
    users: Annotated[list[str], typer.Option("--user", "-u", help="User id (repeatable).")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Print the online features of each --user (unknown users show no values)."""
    from components.features.store import online_user_features

    cfg, ws = prologue(config, overrides, workspace)
    rows = online_user_features(ws, cfg.features, users)
    for row in rows:
        console.print(f"[bold]{row['user_id']}[/bold]")
        if row.get("n_events") is None:
            console.print("  (not in the online store)")
            continue
        for name, value in row.items():
            if name != "user_id":
                console.print(f"  {name:>18}  {value}")
    write_json(json_out, rows)


@bench_app.command("features")
def bench_features(
    events: Annotated[
        int, typer.Option("--events", help="Synthetic events (0 to skip).")
    ] = 1_000_000,
    ml100k: Annotated[
        Path | None,
        typer.Option("--ml100k", help="ml-100k .inter file (default ../shared/data if present)."),
    ] = None,
    lookups: Annotated[int, typer.Option("--lookups", help="Single-user lookups timed.")] = 2000,
    batch: Annotated[int, typer.Option("--batch", help="Users per batched lookup.")] = 64,
    redis: Annotated[bool, typer.Option("--redis/--no-redis", help="Also bench Redis.")] = True,
    budget_mb: Annotated[
        int,
        typer.Option(
            "--budget-mb",
            help="data.memory_budget_mb for the synthetic events' tables (built in passes).",
        ),
    ] = 2048,
    pit: Annotated[
        int,
        typer.Option(
            "--pit",
            help="Instead: time the point-in-time training join per offline store (file, "
            "duckdb) and its cached re-run, on this many synthetic users (2 labels each).",
        ),
    ] = 0,
    json_out: JsonOutOpt = None,
) -> None:
    """Materialization time and online lookup latency (p50/p99), SQLite and Redis."""
    from benchmarks.features import default_ml100k, run_features_benchmark

    if pit:
        from benchmarks.pit import run_pit_benchmark

        run_pit_benchmark(n_users=pit, json_out=json_out)
        return
    run_features_benchmark(
        n_events=events,
        ml100k=ml100k if ml100k is not None else default_ml100k(),
        lookups=lookups,
        batch_size=batch,
        use_redis=redis,
        json_out=json_out,
        budget_mb=budget_mb,
    )


@bench_app.command("text")
def bench_text(
    items: Annotated[int, typer.Option("--items", help="Titles to encode (0 to skip).")] = 10_000,
    batch: Annotated[int, typer.Option("--batch", help="Encoder batch size.")] = 64,
    vector_items: Annotated[
        int, typer.Option("--vector-items", help="Catalogue size for the memory part (0 to skip).")
    ] = 1_000_000,
    json_out: JsonOutOpt = None,
) -> None:
    """Item encoder: items/s on an empty cache, cached re-run time, peak RSS of 1M vectors."""
    from benchmarks.text import run_text_benchmark

    run_text_benchmark(items, batch, vector_items, json_out)
