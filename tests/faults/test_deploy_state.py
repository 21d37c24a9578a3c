"""A torn deployment record: one line, then set aside by ``serve stop``."""

from __future__ import annotations

import pytest

from components.workspace import Workspace
from tests.faults.conftest import recops

pytestmark = pytest.mark.faults


def test_a_torn_local_json_is_one_line_and_serve_stop_recovers(tmp_path):
    ws = Workspace.at(tmp_path / "ws").ensure()
    record = ws.deploy_dir / "local.json"
    record.write_text('{"host": "127.0.0.1", "public_port": 30')  # torn mid-write

    status = recops(tmp_path, "serve", "status", "-w", str(ws.root))
    assert status.rc == 10 and "Traceback" not in status.err, status.err
    assert "local.json is unreadable" in status.err and "serve stop" in status.err

    stopped = recops(tmp_path, "serve", "stop", "-w", str(ws.root))
    assert stopped.rc == 0, stopped.err
    assert not record.exists() and list(ws.deploy_dir.glob("local.json.unreadable-*"))
    after = recops(tmp_path, "serve", "status", "-w", str(ws.root))
    assert after.rc == 3 and "nothing is deployed" in after.out  # Nagios UNKNOWN
