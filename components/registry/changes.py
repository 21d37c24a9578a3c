"""Champion changes as single calls: what the CLI and the flows invoke.

Each function does one registry transition and returns a :class:`ChampionChange` that says
what changed (before, after, the history event), so callers can print it, attach it to a
Prefect artifact, or hand it to a redeploy step.
"""

from __future__ import annotations

import getpass
import os
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from components.registry.history import HistoryEvent, replay
from components.registry.store import ModelRegistry, ModelVersion

if TYPE_CHECKING:
    from components.evaluation.gate import GateDecision


class ChampionChange(BaseModel):
    """The outcome of one transition: the champion before and after, and the event."""

    model_config = ConfigDict(extra="forbid")

    before: str | None  # champion version before the transition
    after: str | None  # champion version after it
    version: ModelVersion  # the version the transition acted on
    event: HistoryEvent

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def describe(self) -> str:
        """One line for people: ``rollback: champion abc -> def (sasrec, data v3)``."""
        target = f"{self.version.model_name}, data {self.version.record.data_version or 'n/a'}"
        if self.changed:
            return (
                f"{self.event.action}: champion {self.before or '(none)'} -> {self.after} "
                f"({target})"
            )
        return f"{self.event.action}: {self.version.version} is {self.version.status} ({target})"


def default_actor(channel: str = "cli") -> str:
    """Who triggered a change, e.g. ``cli:alice`` (``$RECOPS_ACTOR`` overrides)."""
    override = os.environ.get("RECOPS_ACTOR")
    if override:
        return override
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{channel}:{user}"


def _change(registry: ModelRegistry, version: ModelVersion) -> ChampionChange:
    """The change made by the newest event on ``version``, read back from the history
    (before = that event's previous champion, after = the champion right after it)."""
    events = registry.history()
    event = next(e for e in reversed(events) if e.version == version.version)
    after = replay(events[: events.index(event) + 1]).champion
    return ChampionChange(before=event.previous_champion, after=after, version=version, event=event)


def rollback_champion(
    registry: ModelRegistry, to: str | None = None, *, actor: str, reason: str = ""
) -> ChampionChange:
    """Make the previous champion (or ``to``) champion again; see :meth:`ModelRegistry.rollback`."""
    return _change(registry, registry.rollback(to, actor=actor, reason=reason))


def promote_manually(
    registry: ModelRegistry, version: str, *, actor: str, reason: str = ""
) -> ChampionChange:
    """Manual override: promote ``version`` without a gate decision (recorded as such)."""
    mv = registry.promote(version, actor=actor, reason=reason or "manual promotion")
    return _change(registry, mv)


def apply_gate(
    registry: ModelRegistry, version: str, decision: GateDecision, *, actor: str
) -> ChampionChange:
    """Record a gate decision on a registered candidate: promote it or reject it, with the
    decision (numbers on both sides, reasons) stored in the history and on the model."""
    gate = decision.model_dump(mode="json")
    reason = "; ".join(decision.reasons)
    if decision.promote:
        mv = registry.promote(version, actor=actor, reason=reason, gate=gate)
    else:
        mv = registry.reject(version, actor=actor, reason=reason, gate=gate)
    return _change(registry, mv)
