"""Tiny datasets for the model tests: built directly, a few hundred events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.data.config import DataConfig
from components.data.prepare import PreparedData, prepare

TINY_MAX_LEN = 12


def cyclic_events(n_users: int, n_items: int, length: int, seed: int) -> pd.DataFrame:
    """Users walk the catalogue in order (i -> i+1, wrapping) from a random start, with a
    10% chance of a random jump: strong sequential structure, flat popularity."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    steps = np.ones((n_users, length), dtype=np.int64)
    steps[:, 0] = 0
    jumps = rng.random((n_users, length)) < 0.1
    steps[jumps] = rng.integers(2, n_items, int(jumps.sum()))
    items = (starts[:, None] + np.cumsum(steps, axis=1)) % n_items
    users = np.repeat(np.arange(n_users), length)
    times = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(
        np.tile(np.arange(length), n_users), unit="min"
    )
    return pd.DataFrame(
        {
            "user_id": pd.Series([f"u{u}" for u in users], dtype="string"),
            "item_id": pd.Series([f"i{i:03d}" for i in items.reshape(-1)], dtype="string"),
            "timestamp": times,
            "event_type": pd.Series(["interaction"] * len(users), dtype="string"),
            "value": np.nan,
        }
    )


def prepared_cyclic(
    n_users: int = 60, n_items: int = 25, length: int = 10, seed: int = 0
) -> PreparedData:
    return prepare(cyclic_events(n_users, n_items, length, seed), DataConfig(max_len=TINY_MAX_LEN))


@pytest.fixture(scope="session")
def tiny_prepared() -> PreparedData:
    """60 users x 10 events over 25 items, leave-one-out, max_len 12."""
    return prepared_cyclic()
