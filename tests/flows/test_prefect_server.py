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


def _workspace_with_champion(root: Path, events) -> Workspace:
    """Accepted data and a champion trained on it (an untrained SASRec is enough: only its
    data version matters to the retrain trigger)."""
    from components.records import RunRecord
    from components.registry.store import ModelRegistry
    from tests.services.conftest import make_bundle

    ws = Workspace.at(root).activate()
    cfg = load_config()
    version = ingest_events(
        events, ws, DataConfig(), cfg.validation, cfg.versioning, batch_id="first"
    ).version.version
    record = RunRecord(
        run_id="champion",
        model_name="sasrec",
        config={},
        config_hash="t",
        code_rev="t",
        data_version=version,
        metrics_test={"ndcg@10": 0.0},
    )
    registry = ModelRegistry(ws)
    champion = registry.register(make_bundle(events, seed=1), record).version
    registry.promote(champion, actor="test", reason="the champion to retrain against")
    return ws


@pytest.mark.slow
def test_new_data_past_the_threshold_starts_a_retrain_run_end_to_end(
    prefect_server, tmp_path: Path, tiny_events
) -> None:
    """Threshold crossed -> event -> run, with nothing called by hand: `recops data add`
    accepts more events than `monitoring.retrain_after_events` since the champion's data,
    sends `recops.retrain.requested`, and the retrain deployment's automation on the real
    Prefect server starts a flow run that completes (its cron is far away)."""
    api, env = prefect_server
    ws = _workspace_with_champion(tmp_path / "ws", tiny_events)
    settings = ["deploy.target=none", "model.name=pop", "features.enabled=false"]
    sets = [arg for s in settings for arg in ("--set", s)]
    log = (tmp_path / "serve-retrain.log").open("w")
    serving = subprocess.Popen(
        [str(BIN / "recops"), "schedule", "--cron", CRON, "--flow", "retrain", "-w", str(ws.root)]
        + sets,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deployment = _wait(lambda: _deployment(api, "retrain"), 180, "the deployment", serving)
        _wait(
            lambda: deployment_for(api, str(ws.root)),
            60,
            "the deployment to point at this workspace",
            serving,
        )
        automations = httpx.post(f"{api}/automations/filter", json={}, timeout=10).json()
        assert any(a["name"] == "recops-retrain-on-request" for a in automations)
        # other tests of this module share the server and the deployment name and leave
        # runs of their own: only a run created after the new data counts
        everything = [*FINISHED, "RUNNING", "PENDING", "SCHEDULED"]
        before = {r["id"] for r in _flow_runs(api, deployment["id"], everything)}
        more = tiny_events.assign(user_id="new-" + tiny_events["user_id"].astype(str))
        batch = tmp_path / "more.csv"
        more.to_csv(batch, index=False)
        added = subprocess.run(
            [str(BIN / "recops"), "data", "add", str(batch), "-w", str(ws.root)]
            + ["--set", "monitoring.retrain_after_events=100"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert added.returncode == 0, added.stdout + added.stderr
        said = " ".join(added.stdout.split())
        assert f"{len(more)} new accepted events" in said and "event sent" in said, said

        def started() -> dict | None:
            runs = [
                r
                for r in _flow_runs(api, deployment["id"])
                if not r["auto_scheduled"] and r["id"] not in before
            ]
            return runs[0] if runs else None

        run = _wait(started, 300, "the automation's flow run", serving)
        assert run["state"]["type"] == "COMPLETED", (tmp_path / "serve-retrain.log").read_text()[
            -3000:
        ]
        assert run["parameters"]["config"]["workspace"] == str(ws.root)
    finally:
        stop_process_group(serving)


def deployment_for(api: str, workspace: str) -> bool:
    """The shared retrain deployment now carries this workspace's parameters."""
    found = _deployment(api, "retrain")
    return bool(found and found["parameters"]["config"]["workspace"] == workspace)


def test_every_schedulable_flow_resolves_to_its_entrypoint() -> None:
    """`recops schedule --flow NAME` serves the same flow a work pool loads from source."""
    from flows.schedules import ENTRYPOINTS, flow_object

    assert "monitor" in ENTRYPOINTS  # drift checks on a schedule start retraining by itself
    for name, entrypoint in ENTRYPOINTS.items():
        path, function = entrypoint.split(":")
        flow = flow_object(name)  # type: ignore[arg-type]
        assert flow.fn.__name__ == function
        assert flow.fn.__module__ == path.removesuffix(".py").replace("/", ".")
