"""External stores that do not answer: a real PostgreSQL (the Feast SQL registry) frozen
with SIGSTOP or on a closed port, and an S3 DVC remote whose endpoint never answers. Each
call fails with one line in bounded time; the registry's content is intact once the server
answers again, and the dataset is as before the failed accept."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from components.data.config import DataConfig
from components.errors import FeatureStoreError, VersioningError
from components.features.config import FeaturesConfig
from components.features.store import apply_repo, forget_stores
from components.lifecycle.ingest import batch_from_file, ingest
from components.net import free_port
from components.validation.config import ValidationConfig
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace
from tests.faults.conftest import rows
from tests.infra.conftest import postgres_server

pytestmark = [pytest.mark.faults, pytest.mark.slow]

URL_ENV = "RECOPS_TEST_REGISTRY_URL"


def _sql_registry(timeout_s: float) -> FeaturesConfig:
    return FeaturesConfig(
        registry="sql", registry_path=f"env:{URL_ENV}", registry_timeout_s=timeout_s
    )


def _timed_failure(ws: Workspace, cfg: FeaturesConfig) -> tuple[float, str]:
    started = time.monotonic()
    try:
        with pytest.raises(FeatureStoreError) as err:
            apply_repo(ws, cfg)
    finally:
        forget_stores()
    return time.monotonic() - started, str(err.value)


def test_a_frozen_postgres_registry_fails_in_bounded_time_and_loses_nothing(tmp_path, monkeypatch):
    import psycopg

    ws = Workspace.at(tmp_path / "ws").ensure()
    cfg = _sql_registry(timeout_s=1)
    with postgres_server() as pg:
        monkeypatch.setenv(URL_ENV, pg.url)
        try:
            apply_repo(ws, cfg)
        finally:
            forget_stores()
        postmaster = pg.postmaster_pid()
        os.kill(postmaster, signal.SIGSTOP)  # accepts TCP connections, never answers
        try:
            seconds, message = _timed_failure(ws, cfg)
        finally:
            os.kill(postmaster, signal.SIGCONT)
        assert seconds < 15, f"a frozen registry held the call {seconds:.1f}s"
        assert "timeout" in message and "\n" not in message, message
        plain = pg.url.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(plain, connect_timeout=10) as conn:
            views = {r[0] for r in conn.execute("SELECT feature_view_name FROM feature_views")}
        assert {"user_features", "item_features"} <= views  # nothing lost


def test_a_closed_postgres_port_is_one_line(tmp_path, monkeypatch):
    ws = Workspace.at(tmp_path / "ws").ensure()
    monkeypatch.setenv(URL_ENV, f"postgresql+psycopg://feast@127.0.0.1:{free_port()}/feast")
    seconds, message = _timed_failure(ws, _sql_registry(timeout_s=1))
    assert seconds < 15 and "connect" in message.lower() and "\n" not in message, message


@pytest.fixture()
def blackhole() -> Iterator[str]:
    """An endpoint URL whose port accepts TCP connections (the kernel's backlog) and
    never answers: a hung S3 service or a proxy that swallows requests."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    try:
        yield f"http://127.0.0.1:{hole.getsockname()[1]}"
    finally:
        hole.close()


def test_an_s3_remote_that_never_answers_fails_the_push_in_bounded_time(
    tmp_path, event_batches, blackhole, monkeypatch
):
    pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed (pip install recops[dev])")
    for key, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    week1, _ = event_batches
    ws = Workspace.at(tmp_path / "ws").ensure()
    hung = VersioningConfig(
        remote_url="s3://recops/data", remote_endpoint_url=blackhole, remote_timeout_s=1
    )
    cfgs = (DataConfig(), ValidationConfig())
    started = time.monotonic()
    with pytest.raises(VersioningError) as err:
        ingest(batch_from_file(week1), ws, *cfgs, hung)
    seconds = time.monotonic() - started
    assert seconds < 60, f"a hung S3 remote held the push {seconds:.1f}s"
    assert "timeout" in str(err.value).lower() and "\n" not in str(err.value), err.value
    assert DatasetStore(ws, hung).versions() == []  # nothing half-accepted
    # the next try (here without the push) accepts the batch without a human
    local = VersioningConfig(push=False)
    assert ingest(batch_from_file(week1), ws, *cfgs, local).version.n_rows == rows(week1)
