"""The Feast store on the local default (DuckDB offline store, SQLite online, file registry)."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from components.data.schema import ITEM, TIME, USER, normalize_events
from components.errors import FeatureStoreError
from components.features.config import FeaturesConfig
from components.features.store import (
    apply_repo,
    ensure_applied,
    feature_store,
    forget_stores,
    historical_features,
    is_reachable,
    materialize,
    online_recent_items,
    online_user_features,
    refresh_features,
    repo_config,
)
from components.workspace import Workspace


def test_online_store_returns_every_users_last_n_items(
    sqlite_store, tiny_events, reference_last_items
):
    workspace, cfg, _ = sqlite_store
    expected = reference_last_items(tiny_events, cfg.history_length)
    users = sorted(expected)
    got = online_recent_items(workspace, cfg, users + ["no-such-user"])
    assert {u: got[u] for u in users} == expected
    assert got["no-such-user"] == []


def test_state_lives_in_the_workspace(sqlite_store):
    workspace, cfg, _ = sqlite_store
    features_dir = workspace.features_dir
    assert (features_dir / "registry.db").exists()
    assert (features_dir / "online_store.db").exists()
    assert list((features_dir / "sources" / "user_features").glob("day=*/part-0.parquet"))
    assert repo_config(workspace, cfg).repo_path == features_dir


def test_materialize_result_records_end_and_row_counts(sqlite_store, tiny_events):
    _, _, result = sqlite_store
    by_view = {v.view: v for v in result.views}
    snapshots = tiny_events[[USER, TIME]].drop_duplicates()
    assert by_view["user_features"].rows == len(snapshots)
    assert by_view["user_features"].entities == tiny_events[USER].nunique()
    assert by_view["item_features"].entities == tiny_events[ITEM].nunique()
    assert result.end > tiny_events[TIME].max()
    assert all(v.start <= tiny_events[TIME].min() for v in result.views)


def test_online_user_features_are_the_latest_snapshot(sqlite_store, tiny_events):
    workspace, cfg, _ = sqlite_store
    user = str(tiny_events[USER].iloc[0])
    row = online_user_features(workspace, cfg, [user, "nobody"])
    mine = tiny_events[tiny_events[USER] == user]
    assert row[0][USER] == user
    assert row[0]["n_events"] == len(mine)
    assert row[0]["distinct_items"] == mine[ITEM].nunique()
    assert row[0]["last_event_unix"] == int(mine[TIME].max().timestamp())
    assert row[1]["recent_items"] is None and row[1]["n_events"] is None


def test_incremental_refresh_picks_up_new_events(tmp_path, tiny_events, reference_last_items):
    from components.workspace import Workspace

    workspace = Workspace.at(tmp_path / "ws").ensure()
    cfg = FeaturesConfig(history_length=3)
    cutoff = tiny_events[TIME].quantile(0.7)
    old = tiny_events[tiny_events[TIME] <= cutoff]
    first = refresh_features(old, workspace, cfg, end=cutoff + timedelta(seconds=1))
    later = tiny_events[TIME].max() + timedelta(seconds=1)
    second = refresh_features(tiny_events, workspace, cfg, end=later)
    assert all(v.start == first.end for v in second.views)
    new_rows = tiny_events[tiny_events[TIME] > cutoff][[USER, TIME]].drop_duplicates()
    assert {v.view: v.rows for v in second.views}["user_features"] == len(new_rows)
    expected = reference_last_items(tiny_events, 3)
    assert online_recent_items(workspace, cfg, sorted(expected)) == expected


def _user_events(rows):
    frame = pd.DataFrame(rows, columns=[USER, ITEM, TIME])
    return normalize_events(frame, source="pit-test")


def test_point_in_time_join_never_leaks_rows_from_or_after_the_label(tmp_path):
    from components.workspace import Workspace

    workspace = Workspace.at(tmp_path / "ws").ensure()
    cfg = FeaturesConfig(history_length=10)
    events = _user_events(
        [
            ("u1", "a", "2024-03-01T00:00:00Z"),
            ("u1", "b", "2024-03-02T00:00:00Z"),
            ("u1", "LABEL", "2024-03-03T00:00:00Z"),
            ("u1", "FUTURE", "2024-03-04T00:00:00Z"),
            ("u2", "x", "2024-03-05T00:00:00Z"),
        ]
    )
    refresh_features(events, workspace, cfg)
    entity_df = pd.DataFrame(
        {
            USER: ["u1", "u1", "u2", "u1"],
            ITEM: ["LABEL", "b", "x", "LABEL"],
            "event_timestamp": pd.to_datetime(
                [
                    "2024-03-03T00:00:00Z",
                    "2024-03-02T00:00:00Z",
                    "2024-03-04T00:00:00Z",
                    "2024-03-03T00:00:00Z",
                ],
                utc=True,
            ),
            "label": [1, 1, 1, 0],
        }
    )
    frame = historical_features(workspace, cfg, entity_df)
    assert len(frame) == 4 and frame["label"].tolist() == [1, 1, 1, 0]
    # the label event (stamped exactly at the entity time) and the later one never join
    assert list(frame.loc[0, "user_features__recent_items"]) == ["a", "b"]
    assert list(frame.loc[3, "user_features__recent_items"]) == ["a", "b"]
    assert frame.loc[0, "user_features__n_events"] == 2
    assert list(frame.loc[1, "user_features__recent_items"]) == ["a"]
    # the item's own popularity at its label time is not joined either: LABEL unseen before
    assert pd.isna(frame.loc[0, "item_features__n_events"])
    assert pd.isna(frame.loc[1, "item_features__n_events"])  # b's first event is the label
    # u2's only snapshot is after its entity time: the row is kept, with no features
    assert pd.isna(frame.loc[2, "user_features__n_events"])
    assert frame.loc[2, "item_features__n_events"] == 0 or pd.isna(
        frame.loc[2, "item_features__n_events"]
    )
    for recent in frame["user_features__recent_items"].dropna():
        assert "FUTURE" not in list(recent) and "LABEL" not in list(recent)


def test_user_only_entity_frame_uses_the_user_view(sqlite_store, tiny_events):
    workspace, cfg, _ = sqlite_store
    user = str(tiny_events[USER].iloc[0])
    mine = tiny_events[tiny_events[USER] == user].sort_values(TIME)
    at = mine[TIME].iloc[-1]
    frame = historical_features(workspace, cfg, pd.DataFrame({USER: [user], TIME: [at]}))
    assert "item_features__n_events" not in frame.columns
    before = mine[mine[TIME] < at][ITEM].astype(str).tolist()[-cfg.history_length :]
    assert list(frame.loc[0, "user_features__recent_items"]) == before


def test_windows_must_match_the_repo_declaration(workspace):
    cfg = FeaturesConfig(windows_days=[2, 14])
    with pytest.raises(FeatureStoreError, match="windows"):
        apply_repo(workspace, cfg)


def test_sql_registry_without_url_is_a_clear_error(workspace):
    with pytest.raises(FeatureStoreError, match="registry_path"):
        repo_config(workspace, FeaturesConfig(registry="sql"))


def test_readiness_needs_applied_and_materialized_features(workspace, tiny_events):
    cfg = FeaturesConfig(history_length=2)
    assert is_reachable(workspace, cfg) is False
    apply_repo(workspace, cfg)
    # applied but empty: every user would be a silent cold start, so not ready
    assert is_reachable(workspace, cfg) is False
    refresh_features(tiny_events, workspace, cfg)
    assert is_reachable(workspace, cfg) is True


def test_store_object_is_reused_per_workspace_and_config(sqlite_store):
    workspace, cfg, _ = sqlite_store
    assert feature_store(workspace, cfg) is feature_store(workspace, cfg.model_copy())
    other = cfg.model_copy(update={"registry_cache_ttl_seconds": 0})
    assert feature_store(workspace, other) is not feature_store(workspace, cfg)


def test_materialize_without_apply_explains_what_to_run(workspace):
    with pytest.raises(FeatureStoreError, match="not registered"):
        materialize(workspace, FeaturesConfig())


def test_arrow_and_feast_materialize_engines_agree(tmp_path, tiny_events):
    from components.workspace import Workspace

    sample = tiny_events[tiny_events[USER].isin(tiny_events[USER].unique()[:40])]
    answers = []
    for engine in ("arrow", "feast"):
        workspace = Workspace.at(tmp_path / engine).ensure()
        cfg = FeaturesConfig(history_length=6, materialize_engine=engine)
        result = refresh_features(sample, workspace, cfg)
        users = sorted(sample[USER].astype(str).unique())
        answers.append((online_user_features(workspace, cfg, users), result.rows))
        # recorded progress lets the next incremental run start where this one ended
        store = feature_store(workspace, cfg)
        assert store.get_feature_view("user_features").most_recent_end_time == result.end
    assert answers[0] == answers[1]


def test_feast_imports_without_typeguard_instrumentation_and_leaves_typeguard_as_it_was():
    """Feast's classes come in uninstrumented (typeguard's ``-O`` behaviour: 3.9 of the
    4.2 CPU s Feast's import costs), and ``typeguard.typechecked`` is the real decorator
    again afterwards, for every other library. Checked in a fresh interpreter: this one
    may have imported Feast already."""
    import subprocess
    import sys

    probe = (
        "import typeguard\n"
        "decorator = typeguard.typechecked\n"
        "from components.features.store import import_feast\n"
        "feast = import_feast()\n"
        "assert typeguard.typechecked is decorator\n"
        "assert import_feast() is feast\n"
        "print(' '.join(feast.FeatureView.__init__.__code__.co_names))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "check_argument_types_internal" not in done.stdout.split()


def test_an_unchanged_repo_is_applied_once_and_again_when_it_changes(tmp_path, tiny_events):
    workspace = Workspace.at(tmp_path / "ws").ensure()
    cfg = FeaturesConfig(history_length=2)
    registry = workspace.features_dir / "registry.db"
    try:
        assert ensure_applied(workspace, cfg) is True
        written = registry.stat().st_mtime_ns
        assert ensure_applied(workspace, cfg) is False  # same repo, config, workspace
        assert registry.stat().st_mtime_ns == written  # nothing was written
        refresh_features(tiny_events, workspace, cfg)  # the flow's path skips the apply too
        assert is_reachable(workspace, cfg)
        assert ensure_applied(workspace, FeaturesConfig(history_length=3)) is True
        forget_stores()
        registry.unlink()  # the registry lost: applied again although the digest matches
        assert ensure_applied(workspace, FeaturesConfig(history_length=3)) is True
        assert feature_store(workspace, FeaturesConfig(history_length=3)).get_feature_view(
            "user_features"
        )
    finally:
        forget_stores()
