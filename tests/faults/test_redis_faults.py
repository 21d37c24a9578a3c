"""A real redis-server as the online store: frozen (SIGSTOP), and restarted empty."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.errors import FeatureStoreError
from components.features.config import FeaturesConfig
from components.features.local_redis import _wait_for_port, free_port, redis_server_binary
from components.features.store import (
    forget_stores,
    is_reachable,
    online_recent_items,
    refresh_features,
)
from components.workspace import Workspace
from tests.conftest import service_unavailable

pytestmark = [pytest.mark.faults, pytest.mark.redis]


class Redis:
    """One redis-server on a fixed port that the test can freeze, kill and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [redis_server_binary() or "redis-server", "--port", str(self.port)]
        args += [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.proc, self.port, 10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture()
def redis(tmp_path: Path) -> Iterator[Redis]:
    if redis_server_binary() is None:
        service_unavailable("redis-server not found on PATH (apt-get install redis-server)")
    server = Redis(tmp_path)
    server.start()
    yield server
    server.kill()
    forget_stores()


def test_a_frozen_redis_times_out_and_an_emptied_one_is_not_ready(redis, tmp_path, tiny_events):
    ws = Workspace.at(tmp_path / "ws").ensure()
    cfg = FeaturesConfig(
        online_store="redis",
        redis_connection_string=f"127.0.0.1:{redis.port}",
        online_timeout_s=1.0,
        history_length=5,
    )
    refresh_features(tiny_events, ws, cfg)
    user = str(tiny_events["user_id"].iloc[0])
    assert online_recent_items(ws, cfg, [user])[user] and is_reachable(ws, cfg)

    # hung: lookups and the readiness probe give up after the socket timeout
    assert redis.proc is not None
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(FeatureStoreError):
            online_recent_items(ws, cfg, [user])
        assert is_reachable(ws, cfg) is False
        assert time.monotonic() - started < 6  # two calls of one 1 s timeout each, no retries
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    assert is_reachable(ws, cfg)

    # restarted empty: users would silently become cold starts, so readiness fails ...
    redis.kill()
    redis.start()
    forget_stores()
    assert online_recent_items(ws, cfg, [user])[user] == []
    assert is_reachable(ws, cfg) is False
    # ... until features are materialized again (`recops features materialize --full`)
    refresh_features(tiny_events, ws, cfg)
    assert is_reachable(ws, cfg) and online_recent_items(ws, cfg, [user])[user]
