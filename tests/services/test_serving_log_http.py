"""The real bento over HTTP records what it served and the feedback it received.

One deployment with a fast-rotating log (requests, feedback, the join between them), then
a switch-over to a bento whose log folder cannot be created: requests are still answered
and the failure is visible in /metrics and in `serve status`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import torch

from components.deploy.config import LocalDeployConfig, ServeConfig
from components.deploy.local import Deployment, deploy_version, serve_status, stop_local
from components.monitoring.config import ServingLogConfig
from components.monitoring.online import metrics_by_version, unknown_request_ids
from components.monitoring.servelog import (
    FEEDBACK,
    FEEDBACK_SCHEMA,
    SERVED,
    SERVED_SCHEMA,
    read_log,
)
from components.net import free_port
from tests.services.conftest import ServedWorkspace

pytestmark = pytest.mark.slow
FAST_LOG = ServingLogConfig(flush_interval_s=0.2, rotate_s=0.5)


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def deployed(served_workspace: ServedWorkspace, port: int) -> Iterator[Deployment]:
    d = deploy_version(
        served_workspace.workspace,
        served_workspace.v1.version,
        ServeConfig(port=port, log=FAST_LOG),
        LocalDeployConfig(readiness_timeout_s=90, switch_drain_s=0.2),
        served_workspace.features,
    )
    yield d
    stop_local(served_workspace.workspace)


def _wait_rows(folder, name, schema, predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        table = read_log(folder, name, schema)
        if predicate(table):
            return table
        assert time.monotonic() < deadline, f"{name} log: {table.num_rows} rows"
        time.sleep(0.2)


def test_requests_and_feedback_are_logged_and_join(served_workspace, deployed) -> None:
    ws = served_workspace.workspace
    user = str(served_workspace.events["user_id"].iloc[0])
    known = served_workspace.events["item_id"].astype(str).unique()[:3].tolist()
    with httpx.Client(base_url=deployed.url, timeout=30) as client:
        by_user = client.post("/recommend", json={"user_id": user, "k": 5}).json()
        by_history = client.post(
            "/recommend", json={"history": [*known, "no-such-item"], "k": 4}
        ).json()
        batch = client.post(
            "/recommend_batch", json={"requests": [{"user_id": "stranger", "k": 3}]}
        ).json()["results"]
        ids = [by_user["request_id"], by_history["request_id"], batch[0]["request_id"]]
        assert all(isinstance(i, str) and len(i) == 32 for i in ids) and len(set(ids)) == 3
        clicked = by_user["items"][1]["item_id"]
        reply = client.post(
            "/feedback",
            json={
                "events": [
                    {"user_id": user, "item_id": clicked, "event_type": "click"},
                    {
                        "user_id": "anon",
                        "item_id": by_history["items"][0]["item_id"],
                        "event_type": "purchase",
                        "request_id": by_history["request_id"],
                    },
                    {"user_id": "u-x", "item_id": "i-x", "request_id": "no-such-request"},
                ]
            },
        )
        assert reply.status_code == 200 and reply.json() == {"received": 3, "accepted": 3}
        bad = client.post(
            "/feedback", json={"events": [{"user_id": "u", "item_id": "i", "event_type": "bogus"}]}
        )
        assert 400 <= bad.status_code < 500 and "\n" not in bad.json()["error"]
        assert "event_type" in bad.json()["error"]
        empty = client.post("/feedback", json={"events": []})
        assert 400 <= empty.status_code < 500
        written = 'recops_serving_log_rows_total{log="served",outcome="written"}'
        deadline = time.monotonic() + 30  # the log is written off the request path
        while written not in (metrics := client.get("/metrics").text):
            assert time.monotonic() < deadline, f"no {written} in /metrics"
            time.sleep(0.2)
    served = _wait_rows(
        ws.serving_log_dir,
        SERVED,
        SERVED_SCHEMA,
        lambda t: set(ids) <= set(t["request_id"].to_pylist()),
    )
    rows = {r["request_id"]: r for r in served.to_pylist()}
    mine = rows[by_history["request_id"]]
    assert mine["history_len"] == 4 and mine["unknown_items"] == 1 and mine["user_id"] is None
    assert mine["items"] == [i["item_id"] for i in by_history["items"]]
    assert mine["history"] == [*known, "no-such-item"]  # what it was answered from
    assert rows[by_user["request_id"]]["history"]  # the user's recent items from the store
    assert mine["model_version"] == served_workspace.v1.version and mine["source"] == "model"
    assert rows[batch[0]["request_id"]]["source"] == "cold_start"
    assert rows[by_user["request_id"]]["user_id"] == user
    feedback = _wait_rows(
        ws.serving_log_dir / FEEDBACK, FEEDBACK, FEEDBACK_SCHEMA, lambda t: t.num_rows >= 3
    )
    assert feedback.num_rows == 3  # the malformed batch left nothing behind
    later = datetime.now(timezone.utc) + timedelta(days=2)
    (v1,) = metrics_by_version(
        served, feedback, k=5, window=timedelta(hours=24), as_of=later, catalogue_sizes={}
    )
    assert v1.hit_rate.hits == 2  # the user's click (user + window) and the purchase (request id)
    assert unknown_request_ids(served, feedback) == 1
    assert written in metrics


def _version_with_event_types(served: ServedWorkspace, event_types: list[str]) -> str:
    """v2's weights registered again under a run config whose validation accepts
    ``event_types`` only (what `recops run` records for a custom config)."""
    from components.models.bundle import ModelBundle
    from components.registry.store import ModelRegistry

    record = served.v2.record.model_copy(
        update={
            "run_id": "run-custom-events",
            "config": {"validation": {"event_types": event_types}},
        }
    )
    bundle = ModelBundle.load(served.v2.path, torch.device("cpu"))
    return ModelRegistry(served.workspace).register(bundle, record).version


def test_unwritable_log_folder_never_fails_a_request(
    served_workspace, deployed, port, tmp_path_factory
) -> None:
    """Also: the bento checks feedback event types against the deployed version's
    recorded validation config, not the default one."""
    blocker = tmp_path_factory.mktemp("blocked") / "a-file"
    blocker.write_text("the log folder cannot be created under a file")
    d = deploy_version(
        served_workspace.workspace,
        _version_with_event_types(served_workspace, ["click", "share"]),
        ServeConfig(
            port=port, log=ServingLogConfig(dir=str(blocker / "log"), flush_interval_s=0.2)
        ),
        LocalDeployConfig(readiness_timeout_s=90, switch_drain_s=0.2),
        served_workspace.features,
    )
    with httpx.Client(base_url=d.url, timeout=30) as client:
        for _ in range(5):
            answer = client.post("/recommend", json={"history": [], "k": 3})
            assert answer.status_code == 200 and answer.json()["request_id"]
        share = {"user_id": "u", "item_id": "i", "event_type": "share"}  # not a default type
        assert client.post("/feedback", json={"events": [share]}).status_code == 200
        purchase = {**share, "event_type": "purchase"}  # a default type this config dropped
        refused = client.post("/feedback", json={"events": [purchase]})
        assert refused.status_code == 422 and "'purchase'" in refused.json()["error"]
        assert "'share'" in refused.json()["error"]
        deadline = time.monotonic() + 30
        while "recops_serving_log_write_errors_total{" not in (text := client.get("/metrics").text):
            assert time.monotonic() < deadline, "no write error counted"
            time.sleep(0.3)
    assert 'recops_serving_log_write_errors_total{log="served"}' in text
    status = serve_status(served_workspace.workspace, ServeConfig(port=port))
    assert status["serving_log"]['recops_serving_log_write_errors_total{log="served"}'] >= 1
    assert (
        status["serving_log"]['recops_serving_log_rows_total{log="served",outcome="failed"}'] >= 1
    )
