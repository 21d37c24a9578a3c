"""DatasetStore with real DVC and git: versions, exact checkout, atomic accept."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from components.data.schema import STRING_DTYPE
from components.errors import VersioningError
from components.validation.report import ValidationReport
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import JOURNAL, DatasetStore, dir_md5
from components.workspace import Workspace


def _batch(n: int, offset: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series([f"u{i % 7}" for i in range(n)], dtype=STRING_DTYPE),
            "item_id": pd.Series([f"i{(i + offset) % 11}" for i in range(n)], dtype=STRING_DTYPE),
            "timestamp": pd.date_range("2025-01-01", periods=n, freq="min", tz="UTC")
            + pd.Timedelta(days=offset),
            "event_type": pd.Series(["view"] * n, dtype=STRING_DTYPE),
            "value": np.arange(n, dtype="float64"),
        }
    )


def _passed(batch_id: str, n: int) -> ValidationReport:
    return ValidationReport(
        batch_id=batch_id, passed=True, n_rows=n, n_users=7, n_items=11, results=[], summary="ok"
    )


@pytest.fixture
def store(tmp_path) -> DatasetStore:
    ws = Workspace.at(tmp_path / "ws").ensure()
    return DatasetStore(ws, VersioningConfig())


def _accept(store: DatasetStore, batch_id: str, n: int, offset: int):
    return store.accept(_batch(n, offset), batch_id, _passed(batch_id, n))


def test_versions_checkout_and_reading_old_versions(store):
    assert store.current() is None and store.versions() == []
    v1 = _accept(store, "b1", 30, 0)
    v2 = _accept(store, "b2", 20, 1)
    assert [v.version for v in store.versions()] == [v1.version, v2.version]
    assert store.current().version == v2.version and v2.n_rows == 50 and v2.parent == v1.version
    assert store.stats().batch_id == "b2" and store.stats().n_rows == 20
    # the local remote received the data
    assert any(p.is_file() for p in store.workspace.dvc_remote_dir.rglob("*"))

    old = store.load_events(v1.version)  # read from the DVC cache, no checkout
    pd.testing.assert_frame_equal(old, _batch(30, 0))

    restored = store.checkout(v1.version[:8])
    assert restored.version == v1.version
    assert dir_md5(store.workspace.accepted_dir) == v1.version
    assert sorted(p.name for p in store.workspace.accepted_dir.iterdir()) == ["b1.parquet"]
    assert store.current().version == v1.version
    pd.testing.assert_frame_equal(store.load_events(), _batch(30, 0))

    store.checkout(v2.version)
    assert dir_md5(store.workspace.accepted_dir) == v2.version
    assert len(store.load_events()) == 50


def test_unknown_and_ambiguous_versions_are_refused(store):
    _accept(store, "b1", 5, 0)
    with pytest.raises(VersioningError, match="no dataset version"):
        store.show("ffffffff")
    with pytest.raises(VersioningError, match="not a version id"):
        store.checkout("zz")


def test_failed_accept_leaves_previous_version_byte_identical(store):
    v1 = _accept(store, "b1", 10, 0)
    dvc_text = (store.workspace.data_dir / "accepted.dvc").read_text()
    unwritable = _batch(10, 3).assign(side=[object(), *range(9)])  # parquet cannot store object()
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own error type
        store.accept(unwritable, "b2", _passed("b2", 10))
    assert dir_md5(store.workspace.accepted_dir) == v1.version
    assert (store.workspace.data_dir / "accepted.dvc").read_text() == dvc_text
    assert [v.version for v in store.versions()] == [v1.version]
    with pytest.raises(VersioningError, match="already in dataset version"):
        store.accept(_batch(10, 4), "b1", _passed("b1", 10))
    with pytest.raises(VersioningError, match="did not pass"):
        store.accept(_batch(10, 4), "b3", _passed("b3", 10).model_copy(update={"passed": False}))


def test_interrupted_accept_is_rolled_back_on_next_call(store):
    v1 = _accept(store, "b1", 10, 0)
    # what a process killed between writing the batch and committing leaves behind
    _batch(5, 9).to_parquet(store.workspace.accepted_dir / "b-crash.parquet")
    (store.workspace.lock_dir / JOURNAL).write_text(json.dumps({"batch_id": "b-crash"}))
    v2 = _accept(store, "b2", 10, 1)
    assert v2.batches == ["b1", "b2"] and v2.parent == v1.version
    assert dir_md5(store.workspace.accepted_dir) == v2.version
    assert not (store.workspace.lock_dir / JOURNAL).exists()


def test_init_is_idempotent_and_sets_the_configured_remote(tmp_path):
    ws = Workspace.at(tmp_path / "ws").ensure()
    cfg = VersioningConfig(
        remote_url="s3://bucket/recops", remote_endpoint_url="http://minio:9000", push=False
    )
    store = DatasetStore(ws, cfg)
    store.init()
    store.init()
    config = (ws.data_dir / ".dvc" / "config").read_text()
    assert "s3://bucket/recops" in config and "http://minio:9000" in config
    v1 = _accept(store, "b1", 5, 0)  # push=False: nothing is sent to the (unreachable) remote
    assert store.current().version == v1.version
