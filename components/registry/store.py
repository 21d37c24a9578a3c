"""The model registry: a model directory per version + a champion pointer + an append-only history.

Weights, vocabulary and the run record of each training run live in their own folder,
``Workspace.registry_dir / "models" / <version>`` (``model.json`` holds the tag
``recops-<model name>:<version>``, labels - model name, data version, config hash, code
revision, status - and metadata - metrics per K, the gate decision). The registry owns
this layout; it never reaches into BentoML's store, whose only public way to choose a
store is ``BENTOML_HOME`` before first use (one per process). The bento build copies a
version into the workspace's BentoML model store with ``bentoml.models.create``
(:mod:`components.deploy.bento`). Versions registered by older recops releases, stored
inside ``bentoml/models/<name>/<version>``, are still read from there. Which version is
champion, and how it got there, lives in ``Workspace.registry_dir``:

* ``history.jsonl`` - append-only events (see :mod:`components.registry.history`), the
  source of truth for statuses and the champion;
* ``champion.json`` - the pointer, derived from the history, rewritten atomically;
* ``Workspace.lock_dir / "registry.lock"`` - every transition is one read-validate-
  append-pointer transaction under this file lock, so concurrent flows serialise.

Crash safety: a model is written (to a temporary folder, renamed into place) *before*
its ``register`` event (an orphan model without the event is invisible, never
half-registered); a transition is committed
by its history line alone, the pointer and the BentoML status label are repaired from
the history by the next transaction.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict

from components.errors import RegistryError
from components.faults import pause_point
from components.owner import owner_alive, owner_marker
from components.records import RunRecord
from components.registry.history import (
    Action,
    HistoryEvent,
    HistoryLog,
    ModeAction,
    RegistryState,
    Status,
    apply_event,
    replay,
    write_json_atomic,
)
from components.workspace import Workspace

if TYPE_CHECKING:
    from components.models.bundle import ModelBundle

log = logging.getLogger(__name__)

TAG_PREFIX = "recops-"
RECORD_FILE = "run_record.json"
MODEL_FILE = "model.json"  # tag, labels, metadata, created_at
OWNER_FILE = ".owner"  # in a staging folder: the registering process (components.owner)
STAGING_GRACE_S = 600.0  # a staging folder without an owner marker is left alone this long
LOCK_TIMEOUT_S = 120.0


class ModelVersion(BaseModel):
    """One registered model as the registry sees it now."""

    model_config = ConfigDict(extra="forbid")

    version: str  # the BentoML tag's version
    tag: str  # full BentoML tag, e.g. "recops-sasrec:abcd1234efgh5678"
    model_name: str
    status: Literal["candidate", "champion", "retired", "rejected"]
    created_at: datetime
    record: RunRecord  # with model_version / status / gate filled in
    path: str  # the BentoML model directory (the bundle is saved there)

    def summary(self, metric: str = "ndcg@10") -> dict[str, Any]:
        """Flat view for tables and ``--json``: version, model, data version, metric, status."""
        return {
            "version": self.version,
            "tag": self.tag,
            "model": self.model_name,
            "data_version": self.record.data_version,
            metric: self.record.metrics_test.get(metric),
            "status": self.status,
            "created_at": self.created_at.isoformat(),
        }


def tag_name_for(model_name: str) -> str:
    """BentoML tag name for a model family (lowercase, ``[a-z0-9_.-]``)."""
    slug = re.sub(r"[^a-z0-9_.-]+", "-", model_name.lower()).strip("-.") or "model"
    return f"{TAG_PREFIX}{slug}"


def _labels(record: RunRecord) -> dict[str, str]:
    return {
        "recops": "model",
        "model": record.model_name,
        "data_version": record.data_version or "none",
        "config_hash": record.config_hash,
        "code_rev": record.code_rev,
        "run_id": record.run_id,
        "status": "candidate",
    }


def _metadata(record: RunRecord) -> dict[str, Any]:
    """BentoML metadata (basic types only: BentoML refuses ``None``, so absent keys are left out)."""
    raw = {
        "created_at": record.created_at.isoformat(),
        "train_seconds": record.train_seconds,
        "epochs": record.epochs,
        "split": record.model_dump(mode="json")["split"],
        "metrics_valid": dict(record.metrics_valid),
        "metrics_test": dict(record.metrics_test),
    }
    return _bento_safe(raw)


def new_version() -> str:
    """A fresh version id: 16 lowercase base32 characters (a valid BentoML tag version)."""
    return base64.b32encode(uuid.uuid4().bytes).decode().lower()[:16]


def _bento_safe(value: Any) -> Any:
    """``value`` with ``None`` entries dropped (recursively): BentoML metadata refuses them."""
    if isinstance(value, dict):
        return {k: _bento_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_bento_safe(v) for v in value if v is not None]
    return value


class ModelRegistry:
    """Model versions with lineage, the champion pointer and its history (one workspace)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace.ensure()
        self._history = HistoryLog(workspace.registry_dir / "history.jsonl")
        self._pointer = workspace.registry_dir / "champion.json"
        self._lock = FileLock(str(workspace.lock_dir / "registry.lock"), timeout=LOCK_TIMEOUT_S)

    # --- storage --------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        """One folder per registered version (bundle files, run record, ``model.json``)."""
        return self.workspace.registry_dir / "models"

    def model_dir(self, tag: str) -> Path:
        """Where the model ``tag`` is stored: the registry's own folder, or for versions
        registered by older releases the BentoML model-store folder they were written to."""
        name, _, version = tag.partition(":")
        own = self.models_dir / version
        if own.is_dir():
            return own
        legacy = self.workspace.bentoml_home / "models" / name / version
        if legacy.is_dir():
            return legacy
        raise RegistryError(f"model {tag} is registered but its files are missing ({own})")

    @property
    def pointer_path(self) -> Path:
        """``champion.json``: ``{"version", "tag", "seq", "at"}`` or ``{"version": null}``."""
        return self._pointer

    @contextmanager
    def _transaction(self) -> Iterator[tuple[list[HistoryEvent], RegistryState]]:
        try:
            with self._lock:
                events = self._history.read()
                state = replay(events)
                self._sync_pointer(events, state)
                yield events, state
        except Timeout as exc:
            raise RegistryError(
                f"registry is locked by another process (waited {LOCK_TIMEOUT_S:.0f}s)",
                hint=f"lock file: {self._lock.lock_file}",
            ) from exc

    def _append(self, state: RegistryState, event: HistoryEvent) -> HistoryEvent:
        event = event.model_copy(update={"seq": state.last_seq + 1})
        self._history.append(event)
        apply_event(state, event)
        self._write_pointer(state)
        return event

    def _sync_pointer(self, events: list[HistoryEvent], state: RegistryState) -> None:
        """Repair the pointer if a crash left it behind the history."""
        try:
            current = json.loads(self._pointer.read_text()) if self._pointer.exists() else None
        except (OSError, ValueError):
            current = None
        if not events and current is None:
            return
        if current is None or current.get("version") != state.champion:
            log.warning("registry: champion pointer disagreed with the history; rewritten")
            self._write_pointer(state)

    def _write_pointer(self, state: RegistryState) -> None:
        tags = self._tags()
        champion = state.champion
        write_json_atomic(
            self._pointer,
            {
                "version": champion,
                "tag": tags.get(champion) if champion else None,
                "seq": state.champion_seq,
                "at": datetime.now().astimezone().isoformat(),
            },
        )

    def _tags(self) -> dict[str, str]:
        return {e.version: e.tag for e in self._history.read() if e.action == "register" and e.tag}

    # --- writing --------------------------------------------------------------------
    def register(self, bundle: ModelBundle, record: RunRecord) -> ModelVersion:
        """Store ``bundle`` (weights + vocabulary + config) and ``record`` as a new candidate.

        The model folder is written first, then the ``register`` event is appended; the
        returned version's record has ``model_version`` set.
        """
        version = new_version()
        tag = f"{tag_name_for(record.model_name)}:{version}"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._remove_dead_staging()
        staging = self.models_dir / f".{version}.tmp"
        staging.mkdir(parents=True)
        (staging / OWNER_FILE).write_text(owner_marker())
        bundle.save(staging)
        _store_serving_graph(bundle, staging)
        stored = record.model_copy(update={"model_version": version, "status": "candidate"})
        stored.save(staging / RECORD_FILE)
        write_json_atomic(
            staging / MODEL_FILE,
            {
                "tag": tag,
                "labels": _labels(record),
                "metadata": _metadata(record),
                "created_at": datetime.now().astimezone().isoformat(),
            },
        )
        pause_point("registry.before_publish")
        (staging / OWNER_FILE).unlink()
        os.replace(staging, self.models_dir / version)  # visible whole or not at all
        with self._transaction() as (_, state):
            self._append(
                state,
                HistoryEvent(
                    action="register",
                    version=version,
                    tag=tag,
                    previous_champion=state.champion,
                    actor=f"run:{record.run_id}",
                    reason=f"trained {record.model_name} on data {record.data_version or 'n/a'}",
                    metrics={"test": dict(record.metrics_test)},
                ),
            )
        log.info("registered %s (%s)", tag, record.model_name)
        return self.get(version)

    def _remove_dead_staging(self) -> None:
        """Delete the staging folders of registrations whose process died (a ``kill -9``
        mid-write); those of live processes (a concurrent register) stay."""
        for staging in self.models_dir.glob(".*.tmp"):
            try:
                alive = owner_alive((staging / OWNER_FILE).read_text())
            except OSError:  # no marker yet: a registration that just began, or died then
                alive = _age_s(staging) < STAGING_GRACE_S
            if not alive:
                log.warning("registry: removing %s, left by a killed registration", staging)
                shutil.rmtree(staging, ignore_errors=True)

    def promote(
        self, version: str, *, actor: str, reason: str, gate: dict[str, Any] | None = None
    ) -> ModelVersion:
        """Make ``version`` the champion (the old one is retired), atomically.

        With ``gate`` (the gate's decision) the event is ``promote``; without it the
        promotion is a manual override, recorded as ``manual_promote``.
        """
        action: Action = "promote" if gate is not None else "manual_promote"
        version = self._transition(
            action,
            version,
            actor=actor,
            reason=reason,
            gate=gate,
            refusal="{v} is already the champion",
        )
        log.info("%s: %s is champion (%s)", action, version, reason)
        return self.get(version)

    def reject(
        self, version: str, *, actor: str, reason: str, gate: dict[str, Any] | None = None
    ) -> ModelVersion:
        """Mark ``version`` rejected (never the champion) and record why."""
        version = self._transition(
            "reject",
            version,
            actor=actor,
            reason=reason,
            gate=gate,
            refusal="{v} is the champion and cannot be rejected; roll back first",
        )
        return self.get(version)

    def rollback(self, to: str | None = None, *, actor: str, reason: str = "") -> ModelVersion:
        """Bring back an earlier model: by default the champion before the current one.

        ``to`` may name any registered version other than the current champion. The
        replaced champion is retired.
        """
        with self._transaction() as (events, state):
            current = state.champion
            if current is None:
                raise RegistryError("there is no champion to roll back")
            target = state.previous_champion if to is None else self._resolve(events, to)
            if target is None:
                raise RegistryError(
                    f"{current} is the only champion so far; nothing to roll back to",
                    hint="name a version with --to",
                )
            if target == current:
                raise RegistryError(f"{target} is already the champion")
            self._append(
                state,
                HistoryEvent(
                    action="rollback",
                    version=target,
                    previous_champion=current,
                    actor=actor,
                    reason=reason or f"rollback from {current}",
                    metrics=self._both_sides(None, target, current, "restored", "replaced"),
                ),
            )
            self._mirror_statuses(state, {target, current})
        log.info("rollback: %s -> %s", current, target)
        return self.get(target)

    def record_mode(
        self,
        action: ModeAction,
        version: str,
        *,
        actor: str,
        reason: str,
        metrics: dict[str, Any] | None = None,
    ) -> HistoryEvent:
        """Record that ``version`` started serving beside the champion as a shadow or canary,
        or stopped (``metrics``: the online evidence so far); statuses do not change."""
        with self._transaction() as (events, state):
            version = self._resolve(events, version)
            return self._append(
                state,
                HistoryEvent(
                    action=action,
                    version=version,
                    previous_champion=state.champion,
                    actor=actor,
                    reason=reason,
                    metrics=metrics or {},
                ),
            )

    def record_reconcile(self, champion: str, served: str, *, actor: str, reason: str) -> None:
        """Record that ``champion`` was deployed again in place of ``served`` (no status
        changes; refused when ``champion`` is no longer the champion)."""
        with self._transaction() as (_, state):
            if state.champion != champion:
                raise RegistryError(f"{champion} is no longer the champion ({state.champion} is)")
            self._append(
                state,
                HistoryEvent(
                    action="reconcile",
                    version=champion,
                    previous_champion=champion,
                    actor=actor,
                    reason=reason,
                    metrics={"replaced_serving": served},
                ),
            )

    def _transition(
        self,
        action: Action,
        version: str,
        *,
        actor: str,
        reason: str,
        gate: dict[str, Any] | None,
        refusal: str,
    ) -> str:
        """One promote/reject/retire transaction; refuses (``refusal``) on the champion."""
        with self._transaction() as (events, state):
            version = self._resolve(events, version)
            previous = state.champion
            if previous == version:
                raise RegistryError(refusal.format(v=version))
            metrics = (
                {}
                if action == "retire"
                else self._both_sides(gate, version, previous, "challenger", "champion")
            )
            self._append(
                state,
                HistoryEvent(
                    action=action,
                    version=version,
                    previous_champion=previous,
                    actor=actor,
                    reason=reason,
                    metrics=metrics,
                    gate=gate,
                ),
            )
            self._mirror_statuses(state, {version, previous})
        return version

    # --- reading --------------------------------------------------------------------
    def history(self) -> list[HistoryEvent]:
        """Every event, oldest first."""
        return self._history.read()

    def state(self) -> RegistryState:
        """Statuses and champion lineage replayed from the history."""
        return replay(self._history.read())

    def champion(self) -> ModelVersion | None:
        """The current champion (from the history, never from a possibly stale pointer)."""
        champion = self.state().champion
        return self.get(champion) if champion else None

    def list(self) -> list[ModelVersion]:
        """Every registered version, oldest first (models missing from the store are skipped)."""
        events = self._history.read()
        state = replay(events)
        out: list[ModelVersion] = []
        for event in events:
            if event.action != "register":
                continue
            try:
                out.append(self._version_from_store(event, state))
            except RegistryError as exc:
                log.warning("registry: %s", exc)
        return out

    def get(self, version: str) -> ModelVersion:
        """The registered version ``version`` (a full tag or a unique version prefix works)."""
        events = self._history.read()
        version = self._resolve(events, version)
        event = next(e for e in events if e.action == "register" and e.version == version)
        return self._version_from_store(event, replay(events))

    def load_bundle(self, version: str, device: str = "cpu") -> ModelBundle:
        """Load the stored :class:`ModelBundle` of ``version`` onto ``device``.

        A corrupt or partial artifact is a one-line :class:`RegistryError`, not an
        unpickling traceback."""
        from components.models.bundle import ModelBundle

        found = self.get(version)
        try:
            return ModelBundle.load(Path(found.path), device)
        except Exception as exc:
            first = (str(exc).splitlines() or [""])[0][:200]
            raise RegistryError(
                f"model version {found.version} cannot be loaded from {found.path} "
                f"({exc.__class__.__name__}: {first})",
                hint="roll back with `recops rollback --to <version>` or let the next "
                "`recops run` replace it (its gate then compares with the baseline)",
            ) from exc

    def champion_bundle(self, device: str = "cpu") -> tuple[str | None, Any, str | None]:
        """(champion version, its bundle, why it could not be loaded).

        ``(None, None, None)`` without a champion; ``(version, None, error)`` when its
        artifact is corrupt or missing, so the gate can go on without it."""
        try:
            champion = self.champion()
        except RegistryError as exc:  # registered, but gone from the model store
            return self.state().champion, None, exc.message
        if champion is None:
            return None, None, None
        try:
            return champion.version, self.load_bundle(champion.version, device), None
        except RegistryError as exc:
            return champion.version, None, exc.message

    # --- helpers --------------------------------------------------------------------
    def _resolve(self, events: Sequence[HistoryEvent], ref: str) -> str:
        registered = [e.version for e in events if e.action == "register"]
        ref = ref.split(":", 1)[1] if ":" in ref else ref
        if ref in registered:
            return ref
        matches = [v for v in registered if v.startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise RegistryError(f"version prefix {ref!r} is ambiguous: {', '.join(matches)}")
        raise RegistryError(f"no registered model version {ref!r}", hint="see `recops models list`")

    def _version_from_store(self, event: HistoryEvent, state: RegistryState) -> ModelVersion:
        assert event.tag is not None
        directory = self.model_dir(event.tag)
        status: Status = state.statuses.get(event.version, "candidate")
        record = RunRecord.load(directory / RECORD_FILE).model_copy(
            update={
                "model_version": event.version,
                "status": status,
                "gate": state.gates.get(event.version),
            }
        )
        return ModelVersion(
            version=event.version,
            tag=event.tag,
            model_name=record.model_name,
            status=status,
            created_at=_created_at(directory, record),
            record=record,
            path=str(directory),
        )

    def _stored_metrics(self, version: str | None) -> dict[str, float] | None:
        if version is None:
            return None
        for event in self._history.read():
            if event.action == "register" and event.version == version:
                return dict(event.metrics.get("test", {}))
        return None

    def _both_sides(
        self,
        gate: dict[str, Any] | None,
        version: str,
        other: str | None,
        name: str,
        other_name: str,
    ) -> dict[str, Any]:
        """Metrics on both sides of a transition: the gate's re-scored numbers when there
        is a gate decision, else the stored test metrics of each version."""
        if gate is not None and "challenger" in gate:
            return {name: gate.get("challenger"), other_name: gate.get("champion")}
        return {name: self._stored_metrics(version), other_name: self._stored_metrics(other)}

    def _mirror_statuses(self, state: RegistryState, versions: set[str | None]) -> None:
        """Copy status (and gate) into each model's ``model.json`` labels, best effort.

        The history stays the truth; this keeps a model folder self-describing (and the
        labels the bento build hands to BentoML informative).
        """
        tags = self._tags()
        for version in versions:
            if version is None or version not in tags:
                continue
            path = self.models_dir / version / MODEL_FILE
            try:
                info = json.loads(path.read_text())
                info.setdefault("labels", {})["status"] = state.statuses.get(version, "candidate")
                if version in state.gates:
                    info.setdefault("metadata", {})["gate"] = _bento_safe(state.gates[version])
                write_json_atomic(path, info)
            except (OSError, ValueError) as exc:
                log.warning("registry: could not mirror status into %s: %s", path, exc)


def _store_serving_graph(bundle: Any, directory: Path) -> None:
    """The bundle's ONNX serving graph, exported and checked once here rather than at
    every process start or hot swap (components/models/onnx_scorer.py); a model that
    cannot have one is recorded as such, and serving takes the trace. The explanation
    path's deletion graph likewise (components/explain/compiled.py)."""
    from components.models.bundle import ModelBundle

    if not isinstance(bundle, ModelBundle):
        return
    from components.explain.compiled import store_deletion_graph
    from components.models.onnx_scorer import store_graph

    with _one_torch_thread():
        refused = store_graph(bundle.model, bundle.uses_events, directory)
        if refused is not None:
            log.info("no ONNX serving graph for %s: %s", bundle.model_name, refused)
        refused = store_deletion_graph(bundle.model, bundle.uses_events, directory)
        if refused is not None:
            log.info("no ONNX deletion graph for %s: %s", bundle.model_name, refused)


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """One torch thread while the graphs are exported and checked (restored after): the
    checks' small eager calls with two threads spin on each other on a loaded 2-core
    machine (a tiny SASRec's two graphs: 17 s against 2.4 s at load 9)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def model_info(directory: Path) -> dict[str, Any]:
    """``model.json`` of a stored version (tag, labels, metadata); ``{}`` for legacy ones."""
    try:
        return dict(json.loads((directory / MODEL_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def _created_at(directory: Path, record: RunRecord) -> datetime:
    raw = model_info(directory).get("created_at")
    return datetime.fromisoformat(raw) if isinstance(raw, str) else record.created_at
