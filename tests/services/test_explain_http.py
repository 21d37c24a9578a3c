"""Explanations over real HTTP against a real bento (deployed from the real registry)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from components.deploy.config import LocalDeployConfig, ServeConfig
from components.deploy.local import Deployment, deploy_version, free_port, stop_local
from components.features.store import online_recent_items
from tests.services.conftest import ServedWorkspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed(served_workspace: ServedWorkspace) -> Iterator[Deployment]:
    serve = ServeConfig(port=free_port(), max_k=100, max_history=50, explain_max_k=10)
    d = deploy_version(
        served_workspace.workspace,
        served_workspace.v1.version,
        serve,
        LocalDeployConfig(readiness_timeout_s=90, switch_drain_s=0.2),
        served_workspace.features,
    )
    yield d
    stop_local(served_workspace.workspace)


@pytest.fixture()
def client(deployed: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=deployed.url, timeout=30) as c:
        yield c


def _items(served_workspace: ServedWorkspace) -> list[str]:
    return sorted(served_workspace.events["item_id"].unique())


def test_recommend_with_explain_keeps_the_items_and_adds_because(served_workspace, client) -> None:
    history = _items(served_workspace)[:8]
    types = ["view"] * 7 + ["purchase"]
    plain = client.post("/recommend", json={"history": history, "k": 5}).json()
    body = {"history": history, "k": 5, "explain": True, "event_types": types}
    explained = client.post("/recommend", json=body).json()
    assert [i["item_id"] for i in explained["items"]] == [i["item_id"] for i in plain["items"]]
    assert plain.get("explanation") is None
    assert explained["explanation"]["explainable"] is True
    assert explained["explanation"]["method"] == "deletion"
    assert explained["explanation"]["events_explained"] == 8
    for item in explained["items"]:
        assert item["because"], item
        for event in item["because"]:
            assert set(event) == {
                "item_id",
                "position",
                "events_ago",
                "event_type",
                "influence",
                "rank_change",
            }
            assert history[event["position"]] == event["item_id"]
            assert event["event_type"] == types[event["position"]]
            assert event["influence"] > 0


def test_explain_a_user_and_an_item_that_was_not_recommended(served_workspace, client) -> None:
    ws, feats = served_workspace.workspace, served_workspace.features
    user = served_workspace.events["user_id"].iloc[0]
    recent = online_recent_items(ws, feats, [user])[user]
    recommended = client.post("/recommend", json={"user_id": user, "k": 5}).json()
    shown = {i["item_id"] for i in recommended["items"]}
    other = next(i for i in _items(served_workspace) if i not in shown and i not in recent)
    answer = client.post("/explain", json={"user_id": user, "item_id": other, "top": 3}).json()
    assert answer["item_id"] == other and answer["source"] == "model"
    assert answer["rank"] > 1 and isinstance(answer["score"], float)
    assert len(answer["because"]) <= 3 and len(answer["against"]) <= 3
    assert answer["because"] or answer["against"]
    for event in answer["because"]:
        assert recent[event["position"]] == event["item_id"] and event["influence"] > 0
    for event in answer["against"]:
        assert event["influence"] < 0


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"history": ["i1"], "item_id": "no-such-item"}, 404, "unknown item_id 'no-such-item'"),
        ({"item_id": "i1"}, 422, "give user_id or history"),
        ({"history": ["i1"]}, 422, "item_id"),
        ({"history": ["i1"], "item_id": "i2", "top": 0}, 422, "top:"),
    ],
)
def test_bad_explain_input_is_a_one_line_4xx(client, body, status: int, fragment: str) -> None:
    resp = client.post("/explain", json=body)
    assert resp.status_code == status, resp.text
    message = resp.json()["error"]
    assert fragment in message and "\n" not in message


def test_explain_k_above_the_limit_is_a_one_line_422(client) -> None:
    resp = client.post("/recommend", json={"history": ["i1"], "k": 11, "explain": True})
    assert resp.status_code == 422
    assert "limited to k <= 10" in resp.json()["error"]


def test_concurrent_explained_and_plain_requests_each_get_their_own_answer(
    served_workspace, client, deployed
) -> None:
    items = _items(served_workspace)
    bodies = [
        {"history": items[i : i + 5], "k": 3, "explain": bool(i % 2)} for i in range(0, 32, 2)
    ]
    expected = [client.post("/recommend", json=b).json() for b in bodies]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda b: client.post("/recommend", json=b), bodies))
    assert [a.status_code for a in answers] == [200] * len(bodies)
    for got, want, body in zip((a.json() for a in answers), expected, bodies, strict=True):
        assert [i["item_id"] for i in got["items"]] == [i["item_id"] for i in want["items"]]
        assert (got["explanation"] is not None) == body["explain"]
