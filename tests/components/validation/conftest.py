"""Fixtures for validation tests: a clean contract batch and a workspace with one version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.data.config import DataConfig
from components.data.schema import STRING_DTYPE
from components.lifecycle.ingest import ingest_events
from components.validation.config import ValidationConfig
from components.versioning.config import VersioningConfig
from components.workspace import Workspace


def make_events(n: int = 400, seed: int = 0, start: str = "2025-06-01") -> pd.DataFrame:
    """``n`` distinct clean events in the contract (60 users, 40 items, past timestamps)."""
    rng = np.random.default_rng(seed)
    times = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.arange(n) * 60 + seed, unit="s")
    return pd.DataFrame(
        {
            "user_id": pd.Series([f"u{i}" for i in rng.integers(0, 60, n)], dtype=STRING_DTYPE),
            "item_id": pd.Series([f"i{i}" for i in rng.integers(0, 40, n)], dtype=STRING_DTYPE),
            "timestamp": times.astype("datetime64[ns, UTC]"),
            "event_type": pd.Series(rng.choice(["view", "click"], n), dtype=STRING_DTYPE),
            "value": np.nan,
        }
    )


@pytest.fixture(scope="module")
def accepted_ws(tmp_path_factory) -> Workspace:
    """A workspace whose dataset holds one accepted clean batch (shared by a module)."""
    ws = Workspace.at(tmp_path_factory.mktemp("ws")).ensure()
    ingest_events(
        make_events(), ws, DataConfig(), ValidationConfig(), VersioningConfig(), batch_id="first"
    )
    return ws


@pytest.fixture
def csv_of(tmp_path):
    """Write a frame to a CSV file in tmp_path and return its path."""

    def write(frame: pd.DataFrame, name: str = "batch.csv") -> Path:
        path = tmp_path / name
        frame.to_csv(path, index=False)
        return path

    return write
