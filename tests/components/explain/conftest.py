"""Tiny datasets for the influence tests (the model tests' cyclic walk)."""

from __future__ import annotations

import pytest

from components.data.prepare import PreparedData
from tests.components.models.conftest import prepared_cyclic


@pytest.fixture(scope="session")
def tiny_prepared() -> PreparedData:
    """60 users x 10 events over 25 items, leave-one-out, max_len 12."""
    return prepared_cyclic()
