"""The rollback flow: bring an earlier model back as champion and serve it again.

Visible and auditable in Prefect like any other run. Order matters: the earlier version
is deployed first (health-checked switch-over) and the champion pointer moves after, so a
failed deployment leaves both serving and registry as they were.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from components.errors import RegistryError
from components.workspace import Workspace
from flows.locks import promotion_lock
from flows.retrain import resolve_config
from flows.tasks import deploy_bento


@task(name="rollback-registry", retries=0, cache_policy=NO_CACHE)
def move_champion(ws: Workspace, target: str, actor: str, reason: str) -> dict[str, Any]:
    from components.registry.store import ModelRegistry

    version = ModelRegistry(ws).rollback(to=target, actor=actor, reason=reason)
    return {"version": version.version, "model_name": version.model_name}


def rollback_target(ws: Workspace, to: str | None) -> tuple[str, str]:
    """(current champion, version to restore): ``to`` or the champion before the current."""
    from components.registry.store import ModelRegistry

    registry = ModelRegistry(ws)
    state = registry.state()
    if state.champion is None:
        raise RegistryError("there is no champion to roll back")
    target = to if to is not None else state.previous_champion
    if target is None:
        raise RegistryError(
            f"{state.champion} is the only champion so far; nothing to roll back to",
            hint="name a version with --to",
        )
    return state.champion, registry.get(target).version


@flow(
    name="recops-rollback",
    description="Restore an earlier model version as champion and redeploy it.",
)
def rollback_flow(
    config: dict[str, Any] | None = None,
    to: str | None = None,
    actor: str = "rollback-flow",
    reason: str = "",
) -> dict[str, Any]:
    """Roll the champion back to ``to`` (default: the previous champion) and redeploy."""
    logger = get_run_logger()
    cfg = resolve_config(config)
    ws = Workspace.at(cfg.workspace).activate()
    with promotion_lock(ws):
        current, target = rollback_target(ws, to)
        deployed = None
        if cfg.deploy.target == "local":
            deployed = deploy_bento(cfg, ws, target)
        moved = move_champion(ws, target, actor, reason or f"rollback from {current}")
    logger.info("rolled back %s -> %s", current, target)
    create_markdown_artifact(
        key="recops-rollback",
        markdown=(
            f"# Rollback\n\n- from: `{current}`\n- to: `{target}` ({moved['model_name']})\n"
            f"- by: {actor}\n- serving: `{getattr(deployed, 'url', None) or 'not deployed (deploy.target)'}`\n"
        ),
        description="champion rollback",
    )
    return {"from": current, "to": target, "url": getattr(deployed, "url", None)}
