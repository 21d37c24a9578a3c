"""The switch-over's checks against a port where something else answers (real HTTP), and
the process ledger's compaction."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from components.deploy.config import ServeConfig
from components.deploy.local import LEDGER_FILE, compact_ledger, reap_strays, smoke_test
from components.errors import DeployFailed
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
