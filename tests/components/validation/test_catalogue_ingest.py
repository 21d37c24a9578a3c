"""Item catalogue batches through ingest: real GX suite, real DVC versions, quarantine."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components.data.config import DataConfig
from components.errors import DataError, ValidationFailed
from components.lifecycle.ingest import ingest_catalogue, ingest_events
from components.lifecycle.prepare import prepare_version
from components.validation.config import ValidationConfig
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore, dir_md5
from components.workspace import Workspace
from tests.components.validation.conftest import make_events

CONFIGS = (DataConfig(), ValidationConfig(), VersioningConfig())


def _catalogue(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    pd.DataFrame(rows, columns=["item_id", "title", "category"]).to_csv(path, index=False)
    return path


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace.at(tmp_path / "ws").ensure()
    ingest_events(make_events(), ws, *CONFIGS, batch_id="first")
    return ws


def test_a_clean_catalogue_is_versioned_with_the_events_and_read_back(
    ws: Workspace, tmp_path: Path
) -> None:
    store = DatasetStore(ws, VersioningConfig())
    before = store.current()
    rows = [(f"i{i}", f"title {i}", "c1") for i in range(40)] + [("new-1", "a new item", "c2")]
    result = ingest_catalogue(_catalogue(tmp_path / "items.csv", rows), ws, *CONFIGS)
    assert result.appended and result.report is not None and result.report.passed
    version = result.version
    assert version.version != before.version and version.parent == before.version
    assert version.batches == before.batches and version.n_rows == before.n_rows
    assert version.n_catalogue_items == 41 and dir_md5(ws.accepted_dir) == version.version
    # items no event mentions are a warning, reported and accepted
    assert [w.name for w in result.report.warnings] == ["catalogue_items_in_events"]
    # the same file again adds nothing
    again = ingest_catalogue(tmp_path / "items.csv", ws, *CONFIGS)
    assert not again.appended and again.version.version == version.version
    # training data of the version holds the catalogue; the cold item joins the vocabulary
    prepared = prepare_version(ws, DataConfig(), VersioningConfig(), version.version)
    assert prepared.catalogue is not None and len(prepared.catalogue) == 41
    assert "new-1" in prepared.vocab.items
    # a later events batch keeps the catalogue; the older version still reads its own
    later = ingest_events(make_events(seed=1, start="2025-07-01"), ws, *CONFIGS, batch_id="b2")
    assert later.version.catalogue_batches == version.catalogue_batches
    assert len(store.load_catalogue(later.version.version)) == 41
    assert store.load_catalogue(before.version) is None


@pytest.mark.parametrize(
    ("rows", "failed"),
    [
        ([("i1", "a", "c"), ("i1", "b", "c"), ("i2", "c", "c")], "catalogue_item_id_unique"),
        (
            [("i1", "", "c"), ("i2", "", "c"), ("i3", "x", "c")],
            "catalogue_text_share_above_minimum",
        ),
    ],
)
def test_a_bad_catalogue_is_quarantined_and_the_dataset_untouched(
    ws: Workspace, tmp_path: Path, rows: list[tuple[str, str, str]], failed: str
) -> None:
    before = dir_md5(ws.accepted_dir)
    path = _catalogue(tmp_path / "bad.csv", rows)
    with pytest.raises(ValidationFailed) as caught:
        ingest_catalogue(path, ws, *CONFIGS)
    assert failed in caught.value.message
    folder = Path(caught.value.quarantine_path)
    assert (folder / "bad.csv").read_bytes() == path.read_bytes()  # nothing lost
    report = json.loads((folder / "report.json").read_text())
    assert failed in [r["name"] for r in report["results"] if not r["success"]]
    assert dir_md5(ws.accepted_dir) == before
    assert DatasetStore(ws, VersioningConfig()).current().catalogue_batches == []


def test_an_unreadable_catalogue_is_quarantined_too(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "no-ids.csv"
    pd.DataFrame({"name": ["x"], "title": ["y"]}).to_csv(path, index=False)
    with pytest.raises(ValidationFailed) as caught:
        ingest_catalogue(path, ws, *CONFIGS)
    assert "file_loads_as_event_contract" in caught.value.message
    assert (Path(caught.value.quarantine_path) / "no-ids.csv").exists()


def test_a_catalogue_needs_events_first(tmp_path: Path) -> None:
    empty = Workspace.at(tmp_path / "empty").ensure()
    with pytest.raises(DataError, match="add events first|no dataset version"):
        ingest_catalogue(_catalogue(tmp_path / "i.csv", [("i1", "t", "c")]), empty, *CONFIGS)
