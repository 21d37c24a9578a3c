"""The item catalogue: loaders, rules (duplicates, empty texts, cold items), synthetic titles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.data.catalogue import (
    catalogue_from_config,
    check_catalogue,
    load_catalogue,
)
from components.data.config import CatalogueColumns, DataConfig, SyntheticConfig
from components.data.prepare import prepare
from components.data.synthetic import THEMES, synthetic_catalogue
from components.errors import DataError
from tests.components.models.conftest import cyclic_events


def test_recbole_item_file_gives_titles_with_year_and_genres(ml100k_inter: Path) -> None:
    catalogue = catalogue_from_config(DataConfig(path=str(ml100k_inter), format="recbole"))
    assert catalogue is not None and len(catalogue) == 1682
    toy = catalogue.set_index("item_id").loc["1"]
    assert toy["text"] == "Toy Story (1995)"
    assert toy["category"].split() == ["Animation", "Children's", "Comedy"]
    assert catalogue["item_id"].is_unique


def test_csv_catalogue_with_mapped_columns_joins_texts(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("sku,name,blurb,dept\nA1,Red mug,Holds tea,kitchen\nB2,,Blue pen,office\n")
    columns = CatalogueColumns(item_id="sku", text=["name", "blurb"], category="dept")
    catalogue = load_catalogue(path, columns)
    assert catalogue["text"].tolist() == ["Red mug. Holds tea", "Blue pen"]
    assert catalogue["category"].tolist() == ["kitchen", "office"]


def test_missing_catalogue_column_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("sku,name\nA1,Red mug\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['item_id'"):
        load_catalogue(path)


def test_rules_count_duplicates_empty_texts_and_cold_items() -> None:
    raw = pd.DataFrame(
        {
            "item_id": ["a", "b", "a", "c", "d"],
            "text": ["old a", "", "new a", "cold c", "cold d"],
            "category": ["x", "y", "x", "", "z"],
        }
    )
    accepted, report = check_catalogue(raw, pd.Series(["a", "b", "e"]))
    assert accepted.set_index("item_id").loc["a", "text"] == "new a"  # last row wins
    assert report.duplicate_ids == 1 and report.examples["duplicate_ids"] == ["a"]
    assert report.empty_text == 1 and report.examples["empty_text"] == ["b"]
    assert report.without_events == 2 and report.events_without_item == 1
    assert len(accepted) == 4  # nothing dropped except the superseded duplicate row


def test_catalogue_items_without_events_join_the_vocabulary() -> None:
    events = cyclic_events(30, 10, 6, seed=0)
    catalogue = pd.DataFrame(
        {"item_id": ["i000", "new-item"], "text": ["first", "brand new"], "category": ["", "c"]}
    )
    prepared = prepare(events, DataConfig(max_len=8), catalogue)
    assert "new-item" in prepared.vocab.items
    assert prepared.split.n_items == 11
    assert prepared.catalogue_report is not None
    assert prepared.catalogue_report.without_events == 1


def test_synthetic_titles_follow_the_taste_clusters() -> None:
    cfg = SyntheticConfig(n_items=200, n_clusters=6, seed=1)
    catalogue = synthetic_catalogue(cfg)
    assert len(catalogue) == 200 and catalogue["text"].str.len().gt(0).all()
    cluster = catalogue["category"].str[1:].astype(int).to_numpy()
    for k in range(6):
        words = set(THEMES[k])
        titles = catalogue.loc[cluster == k, "text"]
        assert all(words & set(t.split()) for t in titles)
    assert np.array_equal(catalogue["item_id"], synthetic_catalogue(cfg)["item_id"])
