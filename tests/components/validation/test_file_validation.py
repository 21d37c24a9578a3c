"""Validating a Parquet folder in hash passes gives the whole-frame report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from components.data.stream import BUDGET_KEY, GX_ROW_BYTES, plan_passes
from components.errors import DataError
from components.validation.config import ValidationConfig
from components.validation.runner import validate_event_files, validate_events
from components.workspace import Workspace
from tests.components.validation.conftest import make_events


def _write_parts(frame: pd.DataFrame, folder: Path, rows: int) -> Path:
    folder.mkdir()
    for number, lo in enumerate(range(0, len(frame), rows)):
        frame.iloc[lo : lo + rows].to_parquet(folder / f"part-{number:05d}.parquet", index=False)
    return folder


def _outcome(report) -> dict[str, tuple[bool, object]]:
    return {r.name: (r.success, r.observed) for r in report.results}


def test_passes_over_files_give_the_whole_frame_report(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws").ensure()
    clean = make_events(2700, seed=4)
    # a tenth of the rows repeated in a later file: duplicates across files and passes
    batch = pd.concat([clean, clean.iloc[:270]], ignore_index=True)
    batch.loc[5, "event_type"] = "teleport"
    folder = _write_parts(batch, tmp_path / "parts", 800)
    cfg = ValidationConfig(chunk_rows=5000)
    whole = validate_events(batch, cfg, ws, batch_id="whole")
    # 351 MB leaves under a megabyte per pass: two passes over four files
    assert plan_passes(len(batch), 60, 40, 0, 351, row_bytes=GX_ROW_BYTES).passes == 2
    passes = validate_event_files(folder, cfg, ws, batch_id="passes", memory_budget_mb=351)
    assert not whole.passed and not passes.passed
    assert _outcome(passes) == _outcome(whole)
    assert passes.n_chunks == 2 and whole.n_chunks == 1
    assert (passes.n_rows, passes.n_users, passes.n_items) == (
        whole.n_rows,
        whole.n_users,
        whole.n_items,
    )


def test_too_small_budget_names_the_config_key(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws").ensure()
    folder = _write_parts(make_events(300), tmp_path / "parts", 100)
    with pytest.raises(DataError, match=BUDGET_KEY.replace(".", r"\.")):
        validate_event_files(folder, ValidationConfig(), ws, batch_id="tiny", memory_budget_mb=64)
