"""Rollback: bring an earlier model back as champion and serve it again.

Deploy first (through the configured target), then move the champion pointer
(:func:`components.registry.changes.rollback_champion`): a failed deployment leaves the
current champion serving and in the registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.deploy.targets import Deployed
from components.errors import RegistryError
from components.lifecycle.promote import DeployStep, promotion_lock
from components.registry.changes import ChampionChange, rollback_champion
from components.registry.store import ModelRegistry
from components.workspace import Workspace


@dataclass(frozen=True)
class RolledBack:
    """The registry change and the deployment of the restored version."""

    change: ChampionChange
    deployed: Deployed


def rollback_target(ws: Workspace, to: str | None) -> tuple[str, str]:
    """(current champion, version to restore): ``to`` or the champion before the current."""
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


def rollback(
    ws: Workspace, deploy: DeployStep, to: str | None = None, *, actor: str, reason: str = ""
) -> RolledBack:
    """Deploy ``to`` (default: the previous champion), then make it champion again."""
    with promotion_lock(ws):
        current, target = rollback_target(ws, to)
        deployed = deploy(ws, target)
        change = rollback_champion(
            ModelRegistry(ws), to, actor=actor, reason=reason or f"rollback from {current}"
        )
    return RolledBack(change, deployed)
