"""Reconcile: serve the champion again when the local deployment serves another version.

The registry says what should serve; the deployment record says what does. They part
when a deploy is killed after its switch-over but before its promote (the new version
serves, the old one is still champion), or when someone serves a version by hand. The
next command that owns the promotion lock puts the champion back through the deploy
target and records a ``reconcile`` event in the registry history (which version served,
which serves now): ``recops serve reconcile`` does it on demand, and a retrain run whose
gate rejects its challenger does it before it ends. ``recops serve status`` reports the
disagreement (exit 1) and names this command. A version meant to serve for long is
promoted (``recops models promote``), not just deployed.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.deploy.local import read_state
from components.deploy.targets import Deployed
from components.lifecycle.promote import DeployStep, promotion_lock
from components.registry.store import ModelRegistry
from components.workspace import Workspace


@dataclass(frozen=True)
class Reconciled:
    """What a reconciliation replaced and what serves now."""

    served_before: str
    champion: str
    deployed: Deployed


def disagreement(ws: Workspace) -> tuple[str, str] | None:
    """``(served version, champion)`` when the local deployment serves another version
    than the champion; None when they agree or either is missing."""
    state = read_state(ws)
    champion = ModelRegistry(ws).state().champion
    served = state.version if state else None
    if served is None or champion is None or served == champion:
        return None
    return served, champion


def reconcile_locked(ws: Workspace, deploy: DeployStep, *, actor: str) -> Reconciled | None:
    """:func:`reconcile` for a caller that already holds the promotion lock."""
    found = disagreement(ws)
    if found is None:
        return None
    served, champion = found
    deployed = deploy(ws, champion)
    if deployed.target != "local":  # the local deployment was not touched: nothing to record
        return None
    ModelRegistry(ws).record_reconcile(
        champion,
        served,
        actor=actor,
        reason=f"{served} was serving while {champion} is the champion; the champion serves again",
    )
    return Reconciled(served, champion, deployed)


def reconcile(ws: Workspace, deploy: DeployStep, *, actor: str) -> Reconciled | None:
    """Deploy the champion when the local deployment serves another version, and record
    it (see module doc); None when they already agree."""
    with promotion_lock(ws):
        return reconcile_locked(ws, deploy, actor=actor)
