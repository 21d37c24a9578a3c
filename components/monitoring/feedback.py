"""Feedback the bento logged becomes ordinary events: read the closed feedback parts not
ingested yet, in the event contract (``request_id`` kept as a side column), for the one
validated, versioned ingest path (``components.lifecycle.ingest.ingest_events``).

A ledger (``serving-log/feedback/ingested.jsonl``) records which parts went into which
batch (accepted or quarantined), so a part is never ingested twice and never dropped.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from components.data.schema import EVENT, ITEM, STRING_DTYPE, TIME, USER, VALUE
from components.monitoring.servelog import FEEDBACK, part_files
from components.workspace import Workspace

LEDGER = "ingested.jsonl"
REQUEST_ID = "request_id"


def feedback_dir(ws: Workspace) -> Path:
    return ws.serving_log_dir / FEEDBACK


def _ledger(ws: Workspace) -> Path:
    return feedback_dir(ws) / LEDGER


def ingested_parts(ws: Workspace) -> set[str]:
    """Names of the parts already handed to ingest (accepted or quarantined)."""
    path = _ledger(ws)
    if not path.exists():
        return set()
    done: set[str] = set()
    for line in path.read_text().splitlines():
        if line.strip():
            done.update(json.loads(line)["parts"])
    return done


def pending_parts(ws: Workspace) -> list[Path]:
    """Closed feedback parts not ingested yet, oldest first."""
    done = ingested_parts(ws)
    return [p for p in part_files(feedback_dir(ws), FEEDBACK) if p.name not in done]


def feedback_events(parts: list[Path]) -> pd.DataFrame:
    """The parts' rows in the event contract plus ``request_id``."""
    table = pq.read_table([str(p) for p in parts]) if parts else None
    frame = table.to_pandas() if table is not None else pd.DataFrame()
    return pd.DataFrame(
        {
            USER: frame.get(USER, pd.Series(dtype=object)).astype(STRING_DTYPE),
            ITEM: frame.get(ITEM, pd.Series(dtype=object)).astype(STRING_DTYPE),
            TIME: pd.to_datetime(
                frame.get(TIME, pd.Series(dtype="datetime64[ns, UTC]")), utc=True
            ).astype("datetime64[ns, UTC]"),
            EVENT: frame.get(EVENT, pd.Series(dtype=object)).astype(STRING_DTYPE),
            VALUE: pd.to_numeric(frame.get(VALUE, pd.Series(dtype="float64"))).astype("float64"),
            REQUEST_ID: frame.get(REQUEST_ID, pd.Series(dtype=object)).astype(STRING_DTYPE),
        }
    )


def mark_ingested(ws: Workspace, parts: list[Path], batch_id: str, outcome: str) -> None:
    """Append one ledger line: these parts went into ``batch_id`` (accepted/quarantined)."""
    entry = {
        "parts": [p.name for p in parts],
        "batch_id": batch_id,
        "outcome": outcome,
        "at": datetime.now(timezone.utc).isoformat(),
    }
    with _ledger(ws).open("a") as fh:
        fh.write(json.dumps(entry) + "\n")
