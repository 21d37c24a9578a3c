"""Shadow and canary deployments over real HTTP against real bentos on loopback.

One module-scoped workspace (two tiny SASRec versions, real Feast features), the
champion v1 deployed once behind the real proxy; three bento starts in all (the
champion, one shadow, one canary). Each test first puts the deployment in the state it
needs (:func:`shadow_attached`, :func:`no_challenger`), so none depends on another's
outcome; in file order they share the one shadow. Two attach commands at once: one
wins, the other a clear error, and the winner's shadow runs at SCHED_IDLE; its answers
are logged under the client's request id next to the champion's while the client sees
only the champion; compare and conclude it through the retrain flow's online step (a
Prefect flow run paused, resumed with the decision): promoted through the normal promote
path (the replace deploy stops the shadow first and takes over its warm process, raised
back to normal priority), the online evidence in the history; a canary answers a sticky
share of users, and once its backend dies the champion answers its users and the error
rate trips it (stopped by the supervisor, registry history). A slow or dead shadow
failing no request is tested on the proxy alone (test_split_proxy.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import httpx
import psutil
import pyarrow.compute as pc
import pytest
from prefect import get_client
from prefect.flow_runs import resume_flow_run

from components.deploy import priority
from components.deploy.challenger import attach, detach, split_stats
from components.deploy.config import ChallengerConfig, LocalDeployConfig, ServeConfig
from components.deploy.local import (
    PROC_ENV,
    deploy_version,
    read_state,
    serve_status,
    stop_local,
)
from components.deploy.targets import LocalTarget
from components.errors import DeployFailed
from components.lifecycle.online import compare_online
from components.monitoring.config import ServingLogConfig
from components.monitoring.servelog import SERVED, SERVED_SCHEMA, read_log
from components.net import free_port
from components.registry.store import ModelRegistry
from components.workspace import Workspace
from flows.online import online_decision_flow
from tests.services.conftest import ServedWorkspace, build_served_workspace

pytestmark = pytest.mark.slow
FAST_LOG = ServingLogConfig(flush_interval_s=0.2, rotate_s=0.5)
WAIT_S = 60.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedWorkspace]:
    sw = build_served_workspace(tmp_path_factory.mktemp("shadow-ws"))
    yield sw
    stop_local(sw.workspace)


@pytest.fixture(scope="module")
def serve_cfg() -> ServeConfig:
    return ServeConfig(port=free_port(), log=FAST_LOG)


def deploy_cfg(**challenger: float) -> LocalDeployConfig:
    return LocalDeployConfig(
        readiness_timeout_s=90,
        switch_drain_s=0.2,
        supervise_poll_s=0.3,
        challenger=ChallengerConfig(**challenger),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def url(served: ServedWorkspace, serve_cfg: ServeConfig) -> str:
    ws = served.workspace
    return deploy_version(ws, served.v1.version, serve_cfg, deploy_cfg(), served.features).url


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {what}")


def recommend(client: httpx.Client, user: str, rid: str | None = None) -> dict:
    headers = {"x-request-id": rid} if rid else {}
    answer = client.post("/recommend", json={"user_id": user, "k": 5}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def kill_all(proc_id: str) -> None:
    """SIGKILL every process of a recorded backend (BentoML's arbiter and its worker)."""
    procs = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(PROC_ENV) == proc_id:
                procs.append(proc)
        except (psutil.Error, OSError):
            continue
    assert procs, f"no process carries {proc_id}"
    for proc in procs:
        proc.kill()
    psutil.wait_procs(procs, timeout=10)


def actions(served: ServedWorkspace) -> list[tuple[str, str, str]]:
    return [(e.action, e.version, e.actor) for e in ModelRegistry(served.workspace).history()]


def _pair(served: ServedWorkspace) -> tuple[str, str]:
    """(the version serving as champion, the other one)."""
    state = read_state(served.workspace)
    assert state is not None and state.version is not None
    v1, v2 = served.v1.version, served.v2.version
    return state.version, v2 if state.version == v1 else v1


@pytest.fixture
def no_challenger(served: ServedWorkspace, url: str) -> tuple[str, str]:
    """Nothing attached beside the champion; (champion, other version)."""
    detach(served.workspace, "test setup")
    return _pair(served)


@pytest.fixture
def shadow(served: ServedWorkspace, serve_cfg: ServeConfig, url: str) -> tuple[str, str]:
    """A live shadow of the other version beside the champion (the one attached, else a
    new one); (champion, shadow version)."""
    ws = served.workspace
    state = read_state(ws)
    assert state is not None
    ch = state.challenger
    if ch is not None and ch.mode == "shadow" and ch.backend.alive():
        return _pair(served)
    detach(ws, "test setup")
    champion, other = _pair(served)
    attach(ws, other, "shadow", serve_cfg, deploy_cfg(), served.features, actor="test")
    return champion, other


def _shadow_processes(ws: Workspace) -> list[int]:
    state = read_state(ws)
    assert state is not None and state.challenger is not None
    marker = state.challenger.backend.proc_id
    return [p.pid for p in psutil.process_iter() if _carries(p, marker)]


def _carries(proc: psutil.Process, marker: str) -> bool:
    try:
        return proc.environ().get(PROC_ENV) == marker
    except (psutil.Error, OSError):
        return False


def test_two_attach_commands_at_once_one_wins_the_other_gets_a_clear_error(
    served: ServedWorkspace, serve_cfg: ServeConfig, no_challenger: tuple[str, str]
) -> None:
    ws, (_, other) = served.workspace, no_challenger
    outcomes: list[str] = []

    def run(actor: str) -> None:
        try:
            attach(ws, other, "shadow", serve_cfg, deploy_cfg(), served.features, actor=actor)
            outcomes.append("ok")
        except DeployFailed as exc:
            outcomes.append(exc.message)

    threads = [threading.Thread(target=run, args=(a,)) for a in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1, outcomes
    refusal = next(o for o in outcomes if o != "ok")
    assert "another deploy command" in refusal or "already attached" in refusal, refusal
    state = read_state(ws)
    assert state is not None and state.challenger is not None  # the winner's shadow
    assert state.challenger.mode == "shadow" and state.challenger.version == other
    # the shadow never competes with live traffic: every thread of its tree is SCHED_IDLE
    pids = _shadow_processes(ws)
    assert pids and all(priority.of(pid) == {"idle"} for pid in pids), pids
    assert state.challenger.cpu_priority == "idle"


def test_shadow_logs_both_answers_under_one_id_and_the_client_sees_the_champion(
    served: ServedWorkspace, serve_cfg: ServeConfig, url: str, shadow: tuple[str, str]
) -> None:
    ws, (champion, challenger) = served.workspace, shadow
    mirrored_before = split_stats(ws).get("mirrored", 0)
    users = [str(u) for u in served.events["user_id"].unique()[:12]]
    with httpx.Client(base_url=url, timeout=10) as client:
        answers = [recommend(client, u) for u in users]
        given = recommend(client, users[0], rid="client-chosen-id")
    assert {a["model_version"] for a in answers} == {champion}  # the shadow never answers
    assert given["request_id"] == "client-chosen-id"
    ids = {a["request_id"] for a in answers} | {"client-chosen-id"}

    def both_logged() -> bool:
        table = read_log(ws.serving_log_dir, SERVED, SERVED_SCHEMA)
        rows = table.filter(pc.is_in(table["request_id"], pc.cast(list(ids), "string")))
        seen = {(r["request_id"], r["model_version"]) for r in rows.to_pylist()}
        return seen == {(i, v) for i in ids for v in (champion, challenger)}

    wait_for("champion and shadow rows under the same request ids", both_logged)
    # the proxy writes its counters to the stats file a moment after it counts them
    wait_for(
        "the proxy's stats file counts every mirrored request",
        lambda: split_stats(ws).get("mirrored", 0) - mirrored_before == len(ids),
    )
    stats = split_stats(ws)
    assert stats["mode"] == "shadow" and stats["mirrored"] - mirrored_before == len(ids), stats
    assert ("shadow", challenger) in [a[:2] for a in actions(served)]
    status = serve_status(ws, serve_cfg)
    assert status["version"] == champion and status["challenger"]["mode"] == "shadow", status


def test_compare_and_conclude_promote_with_the_online_evidence(
    served: ServedWorkspace, serve_cfg: ServeConfig, url: str, shadow: tuple[str, str]
) -> None:
    ws, (v1, v2) = served.workspace, shadow
    cfg = deploy_cfg(k=5, min_lists=10, alpha=0.05)
    target = LocalTarget(cfg, serve_cfg, served.features)
    state = read_state(ws)
    assert state is not None and state.challenger is not None
    shadow_pid = state.challenger.backend.pid
    users = [str(u) for u in served.events["user_id"].unique()[:30]]
    with httpx.Client(base_url=url, timeout=10) as client:
        answers = [recommend(client, u) for u in users]
    ids = {a["request_id"] for a in answers}
    wait_for("shadow rows logged", lambda: ids <= _logged_ids(ws, v2))
    # feedback on an item only the shadow's list held: the challenger is the better arm
    table = read_log(ws.serving_log_dir, SERVED, SERVED_SCHEMA)
    shadow_lists = {
        r["request_id"]: r["items"] for r in table.to_pylist() if r["model_version"] == v2
    }
    events = []
    for a in answers:
        shown = {i["item_id"] for i in a["items"]}
        extra = [i for i in shadow_lists[a["request_id"]] if i not in shown]
        item = extra[0] if extra else a["items"][0]["item_id"]
        events.append(
            {"user_id": "u", "item_id": item, "event_type": "click", "request_id": a["request_id"]}
        )
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/feedback", json={"events": events}).status_code == 200

    def compared() -> bool:
        return compare_online(ws, target, cfg.challenger).challenger.hit_rate.n >= len(users)

    wait_for("feedback joined", compared)
    comparison = compare_online(ws, target, cfg.challenger)
    assert comparison.mode == "shadow" and comparison.agreement is not None
    assert comparison.challenger.hit_rate.value == 1.0
    assert comparison.mirror is not None and comparison.mirror.mirrored >= len(users)
    assert comparison.decision == "promote", comparison.table()
    # the retrain flow's online step: paused in Prefect, resumed with the decision
    mapping = {
        "workspace": str(ws.root),
        "serve": serve_cfg.model_dump(mode="json"),
        "deploy": cfg.model_dump(mode="json"),
        "features": served.features.model_dump(mode="json"),
    }
    mapping["deploy"]["challenger"].update(observe_s=600, poll_s=1)
    outcome: dict[str, Any] = {}

    def run_flow() -> None:
        try:
            outcome["state"] = online_decision_flow(config=mapping, actor="test", return_state=True)
        except BaseException as exc:  # reported by the waits below
            outcome["error"] = exc

    # Prefect's temporary API server is a per-process singleton that two threads starting
    # it at once race on ("Server process did not start"): start it here, before the flow
    # thread, which then uses the same one
    assert paused_runs() == []
    flow_thread = threading.Thread(target=run_flow)
    flow_thread.start()
    paused: list[UUID] = []

    def is_paused() -> bool:
        assert flow_thread.is_alive(), f"the flow ended before it paused: {outcome}"
        paused.extend(paused_runs())
        return bool(paused)

    wait_for("the flow run pauses", is_paused, 300)
    resume_flow_run(paused[0], run_input={"decision": "auto"})
    flow_thread.join(300)
    assert "state" in outcome, outcome
    done = outcome["state"].result()
    assert done.decision == "promote" and done.promotion.status == "champion"
    history = ModelRegistry(ws).history()
    promote = history[-1]
    assert (promote.action, promote.version) == ("promote", v2)
    assert promote.gate is not None and promote.gate["primary_metric"] == "online_hit_rate@5"
    assert promote.gate["p_value"] < 0.05
    assert (history[-2].action, history[-2].version) == ("challenger_stop", v2)
    assert "promoted" in history[-2].reason
    # the promoted shadow's warm process took over (no new build or start), no longer idle
    after = read_state(ws)
    assert after is not None and after.backend is not None and after.backend.pid == shadow_pid
    assert priority.of(shadow_pid) == {"normal"}
    with httpx.Client(base_url=url, timeout=10) as client:
        assert recommend(client, users[0])["model_version"] == v2
    assert ModelRegistry(ws).champion().version == v2  # type: ignore[union-attr]
    assert v1 != v2


def test_a_canary_answers_a_sticky_share_of_users_and_is_stopped_over_its_error_rate(
    served: ServedWorkspace, serve_cfg: ServeConfig, url: str, no_challenger: tuple[str, str]
) -> None:
    ws, (v1, v2) = served.workspace, no_challenger  # champion, canary
    cfg = deploy_cfg(share=0.5, min_requests=5, max_error_rate=0.2)
    attach(ws, v2, "canary", serve_cfg, cfg, served.features, actor="test")
    state = read_state(ws)
    assert state is not None and state.challenger is not None
    assert state.challenger.cpu_priority == "normal"  # a canary answers users
    users = [f"user-{i}" for i in range(40)]
    with httpx.Client(base_url=url, timeout=10) as client:
        first = {u: recommend(client, u)["model_version"] for u in users}
        again = {u: recommend(client, u)["model_version"] for u in reversed(users)}
    assert first == again  # sticky per user
    canary_users = [u for u, v in first.items() if v == v2]
    assert set(first.values()) == {v1, v2} and 8 <= len(canary_users) <= 32, first
    wait_for(
        "the proxy counts the canary's answers",
        lambda: split_stats(ws).get("challenger", {}).get("requests") == 2 * len(canary_users),
    )
    assert not split_stats(ws)["tripped"]

    kill_all(state.challenger.backend.proc_id)
    with httpx.Client(base_url=url, timeout=10) as client:
        answers = [recommend(client, u) for u in canary_users * 2]
    # an unreachable canary: the champion answers its users, and the errors trip it
    assert {a["model_version"] for a in answers} == {v1}

    def stopped_and_recorded() -> bool:
        # the supervisor saves the deployment state first, then appends to the history
        current = read_state(ws)
        last = ModelRegistry(ws).history()[-1]
        return current is not None and current.challenger is None and last.action != "canary"

    wait_for("the supervisor stops the tripped canary and records it", stopped_and_recorded)
    last = ModelRegistry(ws).history()[-1]
    assert (last.action, last.version, last.actor) == ("challenger_stop", v2, "supervisor")
    assert "error rate" in last.reason and last.metrics["proxy"]["tripped"]


def paused_runs() -> list[UUID]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=50)
    return [r.id for r in runs if r.state is not None and r.state.is_paused()]


def _logged_ids(ws: Workspace, version: str) -> set[str]:
    table = read_log(ws.serving_log_dir, SERVED, SERVED_SCHEMA)
    return set(table.filter(pc.equal(table["model_version"], version))["request_id"].to_pylist())
