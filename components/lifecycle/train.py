"""Train: the configured model on a prepared split, with its run record.

``recops run`` (the flow's train task), ``recops train`` and ``recops stage train`` all
come here; the record (config, code revision, data version, metrics) is written next to
the bundle in ``run_dir``.

Item features reach models only through Feast: a model whose ``item_features`` include
``text`` or ``category`` gets them from the ``item_content`` feature view (offline store,
:func:`item_features`), published from the prepared catalogue when the workspace's store
does not hold it yet. The vectors are then saved with the bundle, so the bento needs
neither the catalogue nor an encoder. User history comes from the sequences, not from
Feast's user view: the zoo's sequence models take the whole ordered history as input, and
``recent_items`` is that same history truncated.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from components.config import RecopsConfig
from components.data.prepare import PreparedData
from components.errors import ConfigError
from components.evaluation.breakdown import breakdowns
from components.features.item_content import ItemContent
from components.owner import owner_marker
from components.records import (
    FAILED,
    INTERRUPTED,
    RUNNING,
    RunRecord,
    code_revision,
    recover_interrupted,
)
from components.training.ranks import is_rank_zero
from components.training.trainer import TrainResult, content_features, train_model
from components.workspace import Workspace

RUN_RECORD = "run_record.json"


@dataclass(frozen=True)
class TrainedRun:
    """A finished training run: the trainer's result and its record."""

    result: TrainResult
    record: RunRecord


def new_run_id() -> str:
    """``YYYYmmddTHHMMSS-<6 hex>`` in UTC: sortable and unique across concurrent runs."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def train(
    prepared: PreparedData,
    cfg: RecopsConfig,
    run_dir: Path,
    *,
    data_version: str | None = None,
    ws: Workspace | None = None,
) -> TrainedRun:
    """Train ``cfg.model`` with ``cfg.train`` on ``prepared``; save bundle and record in
    ``run_dir`` (the run id is the folder's name). ``ws`` (default: ``cfg.workspace``)
    holds the feature store the item features are read from.

    The record is written first with status ``running`` and this process as its owner,
    so a run killed mid-training is found by the next reader (``recops status``, the next
    training) and marked ``interrupted``, its half-written files deleted
    (:func:`components.records.recover_interrupted`). The next run starts from scratch:
    checkpoints hold weights only, and the next run's data version may differ.

    Under data-parallel training every rank runs this; only rank 0 recovers and writes
    records (the bundle too: :func:`components.training.trainer.train_model`)."""
    rank_zero = is_rank_zero()
    if rank_zero:
        recover_runs(run_dir.parent)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = RunRecord(
        run_id=run_dir.name,
        model_name=cfg.model.name,
        config=cfg.model_dump(mode="json"),
        config_hash=cfg.fingerprint(),
        code_rev=code_revision(),
        data_version=data_version,
        split=prepared.split.summary(),
        artifact_dir=str(run_dir),
        status=RUNNING,
        owner=owner_marker(),
    )
    _save(started, run_dir, rank_zero)
    try:
        content = item_features(ws or Workspace.at(cfg.workspace), cfg, prepared)
        result = train_model(prepared, cfg.model, cfg.train, cfg.eval, run_dir, content)
    except BaseException as exc:
        ended = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else FAILED
        with contextlib.suppress(OSError):  # a full disk may refuse this write too
            _save(started.model_copy(update={"status": ended, "owner": None}), run_dir, rank_zero)
        raise
    record = started.model_copy(
        update=dict(
            split=result.split_summary,
            train_seconds=result.train_seconds,
            epochs=result.epochs,
            metrics_valid=result.metrics_valid,
            metrics_test=result.metrics_test,
            history=finite_history(result.history),
            seen_offset=result.bundle.model.learned_seen_offset(),
            breakdowns=record_breakdowns(prepared, result),
            status="candidate",
            owner=None,
        )
    )
    _save(record, run_dir, rank_zero)
    return TrainedRun(result, record)


def _save(record: RunRecord, run_dir: Path, rank_zero: bool) -> None:
    """Write ``record`` into ``run_dir`` from the run's first process only."""
    if rank_zero:
        record.save(run_dir / RUN_RECORD)


def recover_runs(runs_dir: Path) -> list[RunRecord]:
    """Mark every run under ``runs_dir`` whose training process died ``interrupted``
    (and delete what it half wrote); the records it changed."""
    found = (recover_interrupted(path) for path in runs_dir.glob(f"*/{RUN_RECORD}"))
    return [record for record in found if record is not None]


def item_features(ws: Workspace, cfg: RecopsConfig, prepared: PreparedData) -> ItemContent | None:
    """The item content ``cfg.model`` asks for (None for an id-only model), aligned with
    ``prepared.vocab`` and read from Feast's offline store.

    The catalogue is published to the store first when the store holds another one (a
    digest of items, texts and encoder decides; texts are encoded once per text hash)."""
    from components.features.item_content import content_from_rows
    from components.features.store import item_content_rows, publish_item_content

    wanted = content_features(cfg.model)
    if not wanted:
        return None
    if prepared.catalogue is None:
        raise ConfigError(
            f"model.params.item_features={sorted(wanted)} needs an item catalogue "
            "(data.items, a RecBole .item file beside the events, or the synthetic data)"
        )
    if "text" in wanted and cfg.features.text_encoder == "none":
        raise ConfigError(
            "model.params.item_features has 'text' but features.text_encoder is none",
            hint="drop text from model.params.item_features or set features.text_encoder",
        )
    publish_item_content(ws, cfg.features, prepared.catalogue)
    rows = item_content_rows(ws, cfg.features, list(prepared.vocab.items))
    return content_from_rows(rows, prepared.vocab, with_text="text" in wanted)


def finite_history(history: list[dict[str, float]]) -> list[dict[str, float | None]]:
    """The per-epoch history with NaN/inf as None (JSON has no NaN)."""
    return [{k: v if math.isfinite(v) else None for k, v in entry.items()} for entry in history]


def record_breakdowns(
    prepared: PreparedData, result: TrainResult
) -> dict[str, list[dict[str, Any]]]:
    """Test metrics by history length, item popularity and target event type, as plain
    rows for the record (over the evaluated test set: every rank's users when sharded)."""
    tables = breakdowns(
        result.test_set,
        result.per_user_test,
        result.bundle.item_popularity,
        prepared.split.max_len,
        prepared.vocab.event_types,
    )
    return {name: [row.model_dump() for row in rows] for name, rows in tables.items()}
