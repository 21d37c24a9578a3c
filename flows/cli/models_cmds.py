"""``recops models list|show|promote``: the model registry by hand.

``recops rollback`` lives in ``flows/cli/run_cmds.py`` (a Prefect flow that also redeploys);
the use case is :func:`components.lifecycle.rollback.rollback`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from flows.cli.app import WorkspaceOpt, console, models_app, open_workspace

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the history).")]


def _registry(workspace):
    from components.registry.store import ModelRegistry

    return ModelRegistry(open_workspace(workspace))


@models_app.command("list")
def models_list(workspace: WorkspaceOpt = None, as_json: JsonFlag = False) -> None:
    """Every registered model version: version, model, data version, NDCG@10, status, created."""
    versions = _registry(workspace).list()
    rows = [mv.summary() for mv in versions]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        console.print("no models registered yet (train one with `recops train`)")
        return
    header = (
        f"{'version':<18}{'model':<10}{'data version':<16}{'NDCG@10':>8}  {'status':<10}created"
    )
    typer.echo(header)
    for row in rows:
        ndcg = "-" if row["ndcg@10"] is None else f"{row['ndcg@10']:.4f}"
        typer.echo(
            f"{row['version']:<18}{row['model']:<10}{(row['data_version'] or '-')[:15]:<16}"
            f"{ndcg:>8}  {row['status']:<10}{row['created_at'][:19].replace('T', ' ')}"
        )


@models_app.command("show")
def models_show(
    version: Annotated[str, typer.Argument(help="Version (or a unique prefix, or the full tag).")],
    workspace: WorkspaceOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Lineage, metrics, gate decision and history of one model version."""
    registry = _registry(workspace)
    mv = registry.get(version)
    events = [e for e in registry.history() if e.version == mv.version]
    if as_json:
        payload = mv.model_dump(mode="json") | {
            "history": [e.model_dump(mode="json") for e in events]
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    rec = mv.record
    for key, value in (
        ("version", mv.version),
        ("tag", mv.tag),
        ("status", mv.status),
        ("model", mv.model_name),
        ("data version", rec.data_version or "-"),
        ("config hash", rec.config_hash),
        ("code rev", rec.code_rev),
        ("run id", rec.run_id),
        ("created", mv.created_at.isoformat(timespec="seconds")),
        ("train time", "-" if rec.train_seconds is None else f"{rec.train_seconds:.1f}s"),
        ("epochs", rec.epochs if rec.epochs is not None else "-"),
        ("path", mv.path),
    ):
        typer.echo(f"{key:>13}  {value}")
    for name, metrics in (("valid", rec.metrics_valid), ("test", rec.metrics_test)):
        shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k != "n_users")
        typer.echo(f"{'metrics ' + name:>13}  {shown or '-'}")
    if rec.gate:
        typer.echo("\ngate decision:")
        typer.echo(_gate_text(rec.gate))
    typer.echo("\nhistory:")
    for e in events:
        typer.echo(
            f"  {e.at.isoformat(timespec='seconds')}  {e.action:<15} by {e.actor}: {e.reason}"
        )


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
    reason: ReasonOpt = "",
    workspace: WorkspaceOpt = None,
) -> None:
    """Manual override: make VERSION the champion without the gate (recorded as manual)."""
    from components.lifecycle.promote import promote_by_hand
    from components.registry.changes import default_actor

    ws = open_workspace(workspace)
    change = promote_by_hand(ws, version, actor=default_actor(), reason=reason)
    typer.echo(change.describe())


def _gate_text(gate: dict) -> str:
    """The gate's table, or its raw JSON when it was not written by the gate."""
    from pydantic import ValidationError

    from components.evaluation.gate import GateDecision

    try:
        return GateDecision.model_validate(gate).table()
    except ValidationError:
        return json.dumps(gate, indent=2)
