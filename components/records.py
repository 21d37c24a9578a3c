"""The run record: one per training run, written once, read by registry, gate, service, CLI.

No stage re-derives what another already recorded: the registry stores this record as
the model's metadata, the gate adds its decision, the deploy step adds what it deployed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def code_revision(repo: Path | None = None) -> str:
    """Git revision of the recops code (``-dirty`` suffix when modified; ``unknown`` outside git)."""
    where = repo or Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


class RunRecord(BaseModel):
    """What one training run produced and where it came from."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    created_at: datetime = Field(default_factory=utc_now)
    model_name: str
    config: dict[str, Any]
    config_hash: str
    code_rev: str
    data_version: str | None = None
    split: dict[str, Any] = {}
    train_seconds: float | None = None
    epochs: int | None = None
    metrics_valid: dict[str, float] = {}
    metrics_test: dict[str, float] = {}
    #: one entry per validation (epoch, step, train_loss, ndcg@K, hr@K, lr, elapsed_s, eta_s)
    history: list[dict[str, float | None]] = []
    #: the model's learned logit offset for items already in the history (None: none)
    seen_offset: float | None = None
    #: test metrics by user history length and target-item popularity
    #: (``components.evaluation.breakdown``), ``{"history_length": [rows], ...}``
    breakdowns: dict[str, list[dict[str, Any]]] = {}
    #: the accepted batch's validation: summary, data_docs_path, n_rows (None: no new rows)
    validation: dict[str, Any] | None = None
    artifact_dir: str | None = None
    model_version: str | None = None  # registry tag once stored
    gate: dict[str, Any] | None = None
    deployed_version: str | None = None
    #: the split's labels with Feast's point-in-time user/item features (Parquet)
    training_features: str | None = None
    bento_tag: str | None = None
    deployed_at: datetime | None = None
    report_path: str | None = None
    #: candidate / champion / rejected once trained; ``running`` while it trains (with
    #: ``owner``), ``failed`` when training raised, ``interrupted`` when its process died
    status: str = "candidate"
    #: ``"<pid>:<create time>"`` of the training process while ``status`` is ``running``
    owner: str | None = None

    def save(self, path: str | Path) -> None:
        """Write the record whole or not at all (a kill or a full disk never tears it)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(self.model_dump_json(indent=2))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        return cls.model_validate_json(Path(path).read_text())


RUNNING = "running"
INTERRUPTED = "interrupted"
FAILED = "failed"  # training raised (the error went to the caller)
#: what an interrupted run leaves that nothing can use: a bundle being written and the
#: Lightning checkpoints (weights only, no optimizer state: not resumable)
_UNUSABLE = ("model", "checkpoints")


def recover_interrupted(record_path: Path) -> RunRecord | None:
    """Mark the run at ``record_path`` ``interrupted`` when it is ``running`` but its owner
    process is gone (a ``kill -9``, an OOM kill, a lost machine), and delete its half-written
    bundle and checkpoints. Returns the record when it changed it, else None."""
    from components.owner import owner_alive

    try:
        record = RunRecord.load(record_path)
    except (OSError, ValueError):
        return None
    if record.status != RUNNING or (record.owner and owner_alive(record.owner)):
        return None
    for name in _UNUSABLE:
        shutil.rmtree(record_path.parent / name, ignore_errors=True)
    for partial in record_path.parent.glob(".model.*.tmp"):
        shutil.rmtree(partial, ignore_errors=True)
    interrupted = record.model_copy(update={"status": INTERRUPTED, "owner": None})
    interrupted.save(record_path)
    return interrupted
