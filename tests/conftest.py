"""Shared fixtures: temporary workspaces, tiny synthetic datasets, the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's console handler logs "Stopping temporary server" at interpreter exit, after
# pytest closed the stream; INFO from Prefect adds nothing to test output anyway
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from components.data.config import SyntheticConfig  # noqa: E402
from components.data.synthetic import generate_events  # noqa: E402
from components.workspace import Workspace  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO_ROOT = Path(__file__).resolve().parents[1]

TINY_SYNTHETIC = SyntheticConfig(
    n_users=300, n_items=80, n_events=6000, n_clusters=4, seed=3, start="2026-01-01T00:00:00Z"
)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A fresh, activated workspace in a temporary directory."""
    return Workspace.at(tmp_path / "ws").activate()


@pytest.fixture(scope="session")
def tiny_events() -> pd.DataFrame:
    """~6k synthetic events with strong sequential structure (300 users, 80 items)."""
    return generate_events(TINY_SYNTHETIC)


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with a clear reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real dataset not available at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture
def ml100k_inter() -> Path:
    return shared_file("ml-100k", "ml-100k.inter")


@pytest.fixture
def beauty_txt() -> Path:
    return shared_file("beauty", "Beauty.txt")
