"""The rollback flow: bring an earlier model back as champion and serve it again.

Visible and auditable in Prefect like any other run; the use case is
:func:`components.lifecycle.rollback.rollback` (deploy through the configured target
first, then move the champion pointer: a failed deployment leaves the current champion
serving and in the registry).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from components.lifecycle.rollback import rollback
from components.workspace import Workspace
from flows.results import RollbackResult
from flows.retrain import resolve_config
from flows.tasks import deploy_version


@flow(
    name="recops-rollback",
    description="Restore an earlier model version as champion and redeploy it.",
)
def rollback_flow(
    config: dict[str, Any] | None = None,
    to: str | None = None,
    actor: str = "rollback-flow",
    reason: str = "",
) -> RollbackResult:
    """Roll the champion back to ``to`` (default: the previous champion) and redeploy."""
    logger = get_run_logger()
    cfg = resolve_config(config)
    ws = Workspace.at(cfg.workspace).activate()
    done = rollback(ws, lambda w, v: deploy_version(cfg, w, v), to, actor=actor, reason=reason)
    before, after = done.change.before, done.change.after
    logger.info("rolled back %s -> %s", before, after)
    create_markdown_artifact(
        key="recops-rollback",
        markdown=(
            f"# Rollback\n\n- from: `{before}`\n- to: `{after}` ({done.change.version.model_name})\n"
            f"- by: {actor}\n- deployed: {done.deployed.describe()}\n"
        ),
        description="champion rollback",
    )
    return RollbackResult(before=before, after=after, url=done.deployed.url)
