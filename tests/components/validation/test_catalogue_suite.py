"""The item catalogue GX suite: duplicate ids and missing text fail; cold items are warnings."""

from __future__ import annotations

import pandas as pd

from components.validation.config import ValidationConfig
from components.validation.runner import validate_catalogue
from components.workspace import Workspace


def _catalogue(ids: list[str], texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"item_id": ids, "text": texts, "category": ["c"] * len(ids)})


def test_catalogue_suite_fails_duplicates_and_warns_about_cold_items(
    workspace: Workspace,
) -> None:
    cfg = ValidationConfig()
    good = validate_catalogue(
        _catalogue(["a", "b", "new"], ["red mug", "blue pen", "green cup"]),
        cfg,
        workspace,
        batch_id="cat-good",
        event_items={"a", "b"},
    )
    assert good.passed
    by_name = {r.name: r for r in good.results}
    cold = by_name["catalogue_items_in_events"]
    assert not cold.success and cold.severity == "warning"  # reported, accepted
    bad = validate_catalogue(
        _catalogue(["a", "a", "b", "c"], ["red mug", "", "", ""]),
        cfg,
        workspace,
        batch_id="cat-bad",
    )
    assert not bad.passed
    failed = {r.name for r in bad.results if not r.success}
    assert {"catalogue_item_id_unique", "catalogue_text_share_above_minimum"} <= failed
    assert bad.data_docs_path
