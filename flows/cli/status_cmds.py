"""``recops status`` (one screen about a workspace) and ``recops report`` (a run's page)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from flows.cli.app import ConfigOpt, SetOpt, WorkspaceOpt, app, load_run_config, open_workspace
from flows.cli.run_cmds import print_lines


def _short(value: str | None, n: int = 12) -> str:
    return "-" if not value else value[:n]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def serving_line(serving: dict[str, Any]) -> str:
    """``<version> at <url>: healthy`` or what is wrong."""
    if not serving.get("deployed"):
        return "nothing deployed (a promoted `recops run` deploys, or `recops deploy`)"
    where = f"{serving['version']} at {serving['url']}"
    if serving.get("error"):
        return f"{where}: NOT ANSWERING ({serving['error']})"
    ready = serving.get("readyz")
    health = str(serving.get("health") or ("ok" if ready == 200 else "critical"))
    answering = serving.get("serving_version")
    mismatch = f", answers as {answering}" if answering and answering != serving["version"] else ""
    restarts = serving.get("restarts") or 0
    extra = f", {restarts} restarts" if restarts else ""
    return f"{where}: health {health} (readyz {ready}{mismatch}{extra})"


def status_lines(status: dict[str, Any]) -> list[str]:
    """The status screen as plain aligned lines (``status`` is WorkspaceStatus as JSON)."""
    champ = status["champion"]
    lines = [
        f"workspace    {status['workspace']}",
        f"serving      {serving_line(status['serving'])}",
        "champion     "
        + (
            "none yet"
            if champ is None
            else f"{champ['version']} ({champ['model_name']}, test ndcg@10 "
            f"{_num(champ.get('ndcg@10'))}, data {_short(champ.get('data_version'))})"
        ),
        f"last runs    {len(status['runs']) or 'none'}",
    ]
    for run in status["runs"]:
        lines.append(
            f"  {run['run_id']:<24} {run['model_name']:<9} {_short(run['model_version'], 16):<17}"
            f"{run['status']:<10} ndcg@10 {_num(run['ndcg_at_10'])}"
        )
    schedules = status["schedules"]
    lines.append(f"schedules    {len(schedules) or 'none'}" + _note(status["schedules_note"]))
    for s in schedules:
        state = "active" if s["active"] else "paused"
        lines.append(f"  {s['deployment']:<32} {', '.join(s['crons']) or '-':<16} {state}")
    versions = status["data_versions"]
    lines.append(f"data         {len(versions) or 'no'} versions")
    for v in versions[:5]:
        mark = "  <- current" if v["current"] else ""
        lines.append(
            f"  {v['version'][:12]}  {v['created_at'][:19]}  {v['n_rows']:>10,} events "
            f"{v['batches']:>4} batches{mark}"
        )
    quarantined = status["quarantined"]
    lines.append(f"quarantine   {len(quarantined) or 'none'}")
    lines += [f"  {q['batch_id']}: {q['summary']}" for q in quarantined[:5]]
    return lines


def _note(note: str | None) -> str:
    return f" ({note})" if note else ""


@app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    runs: Annotated[int, typer.Option("--runs", help="How many recent runs to list.")] = 5,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """One screen: serving version and health, champion, last runs, schedules, data, quarantine."""
    from components.status import workspace_status
    from flows.schedules import list_schedules

    cfg = load_run_config(config, set_, workspace)
    ws = open_workspace(cfg)
    status = workspace_status(ws, cfg, last_runs=runs)
    schedules, note = list_schedules(ws)
    status = status.model_copy(update={"schedules": schedules, "schedules_note": note})
    payload = status.model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    print_lines("recops status", status_lines(payload))


@app.command("report")
def report_cmd(
    run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix), or `latest`.")],
    open_: Annotated[bool, typer.Option("--open", help="Open the page in a browser.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print where a retrain run's HTML report is (rendered from its record if missing)."""
    from components.status import find_run, report_for

    ws = open_workspace(workspace)
    record = find_run(ws, run_id)
    path = report_for(ws, record)
    typer.echo(str(path))
    plots = sorted((path.parent / "plots").glob("*.png"))
    for plot in plots:
        typer.echo(f"  {plot}")
    if open_:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            from components.errors import RecopsError

            raise RecopsError(
                "no browser available to open the report",
                hint=f"open {path} on a machine with one",
            )
