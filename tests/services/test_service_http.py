"""The real bento over HTTP on loopback: deployed, switched over, failed switch-over.

One module-scoped deployment (v1, API key on) serves the API tests; the switch-over
tests then move it to v2 (API key off) and try a broken v3. Server start-ups: three.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from components.deploy.config import LocalDeployConfig, ServeConfig
from components.deploy.local import (
    Deployment,
    deploy_version,
    read_state,
    serve_status,
    stop_local,
)
from components.errors import DeployFailed
from components.features.store import online_recent_items
from components.net import free_port
from components.registry.store import ModelRegistry
from tests.services.conftest import ServedWorkspace, register

pytestmark = pytest.mark.slow
API_KEY = "test-key-123"
KEY_ENV = "RECOPS_TEST_API_KEY"


@pytest.fixture(scope="module")
def serve_cfg() -> ServeConfig:
    return ServeConfig(
        port=free_port(), api_key_env=KEY_ENV, max_k=100, max_history=50, max_batch_requests=8
    )


@pytest.fixture(scope="module")
def deploy_cfg() -> LocalDeployConfig:
    return LocalDeployConfig(readiness_timeout_s=90, switch_drain_s=0.2)


@pytest.fixture(scope="module")
def deployed(
    served_workspace: ServedWorkspace, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> Iterator[Deployment]:
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, API_KEY)
    try:
        d = deploy_version(
            served_workspace.workspace,
            served_workspace.v1.version,
            serve_cfg,
            deploy_cfg,
            served_workspace.features,
        )
    finally:
        mp.undo()
    yield d
    stop_local(served_workspace.workspace)


@pytest.fixture()
def client(deployed: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=deployed.url, timeout=30, headers={"X-API-Key": API_KEY}) as c:
        yield c


def test_recommend_by_user_id_reads_the_online_store(served_workspace, client) -> None:
    ws, feats = served_workspace.workspace, served_workspace.features
    user = served_workspace.events["user_id"].iloc[0]
    recent = online_recent_items(ws, feats, [user])[user]
    assert recent, "the fixture user has online history"
    by_user = client.post("/recommend", json={"user_id": user, "k": 5}).json()
    by_history = client.post("/recommend", json={"history": recent, "k": 5}).json()
    assert by_user["source"] == "model" and len(by_user["items"]) == 5
    # Same items in the same order; scores equal up to float32 rounding (the second call
    # may be answered by a fixed-shape ONNX session built after the first).
    assert [i["item_id"] for i in by_user["items"]] == [i["item_id"] for i in by_history["items"]]
    assert [i["score"] for i in by_user["items"]] == pytest.approx(
        [i["score"] for i in by_history["items"]], rel=1e-5
    )
    assert not {i["item_id"] for i in by_user["items"]} & set(recent)
    assert by_user["model_version"] == served_workspace.v1.version


def test_explicit_history_drops_unknown_items_with_a_warning(client) -> None:
    answer = client.post(
        "/recommend", json={"history": ["i1", "i2", "not-an-item"], "k": 3, "exclude": ["i3"]}
    ).json()
    assert answer["source"] == "model"
    assert answer["warnings"] == ["unknown item ids dropped from history: not-an-item"]
    assert not {i["item_id"] for i in answer["items"]} & {"i1", "i2", "i3"}


def test_unknown_user_gets_popular_items_marked_cold_start(served_workspace, client) -> None:
    answer = client.post("/recommend", json={"user_id": "never-seen", "k": 4}).json()
    counts = served_workspace.events["item_id"].value_counts()
    assert answer["source"] == "cold_start"
    assert [i["item_id"] for i in answer["items"]] == list(counts.index[:4])
    empty = client.post("/recommend", json={"history": [], "k": 2}).json()
    assert empty["source"] == "cold_start" and len(empty["items"]) == 2


def test_batch_answers_in_request_order(client) -> None:
    reqs = [{"user_id": "never-seen", "k": 2}, {"history": ["i5"], "k": 3}]
    results = client.post("/recommend_batch", json={"requests": reqs}).json()["results"]
    assert [r["source"] for r in results] == ["cold_start", "model"]
    assert [len(r["items"]) for r in results] == [2, 3]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ('{"history": ["i1"], "k": 0}', 422, "k:"),
        ('{"history": ["i1"], "k": 101}', 422, "k:"),
        ('{"history": ["i1"], "k": "7"}', 422, "k:"),
        ('{"history": ["i1"], "k": true}', 422, "k:"),
        ('{"history": ["' + "x" * 300 + '"]}', 422, "history.0:"),
        ('{"history": "i1"}', 422, "history:"),
        ('{"user_id": 42}', 422, "user_id:"),
        ('{"history": [' + ",".join(['"i1"'] * 51) + "]}", 422, "history:"),
        ('{"history": ["i1"], "colour": "red"}', 422, "colour:"),
        ("{}", 422, "give user_id or history"),
        ('{"history": [', 400, "not valid JSON"),
        ("", 422, "give user_id or history"),
    ],
)
def test_bad_input_is_a_one_line_4xx(client, body: str, status: int, fragment: str) -> None:
    resp = client.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status
    message = resp.json()["error"]
    assert fragment in message and "\n" not in message and "Traceback" not in resp.text


@pytest.mark.faults
def test_hostile_requests_are_bounded_and_create_no_metrics_series(client, deployed) -> None:
    # unknown paths (authorised or not) and unauthenticated calls: answered by the guard
    with httpx.Client(base_url=deployed.url, timeout=30) as anon:
        for n in range(20):
            assert client.get(f"/probe-{n}-zzq").status_code == 404
            assert anon.post(f"/x/probe-{n}-zzq", json={}).status_code == 404
            assert anon.post("/recommend", json={"history": ["i1"]}).status_code == 401
    too_many = {"requests": [{"history": ["i1"], "k": 1}] * 9}
    resp = client.post("/recommend_batch", json=too_many)
    assert resp.status_code == 422 and "requests" in resp.json()["error"]
    huge = client.post("/recommend", json={"history": ["i" * 2_000_000]})
    assert huge.status_code == 413 and "\n" not in huge.json()["error"]
    metrics = client.get("/metrics").text
    assert "zzq" not in metrics
    endpoints = set(re.findall(r'endpoint="([^"]*)"', metrics))
    declared = {"/recommend", "/recommend_batch", "/metadata", "/metrics", "/feedback"}
    assert endpoints <= declared | {"/explain", "/healthz", "/readyz", "/livez", "other"}
    assert re.search(r'recops_http_requests_total\{code="404",endpoint="other"\} (\d+)', metrics)


def test_api_key_is_required_except_for_probes(deployed: Deployment) -> None:
    body = {"history": ["i1"], "k": 2}
    with httpx.Client(base_url=deployed.url, timeout=30) as anon:
        assert anon.post("/recommend", json=body).status_code == 401
        assert anon.get("/metadata").status_code == 401
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/readyz").status_code == 200
        wrong = anon.post("/recommend", json=body, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        bearer = anon.post("/recommend", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert bearer.status_code == 200


def test_metadata_and_metrics(served_workspace, client) -> None:
    meta = client.get("/metadata").json()
    assert meta["model_version"] == served_workspace.v1.version
    assert meta["model_name"] == "sasrec" and meta["data_version"] == "data-v1"
    assert meta["metrics"] == {"ndcg@10": 0.11} and meta["loaded_at"]
    # BentoML's access log is off by default (serve.access_log): no log line per request
    assert meta["access_log"] is False
    state = read_state(served_workspace.workspace)
    assert state is not None and state.backend is not None
    backend_log = Path(state.backend.log).read_text()
    assert "recops-recommender initialized" in backend_log and "path=/metadata" not in backend_log
    # one answer from popularity and one from the model (batched), whatever ran before
    cold = client.post("/recommend", json={"history": ["no-such-item"], "k": 3})
    assert cold.json()["source"] == "cold_start"
    warm = client.post("/recommend", json={"history": meta["sample_items"], "k": 3})
    assert warm.json()["source"] == "model"
    metrics = client.get("/metrics").text
    assert 'recops_recommend_requests_total{source="cold_start"}' in metrics
    assert "recops_batch_size_bucket" in metrics
    assert 'recops_http_requests_total{code="200",endpoint="/metadata"}' in metrics


def test_the_bentoml_parent_process_loads_neither_torch_nor_pyarrow(
    served_workspace, client
) -> None:
    """``bentoml serve`` imports the service module before it starts the worker: with torch
    kept to the worker (services/wire.py) and the serving log's Arrow schemas built when the
    worker opens its logs, a process start does not pay for either twice."""
    # the worker opened the graph stored at registration: no export on the start-up path
    scorer = {"kind": "onnx", "reason": "onnx (graph stored at registration)"}
    assert client.get("/metadata").json()["scorer"] == scorer
    state = read_state(served_workspace.workspace)
    assert state is not None and state.backend is not None
    parent = psutil.Process(state.backend.pid)

    def loads(process: psutil.Process, library: str) -> bool:
        return any(library in m.path for m in process.memory_maps())

    workers = parent.children(recursive=True)
    for library in ("libtorch", "/pyarrow/"):
        assert not loads(parent, library), library
        assert any(loads(worker, library) for worker in workers), library


def _merged_batches(metrics: str) -> tuple[float, float]:
    """(sum, count) of the model call's batch-size histogram."""
    found = {
        kind: float(m.group(1))
        for kind in ("sum", "count")
        if (m := re.search(rf"^recops_batch_size_{kind}(?:{{[^}}]*}})? ([0-9.e+]+)", metrics, re.M))
    }
    return found.get("sum", 0.0), found.get("count", 0.0)


def test_concurrent_requests_all_succeed_with_correct_answers_in_merged_batches(
    served_workspace, client, deployed
) -> None:
    """32 requests in flight at once: every one 200 with its own answer (what the old
    self-proxy design broke: 503s from the batcher, 500s from the proxy's HTTP client)."""
    items = sorted(served_workspace.events["item_id"].unique())
    bodies = [
        {"history": items[i % len(items) : i % len(items) + 1 + i % 4], "k": 3 + i % 5}
        for i in range(32)
    ]
    expected = [client.post("/recommend", json=b).json() for b in bodies]
    assert all(e["source"] == "model" for e in expected)
    before = _merged_batches(client.get("/metrics").text)
    with httpx.Client(
        base_url=deployed.url,
        timeout=30,
        headers={"X-API-Key": API_KEY},
        limits=httpx.Limits(max_connections=32),
    ) as shared:
        for _ in range(3):  # three rounds of 32 parallel requests
            with ThreadPoolExecutor(max_workers=32) as pool:
                answers = list(pool.map(lambda b: shared.post("/recommend", json=b), bodies))
            assert [a.status_code for a in answers] == [200] * 32, [
                a.text for a in answers if a.status_code != 200
            ]
            for got, want in zip((a.json() for a in answers), expected, strict=True):
                # batched float math may differ from a lone call in the last digits
                assert [i["item_id"] for i in got["items"]] == [i["item_id"] for i in want["items"]]
                assert [i["score"] for i in got["items"]] == pytest.approx(
                    [i["score"] for i in want["items"]], rel=1e-4, abs=1e-6
                )
                assert (got["source"], got["model_version"]) == ("model", want["model_version"])
    total, batches = (
        a - b for a, b in zip(_merged_batches(client.get("/metrics").text), before, strict=True)
    )
    assert total == 96 and batches < total, "concurrent requests were merged into batches"


def test_switch_over_then_failed_switch_keeps_serving(
    served_workspace, deployed, serve_cfg, deploy_cfg
) -> None:
    ws = served_workspace.workspace
    # this shell has no API key: a redeploy must not silently drop the recorded auth
    with pytest.raises(DeployFailed, match="requires an API key"):
        deploy_version(
            ws, served_workspace.v2.version, serve_cfg, deploy_cfg, served_workspace.features
        )
    # v2 with auth turned off on purpose: a clean switch, the public port serves v2 openly
    serve_cfg = serve_cfg.model_copy(update={"auth": "off"})
    d2 = deploy_version(
        ws, served_workspace.v2.version, serve_cfg, deploy_cfg, served_workspace.features
    )
    assert d2.previous_version == served_workspace.v1.version and d2.port == deployed.port
    with httpx.Client(base_url=deployed.url, timeout=30) as anon:
        assert anon.get("/metadata").json()["model_version"] == served_workspace.v2.version
        assert anon.post("/recommend", json={"history": ["i1"], "k": 2}).status_code == 200
    status = serve_status(ws, serve_cfg)
    assert status["version"] == served_workspace.v2.version and status["readyz"] == 200
    assert status["pid"] == d2.pid and status["backend_alive"]

    # v3's weights are corrupt: refused (the bento build loads the model, e.g. for its
    # ANN index; otherwise the new server never gets ready), and v2 keeps serving
    registry = ModelRegistry(ws)
    v3 = register(registry, served_workspace.events, seed=3, ndcg=0.13)
    Path(v3.path, "weights.pt").write_bytes(b"not a checkpoint")
    quick = deploy_cfg.model_copy(update={"readiness_timeout_s": 40})
    with pytest.raises(DeployFailed, match="bento build for .* failed|new server"):
        deploy_version(ws, v3.version, serve_cfg, quick, served_workspace.features)
    with httpx.Client(base_url=deployed.url, timeout=30) as anon:
        assert anon.get("/metadata").json()["model_version"] == served_workspace.v2.version
    after = serve_status(ws, serve_cfg)
    assert after["version"] == served_workspace.v2.version and after["pid"] == d2.pid
