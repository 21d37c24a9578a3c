"""``kill -9`` of ``recops data add`` between ``dvc add`` and the data-repo commit."""

from __future__ import annotations

import shutil

import pytest

from components.config import RecopsConfig
from components.data.config import DataConfig
from components.lifecycle.ingest import batch_from_file, ingest
from components.status import data_versions
from components.validation.config import ValidationConfig
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace
from tests.faults.conftest import kill_at, rows

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _add(ws: Workspace, path):
    return ingest(batch_from_file(path), ws, DataConfig(), ValidationConfig(), VersioningConfig())


def test_killed_accepts_leave_nothing_half_done_and_nothing_twice(tmp_path, event_batches):
    week1, week2 = event_batches
    ws = Workspace.at(tmp_path / "ws").ensure()
    assert _add(ws, week1).appended

    store = DatasetStore(ws)
    for point in ("versioning.after_dvc_add", "versioning.before_commit"):
        kill_at(tmp_path, point, "data", "add", str(week2), "-w", str(ws.root))
        # the first call after the kill is a reader (what `recops data versions` runs, in
        # this process: one process start less): it recovers, never "no version"
        versions = data_versions(ws, RecopsConfig())
        assert [(v.n_rows, v.current) for v in versions] == [(rows(week1), True)], point

    assert _add(ws, week2).appended  # the next accept goes through without a human
    assert [v.n_rows for v in store.versions()] == [rows(week1), rows(week1) + rows(week2)]
    assert len(store.load_events()) == rows(week1) + rows(week2)

    # the same events again, under the same name or another one: not appended twice
    copy = tmp_path / "week2-copy.csv"
    shutil.copy(week2, copy)
    for path in (week2, copy):
        repeat = _add(ws, path)
        assert not repeat.appended and repeat.same_as is not None
    assert len(store.versions()) == 2 and len(store.load_events()) == rows(week1) + rows(week2)
