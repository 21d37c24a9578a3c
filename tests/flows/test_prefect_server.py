"""Against a real `prefect server start` on loopback: `recops schedule` creates a cron
deployment, a run is triggered through the Prefect REST API (not by calling the flow),
and it completes — once served by `flow.serve`, once picked up by a process work-pool
worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from components.config import load_config
from components.data.config import DataConfig
from components.lifecycle.ingest import ingest_events
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
    ingest_events(tiny_events, ws, DataConfig(), cfg.validation, cfg.versioning, batch_id="tiny")
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


FINISHED = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]


def _flow_runs(api: str, deployment_id: str, states: list[str] = FINISHED) -> list[dict]:
    """Runs of a deployment in ``states`` (an interval schedule queues many future runs)."""
    wanted = {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": states}}}
    reply = httpx.post(
        f"{api}/flow_runs/filter", json={"flow_runs": wanted, "limit": 50}, timeout=10
    )
    reply.raise_for_status()
    return reply.json()


def _server_api(ws: Path) -> str | None:
    record = ws / "prefect" / "server.json"
    if not record.exists():
        return None
    import json

    data = json.loads(record.read_text())
    return f"http://{data['host']}:{data['process']['port']}/api"


@pytest.mark.slow
def test_schedule_in_the_default_setup_starts_a_server_and_a_real_run(
    tmp_path: Path, workspace_with_data
) -> None:
    """No PREFECT_API_URL: `recops schedule` starts the workspace's own Prefect server and
    the interval schedule fires by itself (no run is triggered by hand)."""
    ws = workspace_with_data.root
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        PREFECT_HOME=str(tmp_path / "client-home"),
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        PATH=f"{BIN}:{os.environ['PATH']}",
    )
    log = (tmp_path / "schedule.log").open("w")
    serving = subprocess.Popen(
        [
            str(BIN / "recops"),
            "schedule",
            "--interval",
            "20",
            "--flow",
            "materialize",
            "-w",
            str(ws),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        api = _wait(lambda: _server_api(ws), 180, "the workspace's Prefect server", serving)
        deployment = _wait(lambda: _deployment(api, "materialize"), 180, "the deployment", serving)
        assert deployment["schedules"][0]["schedule"]["interval"] == 20

        def completed() -> dict | None:
            runs = _flow_runs(api, deployment["id"])
            return runs[0] if runs else None

        try:
            run = _wait(completed, 240, "a scheduled run to complete", serving)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: {(tmp_path / 'schedule.log').read_text()[-3000:]}"
            ) from None
        assert run["state"]["type"] == "COMPLETED", (tmp_path / "schedule.log").read_text()[-3000:]
        assert run["auto_scheduled"] is True
    finally:
        stop_process_group(serving)
        subprocess.run([str(BIN / "recops"), "server", "stop", "-w", str(ws)], env=env, timeout=60)
    assert _server_api(ws) is None


def test_schedule_without_a_server_refuses_with_the_command_to_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    ws = tmp_path / "ws"
    done = subprocess.run(
        [str(BIN / "recops"), "schedule", "--cron", CRON, "--no-start-server", "-w", str(ws)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 11, done.stdout + done.stderr
    assert "no Prefect server" in done.stderr
    assert f"recops server start -w {ws}" in done.stderr.replace("\n", "")


@pytest.mark.slow
def test_retrain_request_event_starts_a_run_through_the_automation(
    prefect_server, workspace_with_data
) -> None:
    """The retrain deployment carries an event trigger; emitting `recops.retrain.requested`
    for its workspace makes the Prefect server start a real flow run (cron far away)."""
    api, env = prefect_server
    ws = workspace_with_data.root
    log = (ws / "serve-retrain.log").open("w")
    serving = subprocess.Popen(
        [
            str(BIN / "recops"),
            "schedule",
            "--cron",
            CRON,
            "--flow",
            "retrain",
            "-w",
            str(ws),
            "--set",
            "deploy.target=none",
            "--set",
            "model.name=pop",
            "--set",
            "features.enabled=false",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deployment = _wait(lambda: _deployment(api, "retrain"), 180, "the deployment", serving)
        automations = httpx.post(f"{api}/automations/filter", json={}, timeout=10).json()
        ours = [a for a in automations if a["name"] == "recops-retrain-on-request"]
        assert ours, [a["name"] for a in automations]
        # the module's work-pool test shares this server and deployment name and leaves a
        # manual run of its own: only a run created after the event counts
        everything = [*FINISHED, "RUNNING", "PENDING", "SCHEDULED"]
        before = {r["id"] for r in _flow_runs(api, deployment["id"], everything)}
        emitted = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from components.workspace import Workspace; "
                "from flows.events import emit_retrain_request; "
                "sys.exit(0 if emit_retrain_request(Workspace.at(sys.argv[1]), 'test', {}) else 3)",
                str(ws),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert emitted.returncode == 0, emitted.stdout + emitted.stderr

        def started() -> dict | None:
            runs = [
                r
                for r in _flow_runs(api, deployment["id"])
                if not r["auto_scheduled"] and r["id"] not in before
            ]
            return runs[0] if runs else None

        run = _wait(started, 300, "the automation's flow run", serving)
        assert run["state"]["type"] == "COMPLETED", (ws / "serve-retrain.log").read_text()[-3000:]
    finally:
        stop_process_group(serving)
