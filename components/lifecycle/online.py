"""Online challenge: a challenger served beside the champion (shadow or canary), compared
from the serving and feedback logs, and concluded.

``start`` attaches the challenger through the deploy target (``deploy.mode``);
``compare`` reads what both versions answered since it was attached and the feedback on
those answers (:func:`components.deploy.online.compare`) from the serving log the target
names (local: the workspace's, with the proxy's counters; k8s: the claim both arms
share, as this machine sees it); ``conclude`` acts on the
decision through the normal gate-and-promote path (:mod:`components.lifecycle.promote`):
*promote* deploys the challenger as champion (the deploy stops the shadow/canary first)
and records the online evidence as the gate decision in the registry history; *retire*
stops it and records it as rejected with the same evidence. An undecided comparison is
refused unless a decision is forced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from components.deploy.config import ChallengerConfig
from components.deploy.online import OnlineComparison, compare
from components.deploy.targets import Attachment, ChallengerMode, Deployed, DeployTarget
from components.errors import DeployFailed
from components.evaluation.gate import GateDecision
from components.lifecycle.promote import Promotion, gate_and_promote, promotion_lock
from components.monitoring.report import read_logs
from components.registry.changes import apply_gate
from components.registry.store import ModelRegistry
from components.workspace import Workspace

Forced = Literal["auto", "promote", "retire"]


@dataclass(frozen=True)
class Concluded:
    """What ``conclude`` did, and the comparison it acted on."""

    decision: Literal["promote", "retire"]
    forced: bool
    comparison: OnlineComparison
    promotion: Promotion


def start(
    ws: Workspace, target: DeployTarget, version: str, mode: ChallengerMode, *, actor: str
) -> Deployed:
    """Serve ``version`` beside the champion as a ``mode`` challenger."""
    return target.attach(ws, version, mode, actor)


def attached(ws: Workspace, target: DeployTarget) -> Attachment:
    """The challenger attached through ``target``; :class:`DeployFailed` when none is."""
    found = target.challenger(ws)
    if found is None:
        raise DeployFailed(
            "no shadow or canary is attached",
            hint="start one: `recops deploy --version V --mode shadow`",
        )
    return found


def compare_online(ws: Workspace, target: DeployTarget, cfg: ChallengerConfig) -> OnlineComparison:
    """Champion vs the attached challenger from the logs since it was attached (the local
    proxy's counters too, where there is one)."""
    challenger = attached(ws, target)
    served, feedback = read_logs(ws, since=challenger.started_at, folder=challenger.serving_log_dir)
    return compare(
        served,
        feedback,
        mode=challenger.mode,
        champion=challenger.champion,
        challenger=challenger.version,
        k=cfg.k,
        alpha=cfg.alpha,
        min_lists=cfg.min_lists,
        proxy=challenger.proxy,
        max_error_rate=cfg.max_error_rate,
    )


def as_gate_decision(c: OnlineComparison, promote: bool, reasons: list[str]) -> GateDecision:
    """The comparison in the gate's record shape (stored in the registry history)."""
    metric = f"online_hit_rate@{c.k}"

    def side(arm_rate: float | None, lists: int, errors: float | None) -> dict[str, float]:
        out = {"lists_with_feedback": float(lists)}
        if arm_rate is not None:
            out[metric] = arm_rate
        if errors is not None:
            out["error_rate"] = errors
        return out

    return GateDecision(
        promote=promote,
        reasons=[f"online {c.mode}: {r}" for r in reasons],
        primary_metric=metric,
        reference="champion",
        challenger=side(
            c.challenger.hit_rate.value, c.challenger.hit_rate.n, c.challenger.error_rate
        ),
        champion=side(c.champion.hit_rate.value, c.champion.hit_rate.n, c.champion.error_rate),
        p_value=c.p_value,
        delta_ci=c.delta_ci,
        delta=c.delta,
        test=c.test,
        n_users=c.n,
    )


def conclude(
    ws: Workspace,
    target: DeployTarget,
    cfg: ChallengerConfig,
    *,
    actor: str,
    force: Forced = "auto",
    undecided: Literal["refuse", "retire"] = "refuse",
) -> Concluded:
    """Promote or retire the attached challenger on the online evidence (``force``
    overrides the decision; the record says it was forced). An undecided comparison is
    refused (:class:`DeployFailed`, the challenger stays) or, with ``undecided="retire"``
    (a window that ran out), retires it."""
    with promotion_lock(ws):
        challenger = attached(ws, target)
        comparison = compare_online(ws, target, cfg)
        decision = comparison.decision if force == "auto" else force
        if decision == "undecided" and undecided == "retire":
            decision = "retire"
            comparison.reasons.append("the observation window ended undecided")
        if decision == "undecided":
            raise DeployFailed(
                f"the online comparison is undecided: {'; '.join(comparison.reasons)}",
                hint="let it collect more feedback, or force --decision promote|retire",
            )
        reasons = comparison.reasons + ([f"decision forced: {force}"] if force != "auto" else [])
        gate = as_gate_decision(comparison, decision == "promote", reasons)
        if decision == "promote":
            promotion = gate_and_promote(ws, challenger.version, gate, target.deploy, actor=actor)
        else:
            target.detach(ws, f"{challenger.mode} retired: {'; '.join(reasons)}")
            change = apply_gate(ModelRegistry(ws), challenger.version, gate, actor=actor)
            promotion = Promotion("rejected", change)
    return Concluded(decision, force != "auto", comparison, promotion)
