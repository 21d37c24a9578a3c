"""The temporary Prefect server that ``recops run`` starts before its heavy imports: a real
flow runs on it (its run is in that server's API), it carries what the reaper looks for,
it stops when the flows are done and when the recops process that started it is ended by a
signal, the reaper stops Prefect's own temporary server of a killed process, and recops
steps aside when an API is configured or the server died (Prefect's own temporary mode
then takes over)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prefect import flow, task

from components.net import free_port
from flows.reaper import (
    OWNER_ENV,
    PREFECT_SERVER_APP,
    SERVER_APP,
    mark_owner,
    orphaned_servers,
    reap_orphaned_servers,
)
from flows.temporary_server import flow_api, start_temporary_server

ROOT = Path(__file__).resolve().parents[2]
#: a recops-like process: marks itself, starts the early server, says its pid, then waits
OWNER_SCRIPT = """
import sys
import time
from flows.reaper import mark_owner
from flows.temporary_server import start_temporary_server
mark_owner()
server = start_temporary_server()
assert server is not None and server.wait_ready()
print(server.process.pid, flush=True)
sys.stdin.read()
"""


@task
def double(x: int) -> int:
    return 2 * x


@flow(name="recops-temporary-server-probe")
def probe(x: int) -> int:
    return double(x)


@pytest.mark.slow  # starts a Prefect server: ~5 s on a quiet machine, 20 s at load 12
def test_a_flow_runs_on_the_early_server_which_stops_after() -> None:
    mark_owner()
    server = start_temporary_server()
    assert server is not None and server.wait_ready()  # exec'd: its command line is final
    proc = psutil.Process(server.process.pid)
    assert SERVER_APP in proc.cmdline()  # what flows.reaper matches after a kill -9
    assert proc.environ().get(OWNER_ENV)

    with flow_api(server) as used:
        assert used is server
        state = probe(21, return_state=True)
        assert state.result() == 42
        run = httpx.get(f"{server.api_url}/flow_runs/{state.state_details.flow_run_id}").json()
        assert run["state"]["type"] == "COMPLETED"
    assert server.process.poll() is not None, "the early server outlived its flows"


def test_no_early_server_when_an_api_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert start_temporary_server() is None
    with flow_api(None) as used:
        assert used is None


def test_a_server_that_died_is_left_to_prefect() -> None:
    server = start_temporary_server()
    assert server is not None
    server.process.kill()
    server.process.wait()
    with flow_api(server) as used:
        assert used is None  # the flows inside fall back to Prefect's own temporary server


@pytest.mark.slow  # starts a Prefect server
def test_the_server_stops_itself_when_its_owner_is_terminated() -> None:
    """``SIGTERM`` ends a Python process without its ``atexit`` hooks (a scheduler's
    timeout, ``kill``): the server must not outlive it until the next command reaps it."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # the server inherits it: closed below, as a killed
        text=True,  # test harness or shell leaves it
    )
    assert owner.stdout is not None and owner.stderr is not None
    server = psutil.Process(int(owner.stdout.readline()))
    try:
        assert server.is_running()
        owner.stderr.close()  # nobody reads the server's stderr any more
        owner.terminate()
        owner.wait(timeout=30)
        server.wait(timeout=60)  # psutil.TimeoutExpired: it outlived its owner
    finally:
        if server.is_running():
            server.kill()


@pytest.mark.slow  # starts a Prefect server
def test_the_reaper_stops_prefects_own_server_of_a_dead_owner(tmp_path: Path) -> None:
    """Prefect's own temporary server (started when recops' early one is not used) has no
    owner watch: the next recops command reaps it. Imitated with the command and marker
    Prefect's ``SubprocessASGIServer`` gives its child."""
    port = free_port("127.0.0.1")
    dead = f"{os.getpid()}:1.000"  # this pid with another start time: a gone process
    env = {**os.environ, OWNER_ENV: dead, "PREFECT__SERVER_EPHEMERAL": "1"}
    args = ["--factory", PREFECT_SERVER_APP, "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "server.log").open("w"),
    )
    try:
        deadline = time.monotonic() + 60
        while server.pid not in {p.pid for p in orphaned_servers()}:
            assert time.monotonic() < deadline, "never seen as an orphan"
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.2)
        assert reap_orphaned_servers() >= 1
        assert server.wait(timeout=30) is not None
    finally:
        server.kill()
