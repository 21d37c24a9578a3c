from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from components.data.config import ColumnMapping
from components.data.loaders import describe, detect_format, load_events, load_side_tables
from components.data.schema import CONTRACT_COLUMNS
from components.errors import DataError


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.data
def test_ml100k_recbole_counts(ml100k_inter: Path) -> None:
    events = load_events(ml100k_inter)
    stats = describe(events)
    assert events.attrs["format"] == "recbole"
    assert (stats["events"], stats["users"], stats["items"]) == (100_000, 943, 1_682)
    assert list(events.columns[:5]) == list(CONTRACT_COLUMNS)
    assert str(events["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert events["value"].between(1, 5).all()
    assert set(events["event_type"].unique()) == {"rating"}


@pytest.mark.data
def test_ml100k_side_tables(ml100k_inter: Path) -> None:
    side = load_side_tables(ml100k_inter)
    assert side.items is not None and len(side.items) == 1682
    assert {"item_id", "title", "genres"} <= set(side.items.columns)
    assert side.users is not None and len(side.users) == 943


@pytest.mark.data
def test_beauty_seq_counts_and_order(beauty_txt: Path) -> None:
    events = load_events(beauty_txt, "seq")
    stats = describe(events)
    assert (stats["events"], stats["users"], stats["items"]) == (198_502, 22_363, 12_101)
    assert events.attrs["ordinal_time"] is True
    first_line = beauty_txt.read_text().splitlines()[0].split()
    user_rows = events[events["user_id"] == first_line[0]].sort_values("timestamp", kind="stable")
    assert user_rows["item_id"].tolist() == first_line[1:]


def test_csv_with_column_mapping_and_iso_times(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ev.csv",
        "uid;iid;ts;kind\n1;a;2026-01-01T10:00:00Z;VIEW\n1;b;2026-01-01T10:05:00+01:00;click\n",
    )
    events = load_events(
        path, columns=ColumnMapping(user_id="uid", item_id="iid", timestamp="ts", event_type="kind")
    )
    assert events["user_id"].tolist() == ["1", "1"]
    assert events["event_type"].tolist() == ["view", "click"]
    assert events["timestamp"].iloc[1] == pd.Timestamp("2026-01-01T09:05:00Z")


def test_pairs_get_ordinal_time_in_file_order(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.txt", "1 10\n2 7\n1 3\n1 10\n")
    events = load_events(path)
    assert events.attrs["format"] == "pairs" and events.attrs["ordinal_time"]
    u1 = events[events["user_id"] == "1"].sort_values("timestamp", kind="stable")
    assert u1["item_id"].tolist() == ["10", "3", "10"]


def test_movielens_dat_and_csv(tmp_path: Path) -> None:
    dat = _write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    csv_ = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n")
    assert len(load_events(dat)) == 2 and detect_format(dat) == "movielens"
    assert load_events(csv_)["value"].tolist() == [3.5]


def test_parquet_roundtrip(tmp_path: Path, tiny_events: pd.DataFrame) -> None:
    path = tmp_path / "ev.parquet"
    tiny_events.to_parquet(path)
    loaded = load_events(path)
    assert len(loaded) == len(tiny_events)
    assert "category" in loaded.columns  # side columns survive


@pytest.mark.parametrize(
    ("name", "text", "fmt", "needle"),
    [
        ("empty.csv", "", "auto", "file is empty"),
        ("header_only.csv", "user_id,item_id,timestamp\n", "csv", "no events"),
        ("missing.csv", "user_id,timestamp\n1,5\n", "csv", "missing required column 'item_id'"),
        ("badts.csv", "user_id,item_id,timestamp\n1,a,5\n1,b,yesterday-ish\n", "csv", "data row 2"),
        ("mixed.csv", "user_id,item_id,timestamp\n1;a;5\n1,b,6\n", "csv", "line 2"),
        ("seq.txt", "u1 a b\nu2\n", "seq", "line 2"),
        ("nullid.csv", "user_id,item_id,timestamp\n1,a,5\n,b,6\n", "csv", "'user_id' is empty"),
    ],
)
def test_malformed_files_raise_clear_errors(
    tmp_path: Path, name: str, text: str, fmt: str, needle: str
) -> None:
    path = _write(tmp_path / name, text)
    with pytest.raises(DataError) as info:
        load_events(path, fmt)
    assert needle in str(info.value)
    assert str(path.name) in str(info.value)


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", "user_id,item_id,timestamp\n1,a,1\n")
    with pytest.raises(DataError, match="unknown format"):
        load_events(path, "xml")


@pytest.mark.parametrize(
    "values, row",
    [
        ([1_700_000_000, 1_700_000_000_000, 1_700_000_100], 2),  # milliseconds among seconds
        (["1700000000", "not a time", "1700000100"], 2),
        (["2024-01-01T00:00:00Z", "1e30", "1700000100"], 2),
    ],
)
def test_timestamps_out_of_range_or_unparseable_name_their_row(values: list, row: int) -> None:
    """Times pandas cannot represent (or parse) are one DataError naming the row, never a
    raw OutOfBoundsDatetime/FloatingPointError (pandas' own overflow check raises the
    latter for floats)."""
    from components.data.schema import parse_timestamps

    series = pd.Series(values, dtype=object if isinstance(values[0], str) else "int64")
    with pytest.raises(DataError, match=f"data row {row}: "):
        parse_timestamps(series, "events.csv")
