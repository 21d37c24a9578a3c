"""Against a real `prefect server start` on loopback: `recops schedule` creates a cron
deployment, a run is triggered through the Prefect REST API (not by calling the flow),
and it completes — once served by `flow.serve`, once picked up by a process work-pool
worker."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from components.config import load_config
from components.validation.ingest import ingest_batch
from components.workspace import Workspace
from tests.conftest import stop_process_group

BIN = Path(sys.executable).parent
CRON = "0 3 * * *"


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited early with {proc.returncode}")
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def workspace_with_data(tmp_path_factory: pytest.TempPathFactory, tiny_events) -> Workspace:
    ws = Workspace.at(tmp_path_factory.mktemp("sched") / "ws").activate()
    cfg = load_config()
    ingest_batch(tiny_events, ws, cfg.validation, cfg.versioning, batch_id="tiny")
    return ws


def _deployment(api: str, flow: str) -> dict | None:
    reply = httpx.get(f"{api}/deployments/name/recops-{flow}/recops-{flow}-scheduled", timeout=5)
    return reply.json() if reply.status_code == 200 else None


def _create_flow_run(api: str, deployment_id: str) -> dict:
    """POST create_flow_run until the server accepts it (a server busy with the served
    deployment's own start-up can answer an error the first time; CI saw a reply without
    an id once)."""
    replies: list[str] = []

    def created() -> dict | None:
        reply = httpx.post(
            f"{api}/deployments/{deployment_id}/create_flow_run", json={}, timeout=10
        )
        if reply.is_success and "id" in reply.json():
            return reply.json()
        replies.append(f"{reply.status_code} {reply.text[:300]}")
        return None

    try:
        return _wait(created, 60, "the flow run to be created")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; server replies: {replies[-3:]}") from None


def _run_to_completion(api: str, deployment_id: str, timeout: float = 240) -> dict:
    run = _create_flow_run(api, deployment_id)

    def finished() -> dict | None:
        state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=5).json()["state"]
        return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return _wait(finished, timeout, "the triggered flow run")


@pytest.mark.slow
def test_served_schedule_runs_when_triggered_through_the_api(
    prefect_server, workspace_with_data
) -> None:
    api, env = prefect_server
    log = (workspace_with_data.root / "serve.log").open("w")
    serving = subprocess.Popen(
        [
            str(BIN / "recops"),
            "schedule",
            "--cron",
            CRON,
            "--flow",
            "materialize",
            "-w",
            str(workspace_with_data.root),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deployment = _wait(lambda: _deployment(api, "materialize"), 120, "the deployment", serving)
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [CRON]
        assert deployment["parameters"]["config"]["workspace"] == str(workspace_with_data.root)
        state = _run_to_completion(api, deployment["id"])
        assert state["type"] == "COMPLETED", state
    finally:
        stop_process_group(serving)


@pytest.mark.slow
def test_work_pool_deployment_runs_on_a_worker(prefect_server, workspace_with_data) -> None:
    api, env = prefect_server
    pool = "recops-test-pool"
    created = subprocess.run(
        [str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    scheduled = subprocess.run(
        [
            str(BIN / "recops"),
            "schedule",
            "--cron",
            CRON,
            "--flow",
            "retrain",
            "--work-pool",
            pool,
            "-w",
            str(workspace_with_data.root),
            "--set",
            "deploy.target=none",
            "--set",
            "model.name=pop",
            "--set",
            "train.progress_bar=false",
            "--set",
            "features.enabled=false",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert scheduled.returncode == 0, scheduled.stdout + scheduled.stderr
    deployment = _deployment(api, "retrain")
    assert deployment is not None and deployment["work_pool_name"] == pool
    log = (workspace_with_data.root / "worker.log").open("w")
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        state = _run_to_completion(api, deployment["id"], timeout=300)
        assert state["type"] in ("COMPLETED", "FAILED"), state
        # the run reached the gate: pop as first model cannot beat the pop baseline -> rejected, not crashed
        assert state["type"] == "COMPLETED", (workspace_with_data.root / "worker.log").read_text()[
            -3000:
        ]
    finally:
        stop_process_group(worker)
