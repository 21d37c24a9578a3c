"""``recops run`` (the main job), ``recops schedule`` and ``recops rollback``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.app import (
    ConfigOpt,
    FormatOpt,
    JsonOutOpt,
    SetOpt,
    WorkspaceOpt,
    app,
    bench_app,
    console,
    load_run_config,
    open_workspace,
)

if TYPE_CHECKING:
    from flows.results import RetrainResult

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", "-d", help="Event file to ingest (default: a new synthetic batch)."),
]


def curl_example(url: str, user_id: str | None) -> str:
    """A ready-to-paste request against the deployed service."""
    body = f'{{"user_id": "{user_id}", "k": 10}}' if user_id else '{"history": [], "k": 10}'
    return f"curl -s -X POST {url}/recommend -H 'content-type: application/json' -d '{body}'"


def _pinned_workspace(config, overrides, workspace):
    """The run config with an absolute workspace, so flow runs elsewhere agree on it."""
    from components.workspace import Workspace

    cfg = load_run_config(config, overrides, workspace)
    return cfg.model_copy(update={"workspace": str(Workspace.at(cfg.workspace).root)})


def run_summary_lines(result: RetrainResult) -> list[str]:
    """What happened in one retrain run, as plain aligned lines (no width assumed)."""
    from components.evaluation.metrics import format_headline

    record, outcome = result.record, result.outcome
    gate = record.gate or {}
    metrics = format_headline(record.metrics_test)
    verdict = "PROMOTED" if gate.get("promote") else "REJECTED"
    serving = outcome.serving_version or "nothing deployed"
    lines = [
        f"data version   {record.data_version}",
        f"model          {record.model_name} -> version {record.model_version}",
        f"test metrics   {metrics}",
        f"gate           {verdict} (reference: {gate.get('reference')})",
        *(f"               - {reason}" for reason in gate.get("reasons", [])),
        f"serving        {serving} {outcome.url or ''}".rstrip(),
    ]
    if record.report_path:
        lines.append(f"report         {record.report_path}")
    if outcome.url:
        lines += ["", "try it:", "  " + curl_example(outcome.url, outcome.example_user)]
    return lines


def print_lines(title: str, lines: list[str]) -> None:
    """Print whole lines: a terminal wraps long ones itself, files and pipes get them as is."""
    from components.quiet import stdout_is_terminal

    if stdout_is_terminal():
        console.rule(title)
        for line in lines:
            console.print(line, soft_wrap=True, highlight=False, markup=False)
        return
    typer.echo(f"== {title} ==")
    for line in lines:
        typer.echo(line)


def print_run_summary(result: RetrainResult) -> None:
    """What happened in one retrain run, for people."""
    print_lines("recops run", run_summary_lines(result))


@app.command("run")
def run(
    data: DataOpt = None,
    fmt: FormatOpt = "auto",
    items: Annotated[
        Path | None,
        typer.Option(
            "--items",
            help="Item catalogue (RecBole .item, csv or parquet; same as --set data.items=...): "
            "validated, versioned with the events, used by training and the bento.",
        ),
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Run the retrain flow: validate -> version -> features -> train -> gate -> deploy.

    With no arguments it ingests a new batch of the bundled synthetic dataset into
    ./.recops and ends with the champion bento serving on localhost. Running it again is
    safe: a new challenger, a new gate decision; the champion keeps serving unless beaten.
    """
    from flows.temporary_server import flow_api, start_temporary_server

    if items is not None:
        overrides = [*(overrides or []), f"data.items={items.expanduser().resolve()}"]
    cfg = _pinned_workspace(config, overrides, workspace)
    server = start_temporary_server()  # starts on the other core while the flow imports
    from flows.retrain import retrain_flow

    with flow_api(server):
        result = retrain_flow(
            config=cfg.model_dump(mode="json"),
            data_path=str(data) if data else None,
            data_format=fmt,
            actor="cli",
        )
    print_run_summary(result)


@app.command("rollback")
def rollback(
    to: Annotated[
        str | None,
        typer.Option("--to", help="Version to restore (default: the previous champion)."),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the history.")] = "",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Make an earlier model version champion again and redeploy it (a Prefect flow)."""
    from flows.temporary_server import flow_api, start_temporary_server

    cfg = _pinned_workspace(config, overrides, workspace)
    server = start_temporary_server()
    from flows.rollback import rollback_flow

    with flow_api(server):
        result = rollback_flow(
            config=cfg.model_dump(mode="json"), to=to, actor="cli", reason=reason
        )
    console.print(f"champion: {result.before} -> {result.after}")
    if result.url:
        console.print(f"serving {result.after} at {result.url}")


@app.command("schedule")
def schedule(
    cron: Annotated[
        str | None, typer.Option("--cron", help="Cron expression, e.g. '0 3 * * *'.")
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option("--interval", help="Run every N seconds instead of a cron.", min=1),
    ] = None,
    flow: Annotated[
        str, typer.Option("--flow", help="retrain, materialize or monitor (drift checks).")
    ] = "retrain",
    work_pool: Annotated[
        str | None,
        typer.Option(
            "--work-pool",
            help="Register on a Prefect server for this work pool's workers instead of serving here.",
        ),
    ] = None,
    start_server: Annotated[
        bool,
        typer.Option(
            "--start-server/--no-start-server",
            help="Without PREFECT_API_URL: start the workspace's Prefect server if needed.",
        ),
    ] = True,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Schedule a flow with a cron (or an interval) on a real Prefect server.

    The server is $PREFECT_API_URL, else this workspace's own (`recops server start`; started
    here unless --no-start-server, which then fails with the command to run). Without
    --work-pool this process serves the schedule (flow.serve) until stopped. With
    --work-pool it registers a deployment and exits; start workers with
    `prefect worker start --pool NAME` (see prefect.yaml and infra/README.md). The retrain
    deployment also starts when a `recops.retrain.requested` event arrives (new data or drift);
    a scheduled monitor flow checks drift and sends that event when it is due.
    """
    from components.errors import ConfigError
    from flows.schedules import (
        ENTRYPOINTS,
        deploy_to_work_pool,
        flow_choices,
        serve_on_schedule,
        validate_cron,
    )
    from flows.server import require_server, using_api

    if (cron is None) == (interval is None):
        raise ConfigError("give exactly one of --cron or --interval")
    if cron is not None:
        validate_cron(cron)
    if flow not in ENTRYPOINTS:
        raise ConfigError(f"unknown flow {flow!r}; {flow_choices()}")
    cfg = _pinned_workspace(config, overrides, workspace)
    ws = open_workspace(cfg)
    parameters = {"config": cfg.model_dump(mode="json")}
    url = require_server(ws, start=start_server)
    when = f"'{cron}'" if cron else f"every {interval:g}s"
    with using_api(url):
        if work_pool:
            if cron is None:
                raise ConfigError("--work-pool deployments take --cron")
            deployment_id = deploy_to_work_pool(flow, cron, parameters, work_pool, ws)  # type: ignore[arg-type]
            console.print(f"deployment {deployment_id} scheduled {when} on work pool {work_pool}")
            return
        console.print(
            f"serving recops-{flow} {when} on the Prefect server at {url} "
            "(Ctrl-C stops; the schedule stays active)"
        )
        serve_on_schedule(flow, parameters, ws, cron=cron, interval_s=interval)  # type: ignore[arg-type]


@bench_app.command("pipeline")
def bench_pipeline(
    data: DataOpt = None,
    fmt: FormatOpt = "auto",
    json_out: JsonOutOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workspace: WorkspaceOpt = None,
    lazy_server: Annotated[
        bool,
        typer.Option(
            "--lazy-server",
            help="Let Prefect start its temporary server at the first flow call (as before "
            "`recops run` started it early), to measure the difference.",
        ),
    ] = False,
) -> None:
    """Run the retrain flow once; print wall time per stage and the orchestration share."""
    from flows.temporary_server import start_temporary_server

    cfg = _pinned_workspace(config, overrides, workspace)
    # as `recops run` does: the server starts while the modules below import
    server = None if lazy_server else start_temporary_server()
    from benchmarks.pipeline import run_pipeline_benchmark

    run_pipeline_benchmark(cfg, data, fmt, json_out, server)
