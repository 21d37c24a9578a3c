"""The temporary Prefect server that ``recops run`` starts before its heavy imports: a real
flow runs on it (its run is in that server's API), it carries what the reaper looks for,
it stops when the flows are done, and recops steps aside when an API is configured or the
server died (Prefect's own temporary mode then takes over)."""

from __future__ import annotations

import httpx
import psutil
import pytest
from prefect import flow, task

from flows.reaper import OWNER_ENV, SERVER_APP, mark_owner
from flows.temporary_server import flow_api, start_temporary_server


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
