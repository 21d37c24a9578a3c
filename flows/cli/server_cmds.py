"""``recops server start|stop|status``: this workspace's local Prefect server."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.app import JsonOutOpt, WorkspaceOpt, app, console, open_workspace, write_json

server_app = typer.Typer(
    help="The local Prefect server (schedules and automations need one): start, status, stop.",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")

PortOpt = Annotated[
    int | None,
    typer.Option("--port", help="Port for the API and UI (default 4200, else a free one)."),
]


@server_app.command("start")
def server_start(
    port: PortOpt = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the Prefect UI.")] = True,
    workspace: WorkspaceOpt = None,
) -> None:
    """Start a real `prefect server start` with its database and log in the workspace."""
    from flows.server import start_server

    ws = open_workspace(workspace)
    record, started = start_server(ws, host=host, port=port, ui=ui)
    verb = "started" if started else "already running"
    console.print(f"Prefect server {verb}: UI {record.ui_url}  API {record.api_url}")
    console.print(f"[dim]pid {record.process.pid}, log {record.process.log}[/dim]")


@server_app.command("status")
def server_status_cmd(workspace: WorkspaceOpt = None, json_out: JsonOutOpt = None) -> None:
    """Whether the workspace's Prefect server runs; exit code 1 when it does not."""
    from flows.server import server_status

    status = server_status(open_workspace(workspace))
    for key, value in status.items():
        console.print(f"{key:>15}: {value}")
    write_json(json_out, status)
    if not status["running"]:
        raise typer.Exit(1)


@server_app.command("stop")
def server_stop(workspace: WorkspaceOpt = None) -> None:
    """Stop the workspace's Prefect server (and every process it started)."""
    from flows.server import stop_server

    record = stop_server(open_workspace(workspace))
    if record is None:
        console.print("no Prefect server recorded in this workspace")
    else:
        console.print(f"stopped the Prefect server (pid {record.process.pid})")
