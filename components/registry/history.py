"""The registry's append-only history and the state it implies.

The history (``history.jsonl`` in ``Workspace.registry_dir``) is the **source of truth**:
every registration, promotion, rejection, rollback and retirement is one JSON line, never
rewritten. Statuses and the champion are *derived* by replaying it (:func:`replay`); the
champion pointer file is a convenience copy that is verified against the replay and
repaired under the lock. A crash can therefore only lose the event being written:

* a torn last line (crash mid-write) is ignored on read and cut off before the next
  append;
* a crash after the append but before the pointer write leaves a stale pointer, which
  the next transaction rewrites from the replay.

Concurrency is handled by the caller (:class:`~components.registry.store.ModelRegistry`
holds a file lock around read-validate-append-pointer).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.errors import RegistryError
from components.records import utc_now

log = logging.getLogger(__name__)

Action = Literal[
    "register",
    "promote",
    "reject",
    "rollback",
    "retire",
    "manual_promote",
    # a challenger served beside the champion, and when it stopped (statuses unchanged)
    "shadow",
    "canary",
    "challenger_stop",
    # the champion deployed again because another version was serving (statuses
    # unchanged; components.lifecycle.reconcile)
    "reconcile",
]
ModeAction = Literal["shadow", "canary", "challenger_stop"]
Status = Literal["candidate", "champion", "retired", "rejected"]


class HistoryEvent(BaseModel):
    """One line of the registry history."""

    model_config = ConfigDict(extra="forbid")

    seq: int = 0  # position in the history, assigned on append (0-based)
    at: datetime = Field(default_factory=utc_now)
    action: Action
    version: str
    tag: str | None = None  # the BentoML tag (set on "register")
    previous_champion: str | None = None
    actor: str
    reason: str = ""
    metrics: dict[str, Any] = {}  # both sides where relevant: {"challenger": .., "champion": ..}
    gate: dict[str, Any] | None = None  # the gate decision behind a promote/reject


@dataclass
class RegistryState:
    """What the history implies: each version's status and the champion lineage.

    ``lineage`` is the stack of champions: a promotion pushes, a default rollback pops, and
    ``rollback --to`` an earlier champion pops back to it (to any other version, pushes).
    """

    statuses: dict[str, Status] = field(default_factory=dict)
    lineage: list[str] = field(default_factory=list)
    gates: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_seq: int = -1
    champion_seq: int | None = None

    @property
    def champion(self) -> str | None:
        return self.lineage[-1] if self.lineage else None

    @property
    def previous_champion(self) -> str | None:
        """The champion a default rollback returns to."""
        return self.lineage[-2] if len(self.lineage) >= 2 else None


def apply_event(state: RegistryState, event: HistoryEvent) -> None:
    """Advance ``state`` by one event (the one place that defines status transitions)."""
    v = event.version
    state.last_seq = event.seq
    if event.action == "register":
        state.statuses[v] = "candidate"
        return
    if event.gate is not None:
        state.gates[v] = event.gate
    if event.action == "reject":
        state.statuses[v] = "rejected"
    elif event.action == "retire":
        state.statuses[v] = "retired"
        # never the champion (the registry refuses that); a rollback will not return to it
        state.lineage = [x for x in state.lineage if x != v]
    elif event.action in ("promote", "manual_promote"):
        _crown(state, v, event.seq)
        state.lineage.append(v)
    elif event.action == "rollback":
        _crown(state, v, event.seq)
        earlier = [i for i, x in enumerate(state.lineage[:-1]) if x == v]
        if earlier:
            del state.lineage[earlier[-1] + 1 :]
        else:
            state.lineage.append(v)


def _crown(state: RegistryState, version: str, seq: int) -> None:
    old = state.champion
    if old is not None and old != version:
        state.statuses[old] = "retired"
    state.statuses[version] = "champion"
    state.champion_seq = seq


def replay(events: list[HistoryEvent]) -> RegistryState:
    """The registry state after ``events`` (in order)."""
    state = RegistryState()
    for event in events:
        apply_event(state, event)
    return state


class HistoryLog:
    """Append-only JSONL file of :class:`HistoryEvent`; callers hold the registry lock to write."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[HistoryEvent]:
        """All committed events. A last line without its newline (crash mid-append) is
        skipped with a warning; a malformed complete line is corruption (:class:`RegistryError`)."""
        if not self.path.exists():
            return []
        *complete, tail = self.path.read_bytes().split(b"\n")
        if tail.strip():
            # appends end with a newline, so a line without one was never committed
            log.warning("registry history: ignoring a torn last line (crash mid-write)")
        events: list[HistoryEvent] = []
        for number, raw in enumerate(complete, start=1):
            if not raw.strip():
                continue
            try:
                events.append(HistoryEvent.model_validate_json(raw))
            except ValidationError as exc:
                raise RegistryError(
                    f"registry history {self.path} is corrupt at line {number}"
                ) from exc
        return events

    def append(self, event: HistoryEvent) -> None:
        """Durably append one event (cuts off a torn tail first). Caller holds the lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        line = event.model_dump_json() + "\n"
        with self.path.open("ab") as fh:
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        log.warning("registry history: cutting a torn last line of %d bytes", len(data) - keep)
        with self.path.open("r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to ``path`` via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as fh:
        json.dump(payload, fh, indent=2, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
