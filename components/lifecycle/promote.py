"""Gate-and-promote: after the gate, deploy the challenger, then make it champion.

The only path that moves the champion after a gate decision (the retrain flow and the
CLI call it). Order matters: the version is deployed first through the deploy target and
the champion pointer moves after, so a deployment that fails leaves the old version
serving and the old champion in the registry, with the failure recorded as a rejection.
Every transition goes through :mod:`components.registry.changes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from filelock import FileLock

from components.deploy.targets import Deployed
from components.errors import DeployFailed
from components.evaluation.gate import GateDecision
from components.registry.changes import ChampionChange, apply_gate, promote_manually
from components.registry.store import ModelRegistry
from components.workspace import Workspace

PROMOTION_TIMEOUT_S = 3600

#: deploys one version in a workspace: a DeployTarget's ``deploy``, or a flow task around it
DeployStep = Callable[[Workspace, str], Deployed]


@dataclass(frozen=True)
class Promotion:
    """What gate-and-promote did: the registry change and, when promoted, the deployment."""

    status: Literal["champion", "rejected"]
    change: ChampionChange
    deployed: Deployed | None = None


@contextmanager
def promotion_lock(ws: Workspace) -> Iterator[None]:
    """Serialise gate -> deploy -> promote (and rollbacks): two concurrent runs never both
    compare against a champion that the other is about to replace."""
    ws.lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(ws.lock_dir / "promotion.lock"), timeout=PROMOTION_TIMEOUT_S):
        yield


def gate_and_promote(
    ws: Workspace, version: str, decision: GateDecision, deploy: DeployStep, *, actor: str
) -> Promotion:
    """Record the gate's decision on ``version``; when it passed, deploy first, then promote;
    when it did not, serve the champion again if another version serves
    (:mod:`components.lifecycle.reconcile`). Call it holding :func:`promotion_lock`.

    A failed deploy is recorded as a rejection (``deploy failed: ...``) and
    :class:`DeployFailed` propagates; serving and the champion are unchanged.
    """
    registry = ModelRegistry(ws)
    if not decision.promote:
        rejected = Promotion("rejected", apply_gate(registry, version, decision, actor=actor))
        # what serves must be the champion even when this run changes neither (a deploy
        # killed before its promote left another version serving)
        from components.lifecycle.reconcile import reconcile_locked

        reconcile_locked(ws, deploy, actor=actor)
        return rejected
    try:
        deployed = deploy(ws, version)
    except DeployFailed as exc:
        failed = decision.model_copy(
            update={"promote": False, "reasons": [f"deploy failed: {exc.message}"]}
        )
        apply_gate(registry, version, failed, actor=actor)
        raise
    change = apply_gate(registry, version, decision, actor=actor)
    return Promotion("champion", change, deployed)


def promote_by_hand(ws: Workspace, version: str, *, actor: str, reason: str = "") -> ChampionChange:
    """Manual override without a gate (recorded as such); deploy separately."""
    with promotion_lock(ws):
        return promote_manually(ModelRegistry(ws), version, actor=actor, reason=reason)
