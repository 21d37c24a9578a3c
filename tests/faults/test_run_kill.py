"""``kill -9`` of ``recops run`` while it versions the batch (its flow's temporary Prefect
server running): the next command reaps the server and finds the data as before."""

from __future__ import annotations

import contextlib
import json

import psutil
import pytest

from tests.faults.conftest import kill_at, recops

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _servers_owned_by(pid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            server = "prefect.server.api.server:create_app" in (proc.info["cmdline"] or [])
            if server and proc.environ().get("RECOPS_OWNER", "").startswith(f"{pid}:"):
                found.append(proc)
    return found


def test_a_killed_run_leaves_no_server_and_no_half_version(tmp_path, event_batches):
    week1, _ = event_batches
    ws = tmp_path / "ws"
    args = ["run", "--data", str(week1), "--format", "csv", "-w", str(ws)]
    killed = kill_at(tmp_path, "versioning.after_dvc_add", *args, "--set", "deploy.target=none")
    leaked = _servers_owned_by(killed)
    assert leaked, "the killed run's temporary Prefect server outlived it"

    listed = recops(tmp_path, "data", "versions", "--json", "-w", str(ws))
    assert listed.rc == 0 and json.loads(listed.out) == [], listed.err
    for proc in leaked:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.wait(timeout=15)
    assert not _servers_owned_by(killed)
