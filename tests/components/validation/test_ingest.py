"""Ingest with real GX and DVC: clean batches become versions, bad ones are quarantined."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components.data.config import DataConfig
from components.errors import ValidationFailed
from components.lifecycle.ingest import ingest_events
from components.validation.config import ValidationConfig
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore, dir_md5
from tests.components.validation.conftest import make_events


def _snapshot(ws) -> tuple[str, str, str]:
    """(md5 of the accepted folder, accepted.dvc text, versions index text)."""
    data = ws.data_dir
    return (
        dir_md5(ws.accepted_dir),
        (data / "accepted.dvc").read_text(),
        (data / "versions.jsonl").read_text(),
    )


def _write_parts(events, folder: Path, rows: int) -> Path:
    """``events`` as numbered Parquet parts of ``rows`` rows each in ``folder``."""
    folder.mkdir()
    for number, lo in enumerate(range(0, len(events), rows)):
        events.iloc[lo : lo + rows].to_parquet(folder / f"part-{number:05d}.parquet", index=False)
    return folder


def _future(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[:49, "timestamp"] = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=30)
    return frame


def _with(frame: pd.DataFrame, column: str, value, rows: slice = slice(0, 9)) -> pd.DataFrame:
    frame = frame.copy().astype({column: object})
    frame.loc[rows, column] = value
    return frame


BAD_BATCHES = {
    "missing_column": (lambda ev: ev.drop(columns=["item_id"]), "column_present_item_id"),
    "null_ids": (lambda ev: _with(ev, "user_id", None), "user_id_not_null"),
    "future_timestamps": (_future, "timestamp_not_in_future"),
    "unparseable_timestamps": (
        lambda ev: _with(ev, "timestamp", "not a time"),
        "timestamp_parseable",
    ),
    "unknown_event_type": (lambda ev: _with(ev, "event_type", "teleport"), "event_type_known"),
    "mass_duplicates": (
        lambda ev: pd.concat([ev.iloc[:200], ev.iloc[:200]], ignore_index=True),
        "duplicate_share_below_threshold",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_BATCHES))
def test_bad_file_is_quarantined_and_dataset_untouched(kind, accepted_ws, csv_of):
    make_bad, expected = BAD_BATCHES[kind]
    path = csv_of(make_bad(make_events(seed=5)), f"{kind}.csv")
    original = path.read_bytes()
    before = _snapshot(accepted_ws)

    with pytest.raises(ValidationFailed) as caught:
        ingest_events(
            path,
            accepted_ws,
            DataConfig(),
            ValidationConfig(),
            VersioningConfig(),
            batch_id=f"bad-{kind}",
        )

    err = caught.value
    assert expected in str(err)
    folder = Path(err.quarantine_path)
    assert folder.parent == accepted_ws.quarantine_dir and folder.name == f"bad-{kind}"
    assert (folder / path.name).read_bytes() == original
    assert path.read_bytes() == original
    report = json.loads(Path(err.report_path).read_text())
    assert report["passed"] is False
    assert expected in [r["name"] for r in report["results"] if not r["success"]]
    assert list((folder / "data_docs").glob("*.html"))
    assert _snapshot(accepted_ws) == before


def test_empty_file_is_quarantined(accepted_ws, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    before = _snapshot(accepted_ws)
    with pytest.raises(ValidationFailed, match="min_rows") as caught:
        ingest_events(
            path,
            accepted_ws,
            DataConfig(),
            ValidationConfig(),
            VersioningConfig(),
            batch_id="bad-empty",
        )
    assert (Path(caught.value.quarantine_path) / "empty.csv").exists()
    assert "file is empty" in Path(caught.value.report_path).read_text()
    assert _snapshot(accepted_ws) == before


def test_bad_dataframe_batch_is_quarantined_as_parquet(accepted_ws):
    bad = _with(make_events(seed=6), "item_id", None)
    with pytest.raises(ValidationFailed, match="item_id_not_null") as caught:
        ingest_events(
            bad,
            accepted_ws,
            DataConfig(),
            ValidationConfig(),
            VersioningConfig(),
            batch_id="bad-frame",
        )
    kept = pd.read_parquet(Path(caught.value.quarantine_path) / "events.parquet")
    assert len(kept) == len(bad) and kept["item_id"].isna().sum() == 10


def test_clean_batches_create_successive_versions(tmp_path, csv_of):
    ws_root = tmp_path / "ws"
    from components.workspace import Workspace

    ws = Workspace.at(ws_root).ensure()
    first = ingest_events(
        csv_of(make_events(seed=1)), ws, DataConfig(), ValidationConfig(), VersioningConfig()
    )
    assert first.report.passed and first.version.n_rows == 400
    assert len(first.version.version) == 32 and first.version.git_rev
    assert Path(first.report.data_docs_path).is_file()

    second = ingest_events(
        make_events(seed=2, start="2025-07-01"),
        ws,
        DataConfig(),
        ValidationConfig(),
        VersioningConfig(),
    )
    assert second.version.version != first.version.version
    assert second.version.parent == first.version.version
    assert second.version.batches == [first.batch_id, second.batch_id]
    assert second.version.n_rows == 800
    store = DatasetStore(ws, VersioningConfig())
    assert [v.version for v in store.versions()] == [first.version.version, second.version.version]
    assert dir_md5(ws.accepted_dir) == second.version.version


def test_drift_is_a_warning_by_default_and_a_failure_when_configured(accepted_ws):
    tiny = make_events(n=20, seed=7, start="2025-08-01")
    strict = ValidationConfig(drift_severity="failure", max_volume_change=5)
    with pytest.raises(ValidationFailed, match="volume_change_within_bounds"):
        ingest_events(
            tiny, accepted_ws, DataConfig(), strict, VersioningConfig(), batch_id="tiny-strict"
        )

    result = ingest_events(
        tiny, accepted_ws, DataConfig(), ValidationConfig(max_volume_change=5), VersioningConfig()
    )
    assert result.report.passed
    assert "volume_change_within_bounds" in [w.name for w in result.report.warnings]


def test_unknown_items_fail_against_a_catalogue(accepted_ws):
    events = make_events(seed=8, start="2025-09-01")
    catalogue = {f"i{i}" for i in range(20)}  # half of the 40 items are unknown
    with pytest.raises(ValidationFailed, match="unknown_item_share_below_threshold"):
        ingest_events(
            events,
            accepted_ws,
            DataConfig(),
            ValidationConfig(),
            VersioningConfig(),
            catalogue_items=catalogue,
        )


def test_corrupt_part_in_the_middle_rejects_the_whole_batch_naming_it(accepted_ws, tmp_path):
    events = make_events(seed=9)
    folder = _write_parts(events, tmp_path / "parts", rows=100)
    middle = folder / "part-00002.parquet"
    middle.write_bytes(middle.read_bytes()[:64])
    before = _snapshot(accepted_ws)
    with pytest.raises(ValidationFailed, match="file_loads_as_event_contract") as caught:
        ingest_events(
            folder,
            accepted_ws,
            DataConfig(),
            ValidationConfig(),
            VersioningConfig(),
            batch_id="bad-parts",
        )
    report = Path(caught.value.report_path).read_text()
    assert "part-00002.parquet: not a readable Parquet file" in report
    assert "batch row 201 onwards" in report
    assert (Path(caught.value.quarantine_path) / "parts" / "part-00001.parquet").exists()
    assert _snapshot(accepted_ws) == before


def test_stream_engine_versions_a_parquet_folder_like_the_frame_path(tmp_path):
    from components.versioning.dvc_store import events_digest
    from components.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws").ensure()
    events = make_events(600, seed=11)
    folder = _write_parts(events, tmp_path / "parts", rows=200)
    stream_cfg = DataConfig(engine="stream", memory_budget_mb=351)
    cfgs = (ValidationConfig(), VersioningConfig())
    got = ingest_events(folder, ws, stream_cfg, *cfgs, batch_id="streamed")
    assert got.appended and got.report.n_rows == 600
    store = DatasetStore(ws, VersioningConfig())
    stored = store.load_events(got.version.version)
    pd.testing.assert_frame_equal(stored[events.columns.tolist()], events)
    assert got.version.batch_digests["streamed"] == events_digest(events)
    # the same events through the in-memory path are recognised, not appended again
    again = ingest_events(events, ws, DataConfig(), *cfgs, batch_id="as-frame")
    assert not again.appended and again.same_as == "streamed"
    # a corrupt part: the whole batch is quarantined naming the file, nothing versioned
    (folder / "part-00001.parquet").write_bytes(b"garbage")
    before = _snapshot(ws)
    with pytest.raises(ValidationFailed, match="file_loads_as_event_contract") as caught:
        ingest_events(folder, ws, stream_cfg, *cfgs, batch_id="corrupt")
    assert (
        "part-00001.parquet: not a readable Parquet file"
        in Path(caught.value.report_path).read_text()
    )
    assert _snapshot(ws) == before


def test_stream_ingest_over_user_buckets_versions_the_same_events(tmp_path):
    from components.versioning.dvc_store import events_digest
    from components.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws").ensure()
    events = make_events(6000, seed=12)
    folder = _write_parts(events, tmp_path / "parts", rows=2000)
    # 351 MB leaves about a megabyte: validation and the digest take several passes,
    # each over its own user buckets (written once, removed afterwards)
    cfg = DataConfig(engine="stream", memory_budget_mb=351)
    got = ingest_events(folder, ws, cfg, ValidationConfig(), VersioningConfig(), batch_id="b")
    assert got.appended and got.report.n_rows == 6000
    assert got.version.batch_digests["b"] == events_digest(events)
    stored = DatasetStore(ws, VersioningConfig()).load_events(got.version.version)
    pd.testing.assert_frame_equal(stored[events.columns.tolist()], events)
    assert not any((ws.inbox_dir / ".buckets").iterdir())
