"""Offline feature tables: exact values against plain per-row reference computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.data.schema import EVENT, ITEM, TIME, USER, normalize_events, sort_events
from components.features.tables import item_feature_table, user_feature_table

DAY = pd.Timedelta(days=1)


def _events(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[USER, ITEM, TIME])
    return normalize_events(frame, source="test")


def test_user_snapshot_holds_last_n_items_oldest_first_and_window_counts() -> None:
    events = _events(
        [
            ("u1", "a", "2024-01-01T00:00:00Z"),
            ("u1", "b", "2024-01-05T00:00:00Z"),
            ("u1", "a", "2024-01-09T12:00:00Z"),
            ("u1", "c", "2024-01-10T00:00:00Z"),
            ("u2", "z", "2024-01-02T00:00:00Z"),
        ]
    )
    table = user_feature_table(events, history_length=3, windows_days=[1, 7, 30])
    u1 = table[table[USER] == "u1"].reset_index(drop=True)
    assert [list(x) for x in u1["recent_items"]] == [
        ["a"],
        ["a", "b"],
        ["a", "b", "a"],
        ["b", "a", "c"],
    ]
    assert u1["n_events"].tolist() == [1, 2, 3, 4]
    assert u1["events_1d"].tolist() == [1, 1, 1, 2]  # 01-09 12:00 is within a day of 01-10
    assert u1["events_7d"].tolist() == [1, 2, 2, 3]  # 01-01 is more than 7 days before 01-09
    assert u1["events_30d"].tolist() == [1, 2, 3, 4]
    assert u1["distinct_items"].tolist() == [1, 2, 2, 3]
    assert u1["seconds_since_prev"].tolist() == [-1.0, 4 * 86400.0, 4.5 * 86400.0, 0.5 * 86400.0]
    assert str(table["event_timestamp"].dtype) == "datetime64[ns, UTC]"


def test_events_at_the_same_time_form_one_snapshot_in_input_order() -> None:
    events = _events(
        [
            ("u1", "a", "2024-01-01T00:00:00Z"),
            ("u1", "b", "2024-01-02T00:00:00Z"),
            ("u1", "c", "2024-01-02T00:00:00Z"),
        ]
    )
    table = user_feature_table(events, history_length=10, windows_days=[1])
    assert len(table) == 2
    assert list(table["recent_items"].iloc[-1]) == ["a", "b", "c"]
    assert table["n_events"].tolist() == [1, 3]


def _reference_user_rows(events: pd.DataFrame, n: int, windows: list[int]) -> pd.DataFrame:
    ordered = sort_events(events)
    rows = []
    for user, group in ordered.groupby(USER, sort=False):
        for ts in group[TIME].unique():
            upto = group[group[TIME] <= ts]
            row = {USER: user, "ts": ts, "recent": list(upto[ITEM].tail(n))}
            row["types"] = list(upto[EVENT].tail(n))
            row["n_events"] = len(upto)
            row["distinct"] = upto[ITEM].nunique()
            for w in windows:
                # whole-second resolution, as documented by the tables module
                secs = upto[TIME].astype("int64") // 10**9
                row[f"w{w}"] = int((secs > (ts.value // 10**9) - w * 86400).sum())
            rows.append(row)
    return pd.DataFrame(rows)


def test_user_table_matches_reference_on_synthetic_events(tiny_events: pd.DataFrame) -> None:
    sample = tiny_events[tiny_events[USER].isin(tiny_events[USER].unique()[:25])]
    table = user_feature_table(sample, history_length=4, windows_days=[1, 7])
    expected = _reference_user_rows(sample, 4, [1, 7])
    table = table.sort_values([USER, "event_timestamp"]).reset_index(drop=True)
    expected = expected.sort_values([USER, "ts"]).reset_index(drop=True)
    assert len(table) == len(expected)
    assert [list(x) for x in table["recent_items"]] == expected["recent"].tolist()
    assert [list(x) for x in table["recent_event_types"]] == expected["types"].tolist()
    assert len({t for x in expected["types"] for t in x}) > 1  # the sample has several types
    assert table["n_events"].tolist() == expected["n_events"].tolist()
    assert table["distinct_items"].tolist() == expected["distinct"].tolist()
    assert table["events_1d"].tolist() == expected["w1"].tolist()
    assert table["events_7d"].tolist() == expected["w7"].tolist()


def test_item_table_popularity_trend_and_category_from_events(tiny_events: pd.DataFrame) -> None:
    table = item_feature_table(tiny_events, windows_days=[1, 7, 30])
    assert len(table) == len(tiny_events[[ITEM, TIME]].drop_duplicates())
    last = table.sort_values("event_timestamp").groupby(ITEM).tail(1).set_index(ITEM)
    totals = tiny_events[ITEM].astype(str).value_counts()
    assert last["n_events"].to_dict() == totals.to_dict()
    assert (last["pop_1d"] <= last["pop_7d"]).all() and (last["pop_7d"] <= last["pop_30d"]).all()
    ratio = (last["pop_1d"] / 1) / (last["pop_30d"] / 30)
    np.testing.assert_allclose(last["trend"], ratio)
    categories = tiny_events.drop_duplicates(ITEM, keep="last").set_index(ITEM)["category"]
    assert last["category"].to_dict() == categories.astype(str).to_dict()
    firsts = tiny_events.groupby(ITEM)[TIME].min().astype("int64") // 10**9
    assert last["first_seen_unix"].to_dict() == {str(k): v for k, v in firsts.items()}


def test_item_side_table_supplies_genres_and_titles_like_ml100k() -> None:
    events = _events([("u1", "1", "2024-01-01T00:00:00Z"), ("u1", "2", "2024-01-02T00:00:00Z")])
    side = pd.DataFrame(
        {
            ITEM: ["1", "2"],
            "movie_title": ["Toy Story", "GoldenEye"],
            "class": [["Animation", "Comedy"], ["Action"]],
        }
    )
    table = item_feature_table(events, [1], item_side=side).set_index(ITEM)
    assert table.loc["1", "category"] == "Animation Comedy"
    assert table.loc["2", "title"] == "GoldenEye"


@pytest.mark.parametrize("n", [1, 50])
def test_recent_items_are_capped_at_history_length(tiny_events: pd.DataFrame, n: int) -> None:
    table = user_feature_table(tiny_events, history_length=n, windows_days=[30])
    lengths = table["recent_items"].list.len()
    assert lengths.max() <= n
    assert (lengths == np.minimum(table["n_events"], n)).all()
