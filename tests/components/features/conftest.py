"""Fixtures for the Feast feature store tests: tiny events, a materialized workspace."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from components.data.schema import ITEM, USER, sort_events
from components.features.config import FeaturesConfig
from components.features.store import forget_stores, refresh_features
from components.workspace import Workspace

HISTORY = 5


def last_items(events: pd.DataFrame, n: int) -> dict[str, list[str]]:
    """Reference: each user's last ``n`` item ids (oldest -> newest), by plain pandas."""
    ordered = sort_events(events)
    tails = ordered.groupby(USER, sort=False).tail(n)
    return {str(u): [str(i) for i in g[ITEM]] for u, g in tails.groupby(USER, sort=False)}


@pytest.fixture
def features_cfg() -> FeaturesConfig:
    return FeaturesConfig(history_length=HISTORY)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory, tiny_events: pd.DataFrame):
    """A workspace whose features were refreshed from the tiny synthetic events."""
    workspace = Workspace.at(tmp_path_factory.mktemp("features") / "ws").ensure()
    cfg = FeaturesConfig(history_length=HISTORY)
    result = refresh_features(tiny_events, workspace, cfg)
    yield workspace, cfg, result
    forget_stores()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port (skips when not installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not found on PATH (apt-get install redis-server; .ci/run does)")
    port = _free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def reference_last_items():
    """The plain-pandas reference for a user's last-N items."""
    return last_items
