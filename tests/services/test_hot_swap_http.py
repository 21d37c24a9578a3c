"""Hot swap over real HTTP: a redeploy that changes only the model is served by the
running backend (no process start) without a failed request, the management route needs
the deployment's token, and a version that fails to load or check is refused in place
while the current one keeps serving. One server start-up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from components.deploy import swap
from components.deploy.bento import build_bento
from components.deploy.config import LocalDeployConfig, ServeConfig
from components.deploy.local import (
    Deployment,
    deploy_version,
    read_state,
    request_swap,
    stop_local,
)
from components.errors import DeployFailed
from components.net import free_port
from components.registry.store import ModelRegistry
from services.engine import Engine
from tests.services.conftest import ServedWorkspace, register

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def serve_cfg() -> ServeConfig:
    return ServeConfig(port=free_port(), ann="on")  # every answer here via the ANN index


@pytest.fixture(scope="module")
def deploy_cfg() -> LocalDeployConfig:
    return LocalDeployConfig(readiness_timeout_s=90, switch_drain_s=0.2, supervise=False)


@pytest.fixture(scope="module")
def first(
    served_workspace: ServedWorkspace, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> Iterator[Deployment]:
    sw = served_workspace
    d = deploy_version(sw.workspace, sw.v1.version, serve_cfg, deploy_cfg, sw.features)
    yield d
    stop_local(sw.workspace)


def _hammer(url: str, stop: threading.Event, seen: list[tuple[int, str | None]]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            answer = client.post("/recommend", json={"history": ["i1", "i2"], "k": 3})
            version = answer.json().get("model_version") if answer.status_code == 200 else None
            seen.append((answer.status_code, version))


def test_a_model_only_redeploy_swaps_in_place_without_a_failed_request(
    served_workspace: ServedWorkspace,
    first: Deployment,
    serve_cfg: ServeConfig,
    deploy_cfg: LocalDeployConfig,
) -> None:
    sw = served_workspace
    assert first.mode == "process_start"
    stop, seen = threading.Event(), []  # type: ignore[var-annotated]
    clients = [threading.Thread(target=_hammer, args=(first.url, stop, seen)) for _ in range(3)]
    for c in clients:
        c.start()
    try:
        d2 = deploy_version(sw.workspace, sw.v2.version, serve_cfg, deploy_cfg, sw.features)
        after = len(seen)
        while len(seen) < after + 30:  # answers after the switch
            threading.Event().wait(0.05)
    finally:
        stop.set()
        for c in clients:
            c.join(30)
    assert (d2.mode, d2.pid, d2.previous_version) == ("hot_swap", first.pid, sw.v1.version)
    assert "start_to_ready_s" not in d2.timings and "swap_and_checks_s" in d2.timings
    assert {status for status, _ in seen} == {200}, "a request failed during the swap"
    assert {v for _, v in seen} <= {sw.v1.version, sw.v2.version}
    assert [v for _, v in seen[-10:]] == [sw.v2.version] * 10
    meta = httpx.get(f"{first.url}/metadata", timeout=10).json()
    assert (meta["model_version"], meta["model_tag"]) == (sw.v2.version, sw.v2.tag)
    assert meta["ann"] is True  # the swapped-in model came with its index
    state = read_state(sw.workspace)
    assert state is not None and (state.version, state.bento_tag) == (sw.v2.version, d2.bento_tag)
    assert (state.previous_version, state.backend and state.backend.pid) == (
        sw.v1.version,
        first.pid,
    )


def test_answers_served_through_the_ann_index_equal_the_exact_ranking(
    served_workspace: ServedWorkspace, first: Deployment
) -> None:
    """40 items: the index has 6 cells and every one is searched (nprobe 32), so the
    approximate path must reproduce the exact answer, scores included."""
    meta = httpx.get(f"{first.url}/metadata", timeout=10).json()
    bundle = ModelRegistry(served_workspace.workspace).load_bundle(meta["model_version"])
    exact = Engine(bundle, meta["model_version"], torch.device("cpu"))
    for history in (["i1", "i2", "i3"], ["i7"], [f"i{j}" for j in range(1, 30)]):
        body = {"history": history, "k": 5}
        served = httpx.post(f"{first.url}/recommend", json=body, timeout=10).json()
        (expected,) = exact.recommend_local([exact.plan(history, 5, True, [])])
        assert [i["item_id"] for i in served["items"]] == [i.item_id for i in expected.items]
        assert [i["score"] for i in served["items"]] == pytest.approx(
            [i.score for i in expected.items], rel=1e-4
        )
    assert meta["ann"] is True


def test_the_swap_route_needs_the_deployment_s_admin_token(first: Deployment) -> None:
    body = {"settings": {}, "source_digest": "x"}
    for headers in ({}, {swap.TOKEN_HEADER: "not-the-token"}):
        answer = httpx.post(f"{first.url}{swap.SWAP_PATH}", json=body, headers=headers)
        assert answer.status_code == 403 and "admin token" in answer.json()["error"]


def test_a_broken_or_differently_configured_version_is_refused_in_place(
    served_workspace: ServedWorkspace,
    first: Deployment,
    serve_cfg: ServeConfig,
    deploy_cfg: LocalDeployConfig,
) -> None:
    sw = served_workspace
    ws = sw.workspace
    serving = httpx.get(f"{first.url}/metadata", timeout=10).json()["model_version"]
    v3 = register(ModelRegistry(ws), sw.events, seed=3, ndcg=0.13)
    broken = build_bento(ws, v3.version, serve_cfg, deploy_cfg, sw.features, False)
    Path(broken.model_path, "weights.pt").write_bytes(b"not a checkpoint")  # the load fails
    backend = f"http://127.0.0.1:{read_state(ws).backend.port}"  # type: ignore[union-attr]
    with pytest.raises(DeployFailed, match="409 hot swap failed"):
        request_swap(backend, ws, broken, serve_cfg, 60)
    other = serve_cfg.model_copy(update={"max_k": 7})
    reconfigured = build_bento(ws, sw.v1.version, other, deploy_cfg, sw.features, False)
    with pytest.raises(DeployFailed, match="409 hot swap refused: settings besides the model"):
        request_swap(backend, ws, reconfigured, other, 60)
    meta = httpx.get(f"{first.url}/metadata", timeout=10).json()
    answer = httpx.post(f"{first.url}/recommend", json={"history": ["i1"], "k": 2}, timeout=10)
    assert meta["model_version"] == serving and answer.json()["model_version"] == serving
