"""The GX runner on its own: chunked validation agrees with a single pass."""

from __future__ import annotations

import pandas as pd

from components.validation.config import ValidationConfig
from components.validation.runner import validate_events
from components.workspace import Workspace
from tests.components.validation.conftest import make_events


def test_chunked_validation_merges_counts_and_catches_duplicates_across_chunks(tmp_path):
    ws = Workspace.at(tmp_path).ensure()
    events = make_events(n=2500, seed=3)
    # rows 0..99 repeated at the end: every duplicate lies in a different chunk than its original
    events = pd.concat([events, events.iloc[:100]], ignore_index=True)
    events.loc[150, "event_type"] = "teleport"

    whole = validate_events(events, ValidationConfig(), ws, batch_id="whole")
    chunked = validate_events(events, ValidationConfig(chunk_rows=1000), ws, batch_id="chunked")

    assert chunked.n_chunks == 3 and whole.n_chunks == 1
    by_name = {r.name: r for r in chunked.results}
    assert by_name["min_rows"].observed == 2600
    assert by_name["duplicate_share_below_threshold"].observed == 100 / 2600
    assert by_name["duplicate_share_below_threshold"].success  # 3.8% < 5%
    assert (
        not by_name["event_type_known"].success
        and "teleport" in by_name["event_type_known"].details
    )
    assert [(r.name, r.success, r.observed) for r in whole.results] == [
        (r.name, r.success, r.observed) for r in chunked.results
    ]
    assert not chunked.passed and "event_type_known" in chunked.summary
