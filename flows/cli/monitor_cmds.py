"""``recops feedback add`` and ``recops monitor``: what users did next, and how it went."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.app import (
    ConfigOpt,
    JsonOutOpt,
    SetOpt,
    WorkspaceOpt,
    app,
    bench_app,
    console,
    prologue,
    write_json,
)

feedback_app = typer.Typer(
    help="Feedback events (clicks, carts, purchases) as training data.", no_args_is_help=True
)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("add")
def feedback_add(
    path: Annotated[Path, typer.Argument(help="Feedback events (same formats as data add).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Input format.")] = "auto",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Validate and version feedback exactly like `recops data add` (the same ingest);
    a `request_id` column is kept; unknown request ids are counted, the events kept."""
    from flows.cli.data_cmds import add

    add(path, fmt, None, None, config, overrides, workspace)
    _cfg, ws = prologue(config, overrides, workspace)
    _count_unknown_requests(path, ws)


def _count_unknown_requests(path: Path, ws) -> None:
    """Events naming a request id the serving log does not hold: kept, and said."""
    import pandas as pd
    import pyarrow as pa

    from components.monitoring.online import unknown_request_ids
    from components.monitoring.report import read_logs

    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype=str)
    else:
        return
    if "request_id" not in frame.columns:
        return
    served, _ = read_logs(ws)
    named = pa.table({"request_id": pa.array(frame["request_id"].astype(object), pa.string())})
    unknown = unknown_request_ids(served, named)
    console.print(f"{unknown} events name a request id the serving log does not hold (kept)")


def retrain_if_due(cfg, ws) -> None:
    """After new data was accepted: send the retrain event when enough has accumulated."""
    from components.monitoring.triggers import new_events_since_champion, retrain_reason
    from flows.events import emit_retrain_request

    new_events = new_events_since_champion(ws, cfg.versioning)
    reason = retrain_reason(new_events, None, cfg.monitoring)
    if reason:
        sent = emit_retrain_request(ws, reason, {"new_events": new_events})
        console.print(f"retraining due: {reason} ({'event sent' if sent else 'no Prefect server'})")


def _print_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"online metrics (k={report['k']}, window {report['window_hours']:g} h)")
    for col in (
        "version",
        "requests",
        "cold start",
        "unknown items",
        "coverage",
        "hit-rate",
        "CI",
        "lists",
    ):
        table.add_column(col)
    for m in report["versions"]:
        hr = m["hit_rate"]
        value = "-" if hr["value"] is None else f"{hr['value']:.4f}"
        ci = "-" if hr["low"] is None else f"[{hr['low']:.4f}, {hr['high']:.4f}]"
        coverage = "-" if m["coverage"] is None else f"{m['coverage']:.3f}"
        table.add_row(
            m["model_version"],
            str(m["requests"]),
            f"{m['cold_start_share']:.3f}",
            f"{m['unknown_item_share']:.3f}",
            coverage,
            value,
            ci,
            f"{hr['n']} (+{m['open_lists']} open)",
        )
    console.print(table)
    console.print(
        f"feedback events {report['feedback_events']}, naming unknown request ids "
        f"{report['feedback_unknown_request_ids']}"
    )
    drift = report.get("drift")
    if drift:
        console.print(
            f"drift of {report['drift_version']}: {'DRIFT' if drift['drifted'] else 'none'}"
        )
        for check in drift["checks"]:
            console.print(f"  {'x' if check['drifted'] else '-'} {check['details']}")
    if report.get("retrain_reason"):
        console.print(f"retraining due: {report['retrain_reason']}")


@app.command("monitor")
def monitor(
    version: Annotated[
        str | None, typer.Option("--version", help="Only this model version.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only traffic from this ISO time on (UTC).")
    ] = None,
    run: Annotated[
        bool,
        typer.Option(
            "--run",
            help="Run the monitoring flow (ingest feedback, drift, artifacts, retrain event).",
        ),
    ] = False,
    json_out: JsonOutOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Online metrics per model version from the serving log and feedback (with --run: the
    monitoring flow, on Prefect's temporary server when none is configured)."""
    from components.errors import ConfigError

    cfg, ws = prologue(config, overrides, workspace)
    try:
        since_at = datetime.fromisoformat(since).astimezone(timezone.utc) if since else None
    except ValueError:
        raise ConfigError(f"--since {since!r} is not an ISO time (e.g. 2026-01-31T00:00)") from None
    if run:
        from flows.monitor import monitor_flow

        report = monitor_flow(
            config=cfg.model_dump(mode="json"),
            version=version,
            since=since_at.isoformat() if since_at else None,
        ).report
    else:
        from components.monitoring.report import build_report

        report = build_report(ws, cfg.monitoring, cfg.versioning, version=version, since=since_at)
    _print_report(report)
    write_json(json_out, json.loads(json.dumps(report, default=str)))


@bench_app.command("monitor")
def bench_monitor(
    levels: Annotated[
        str, typer.Option("--levels", help="Concurrency levels, comma-separated ('' skips).")
    ] = "8,32",
    duration: Annotated[float, typer.Option("--duration", help="Seconds per load run.")] = 5.0,
    repeats: Annotated[int, typer.Option("--repeats", help="On/off pairs per level.")] = 3,
    requests: Annotated[
        int, typer.Option("--requests", help="Logged requests for the monitoring run (0 skips).")
    ] = 1_000_000,
    batches: Annotated[
        int, typer.Option("--batches", help="Seeded batches per drift case (0 skips).")
    ] = 20,
    items: Annotated[
        int, typer.Option("--items", help="Catalogue size of the served model.")
    ] = 1000,
    json_out: JsonOutOpt = None,
) -> None:
    """Serving log cost (on vs off), one monitoring run over many logged requests, drift
    detection and false alarms on seeded synthetic batches."""
    from benchmarks.monitor import run_monitor_benchmark

    run_monitor_benchmark(
        json_out,
        levels=[int(x) for x in levels.split(",") if x.strip()],
        duration_s=duration,
        repeats=repeats,
        n_requests=requests,
        batches=batches,
        n_items=items,
    )
