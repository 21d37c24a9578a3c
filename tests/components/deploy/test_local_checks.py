"""The switch-over's checks against a port where something else answers (real HTTP), the
process ledger's compaction, and the deploy lock's fail-fast refusal."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from components.deploy.config import LocalDeployConfig, ServeConfig
from components.deploy.local import (
    LEDGER_FILE,
    compact_ledger,
    deploy_lock,
    deploy_version,
    lock_holder,
    read_state,
    reap_strays,
    smoke_test,
)
from components.errors import DeployBusy, DeployFailed
from components.features.config import FeaturesConfig
from components.workspace import Workspace


def _server(body: bytes, content_type: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(200)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture(params=[(b"<html>hello</html>", "text/html"), (b"[1, 2]", "application/json")])
def stranger(request: pytest.FixtureRequest) -> Iterator[str]:
    server = _server(*request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_200_that_is_not_a_json_object_fails_the_smoke_test_in_one_line(stranger: str) -> None:
    with pytest.raises(DeployFailed, match="not a JSON object") as failed:
        smoke_test(stranger, "v1", ServeConfig())
    assert "\n" not in str(failed.value)


def _ledger_line(proc_id: str, at: datetime) -> str:
    entry = {"proc_id": proc_id, "role": "backend", "cmd": ["py", "-m", "x"], "at": at.isoformat()}
    return json.dumps(entry) + "\n"


def test_the_process_ledger_keeps_only_what_runs_or_is_starting(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path).activate()
    ws.ensure()
    ws.deploy_dir.mkdir(parents=True, exist_ok=True)
    old = datetime.now(timezone.utc) - timedelta(hours=1)
    ledger = ws.deploy_dir / LEDGER_FILE
    ledger.write_text(
        _ledger_line("backend-running", old)
        + _ledger_line("backend-gone", old) * 500
        + _ledger_line("proxy-starting", datetime.now(timezone.utc))
        + '{"proc_id": "torn'
    )
    kept = compact_ledger(ws.deploy_dir, {"backend-running"})
    assert set(kept) == {"backend-running", "proxy-starting"}
    assert [json.loads(x)["proc_id"] for x in ledger.read_text().splitlines()] == [
        "backend-running",
        "proxy-starting",
    ]
    # every reap reads and compacts it: nothing of this workspace runs, the old line goes
    reap_strays(ws, None)
    assert [json.loads(x)["proc_id"] for x in ledger.read_text().splitlines()] == ["proxy-starting"]


def test_a_second_deploy_fails_fast_naming_the_deploy_in_progress(tmp_path: Path) -> None:
    """Two deploy commands at once: the one holding the lock goes on, the other gets a
    one-line refusal after ``deploy.lock_wait_s`` (not 600 s) and changes nothing."""
    ws = Workspace.at(tmp_path).activate()
    holding, release = threading.Event(), threading.Event()

    def first_deploy() -> None:
        with deploy_lock(ws, "recops deploy v1", wait_s=5):
            holding.set()
            release.wait(30)

    first = threading.Thread(target=first_deploy)
    first.start()
    assert holding.wait(10)
    cfg = LocalDeployConfig(lock_wait_s=0.5)
    started = time.monotonic()
    with pytest.raises(DeployBusy) as refused:
        deploy_version(ws, "v2", ServeConfig(), cfg, FeaturesConfig(enabled=False))
    waited = time.monotonic() - started
    release.set()
    first.join(10)
    message = str(refused.value)
    assert "\n" not in message and f"pid {os.getpid()}, recops deploy v1" in message, message
    assert 0.4 <= waited < 5, waited
    assert read_state(ws) is None  # the refused deploy wrote nothing
    assert lock_holder(ws) == "holder unknown"  # released: the next command goes ahead
    with deploy_lock(ws, "recops deploy v2", wait_s=0):
        assert "recops deploy v2" in lock_holder(ws)
