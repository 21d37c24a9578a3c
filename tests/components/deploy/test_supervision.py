"""Supervision and the process model over real HTTP against real bentos on loopback.

One module-scoped workspace (two tiny SASRec versions, real Feast features). In order of
the module, each test leaving a healthy deployment for the next: a SIGKILLed arbiter is
restarted and its orphaned worker stopped; a SIGKILLed proxy is restarted; a deploy
killed before its switch leaks no backend; one killed during its drain leaves no old
backend and ``serve status`` warns that serving differs from the champion, until a
reconcile serves the champion again (recorded in the registry history); a model that
keeps crashing is rolled back (registry history); a stop leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from filelock import FileLock

from components.deploy.config import LocalDeployConfig, ServeConfig
from components.deploy.local import (
    PROC_ENV,
    deploy_version,
    ensure_supervisor,
    marked_processes,
    read_state,
    serve_status,
    stop_local,
)
from components.deploy.targets import LocalTarget
from components.lifecycle.reconcile import disagreement, reconcile
from components.net import free_port
from components.registry.store import ModelRegistry
from tests.conftest import REPO_ROOT
from tests.services.conftest import ServedWorkspace, build_served_workspace, register

pytestmark = pytest.mark.slow
WAIT_S = 120.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedWorkspace]:
    sw = build_served_workspace(tmp_path_factory.mktemp("supervised-ws"))
    yield sw
    stop_local(sw.workspace)


@pytest.fixture(scope="module")
def serve_cfg() -> ServeConfig:
    return ServeConfig(port=free_port())


@pytest.fixture(scope="module")
def deploy_cfg() -> LocalDeployConfig:
    return LocalDeployConfig(  # process starts: these tests kill them at every step
        readiness_timeout_s=90,
        switch_drain_s=0.2,
        hot_swap=False,
        supervise_poll_s=0.3,
        restart_backoff_s=0.5,
        max_restarts=2,
        crash_window_s=600,
        # a supervisor pass holds the deploy lock while it restarts a backend (several
        # seconds under load): these tests' own deploy commands wait it out rather than
        # getting DeployBusy (the busy answer itself is tested in test_local_checks.py)
        lock_wait_s=120,
    )


@pytest.fixture(scope="module")
def deployed(served: ServedWorkspace, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig) -> str:
    d = deploy_version(served.workspace, served.v1.version, serve_cfg, deploy_cfg, served.features)
    return d.url


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for: {what}")


def serving(url: str) -> str | None:
    """The version the public port answers /recommend from (None when it does not)."""
    try:
        answer = httpx.post(f"{url}/recommend", json={"history": ["i1"], "k": 2}, timeout=5)
    except httpx.HTTPError:
        return None
    return answer.json().get("model_version") if answer.status_code == 200 else None


def carriers(proc_id: str) -> list[int]:
    out = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(PROC_ENV) == proc_id:
                out.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return out


def test_a_sigkilled_arbiter_is_restarted_and_its_orphan_worker_stopped(
    served: ServedWorkspace, deployed: str, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> None:
    ws = served.workspace
    status = serve_status(ws, serve_cfg, deploy_cfg)
    assert (status["health"], status["exit_code"]) == ("ok", 0), status
    assert status["supervisor_alive"] and serving(deployed) == served.v1.version
    before = read_state(ws)
    assert before is not None and before.backend is not None
    workers = [p.pid for p in psutil.Process(before.backend.pid).children(recursive=True)]
    assert workers, "BentoML's arbiter runs its worker as a child"

    os.kill(before.backend.pid, signal.SIGKILL)  # the arbiter only: its worker is orphaned

    def restarted() -> bool:
        state = read_state(ws)
        return bool(state and state.restarts == 1 and state.backend and state.backend.alive())

    wait_for("the supervisor restarts the backend", restarted)
    wait_for("the public port answers again", lambda: serving(deployed) == served.v1.version)
    assert carriers(before.backend.proc_id) == [], "the orphaned worker was stopped"
    assert not any(psutil.pid_exists(pid) and _alive(pid) for pid in workers)
    status = serve_status(ws, serve_cfg, deploy_cfg)
    assert status["health"] == "warning" and status["exit_code"] == 1  # answers, restarted
    assert status["restarts"] == 1 and "backend" in status["last_event"]


def test_a_sigkilled_proxy_is_restarted(
    served: ServedWorkspace, deployed: str, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> None:
    state = read_state(served.workspace)
    assert state is not None and state.proxy is not None
    os.kill(state.proxy.pid, signal.SIGKILL)
    wait_for("the proxy answers again", lambda: serving(deployed) == served.v1.version, 60)

    def recorded() -> bool:  # the new proxy answers a moment before its state is saved
        after = read_state(served.workspace)
        return bool(after and after.proxy_restarts == 1)

    wait_for("the supervisor records the proxy restart", recorded, 10)
    after = read_state(served.workspace)
    assert after is not None and after.proxy_restarts == 1 and after.proxy is not None
    assert after.last_event is not None and "proxy" in after.last_event
    assert after.proxy.pid != state.proxy.pid and after.proxy.alive()


def test_a_killed_deploy_leaks_no_backend_and_keeps_serving(
    served: ServedWorkspace, deployed: str, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> None:
    ws = served.workspace
    recorded = read_state(ws)
    assert recorded is not None and recorded.backend is not None
    deploy = _deploy_in_child(served, served.v2.version, serve_cfg, deploy_cfg)
    try:

        def new_backend_started() -> bool:
            ids = marked_processes(ws)
            return any(i.startswith("backend-") and i != recorded.backend.proc_id for i in ids)

        wait_for("the deploy starts its new backend", new_backend_started, 180)
        deploy.send_signal(signal.SIGKILL)  # mid-deploy: before the switch-over
        deploy.wait(30)
    finally:
        if deploy.poll() is None:
            deploy.kill()
    # the next command (or the supervisor's next pass, whichever takes the lock first)
    status = serve_status(ws, serve_cfg, deploy_cfg)

    def only_the_recorded_backend() -> bool:
        backends = [i for i in marked_processes(ws) if i.startswith("backend-")]
        return backends == [recorded.backend.proc_id]

    wait_for("the killed deploy's backend is stopped", only_the_recorded_backend, 30)
    assert serving(deployed) == served.v1.version and status["version"] == served.v1.version


def test_a_deploy_killed_during_the_drain_leaves_no_old_backend_and_says_so(
    served: ServedWorkspace, deployed: str, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> None:
    ws = served.workspace
    v3 = register(ModelRegistry(ws), served.events, seed=3, ndcg=0.13).version
    old = read_state(ws)
    assert old is not None and old.backend is not None
    slow_drain = deploy_cfg.model_copy(update={"switch_drain_s": 120.0})
    deploy = _deploy_in_child(served, v3, serve_cfg, slow_drain)
    try:

        def switched() -> bool:
            now = read_state(ws)
            return bool(now and now.version == v3)

        wait_for("the deploy switches to v3 (the drain begins)", switched, 240)
        deploy.send_signal(signal.SIGKILL)  # during the drain: the old backend still runs
        deploy.wait(30)
    finally:
        if deploy.poll() is None:
            deploy.kill()
    wait_for("the old backend is stopped", lambda: carriers(old.backend.proc_id) == [], 60)
    assert serving(deployed) == v3
    status = serve_status(ws, serve_cfg, deploy_cfg)
    # served and champion now differ (the killed flow never promoted): a warning, not ok
    assert (status["version"], status["champion"]) == (v3, served.v1.version)
    assert (status["health"], status["exit_code"]) == ("warning", 1)


def test_a_reconcile_serves_the_champion_again_and_records_it(
    served: ServedWorkspace, deployed: str, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> None:
    ws = served.workspace
    found = disagreement(ws)  # what the killed deploy above left: v3 serving, v1 champion
    assert found is not None and found[1] == served.v1.version
    target = LocalTarget(deploy_cfg, serve_cfg, served.features)
    done = reconcile(ws, target.deploy, actor="test")
    assert done is not None and (done.served_before, done.champion) == found
    assert serving(deployed) == served.v1.version
    registry = ModelRegistry(ws)
    last = registry.history()[-1]
    assert (last.action, last.version, last.actor) == ("reconcile", served.v1.version, "test")
    assert last.metrics == {"replaced_serving": found[0]}
    assert registry.state().champion == served.v1.version  # no status changed
    assert disagreement(ws) is None and reconcile(ws, target.deploy, actor="test") is None
    status = serve_status(ws, serve_cfg, deploy_cfg)
    assert status["version"] == status["champion"] == served.v1.version


def _deploy_in_child(
    served: ServedWorkspace, version: str, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> subprocess.Popen[bytes]:
    script = (
        "from components.deploy.config import LocalDeployConfig, ServeConfig; "
        "from components.features.config import FeaturesConfig; "
        "from components.deploy.local import deploy_version; "
        "from components.workspace import Workspace; "
        f"deploy_version(Workspace.at({str(served.workspace.root)!r}), {version!r}, "
        f"ServeConfig.model_validate_json({serve_cfg.model_dump_json()!r}), "
        f"LocalDeployConfig.model_validate_json({deploy_cfg.model_dump_json()!r}), "
        "FeaturesConfig())"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", script], env=env, cwd=str(REPO_ROOT))


def test_a_redeploy_with_other_settings_replaces_the_supervisor(
    served: ServedWorkspace, deployed: str, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> None:
    ws = served.workspace
    before = read_state(ws)
    assert before is not None and before.supervisor is not None and before.supervisor.alive()
    stricter = deploy_cfg.model_copy(update={"max_restarts": 5})
    with FileLock(str(ws.lock_dir / "deploy.lock"), timeout=60):
        state = read_state(ws)
        assert state is not None
        assert not ensure_supervisor(ws, state, serve_cfg, deploy_cfg)  # same settings: kept
        assert ensure_supervisor(ws, state, serve_cfg, stricter)  # as a redeploy calls it
    after = read_state(ws)
    assert after is not None and after.supervisor is not None
    assert after.supervisor.pid != before.supervisor.pid and not before.supervisor.alive()
    assert '"max_restarts":5' in " ".join(psutil.Process(after.supervisor.pid).cmdline())
    with FileLock(str(ws.lock_dir / "deploy.lock"), timeout=60):  # the module's settings back
        state = read_state(ws)
        assert state is not None and ensure_supervisor(ws, state, serve_cfg, deploy_cfg)
    assert serving(deployed) == before.version


def test_a_crash_loop_backs_off_then_rolls_back_in_the_registry(
    served: ServedWorkspace, deployed: str, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> None:
    ws = served.workspace
    registry = ModelRegistry(ws)
    before = read_state(ws)
    assert before is not None and before.version is not None
    if registry.state().champion != before.version:  # the killed deploy never promoted
        registry.promote(before.version, actor="test", reason="serving")
    d2 = deploy_version(ws, served.v2.version, serve_cfg, deploy_cfg, served.features)
    registry.promote(served.v2.version, actor="test", reason="deployed")
    assert serving(deployed) == served.v2.version
    # v2 now crashes on every start: its weights in the bento (and BentoML's store) rot
    rotted = list(Path(ws.bentoml_home).rglob(f"{served.v2.version}/weights.pt"))
    assert rotted
    for path in rotted:
        path.write_bytes(b"not a checkpoint")
    state = read_state(ws)
    assert state is not None and state.backend is not None and state.backend.pid == d2.pid
    os.killpg(state.backend.pid, signal.SIGKILL)

    def rolled_back() -> bool:
        now = read_state(ws)
        return bool(now and now.rolled_back_from == served.v2.version)

    wait_for("the crash loop ends in a rollback", rolled_back, 300)
    wait_for("the previous version answers again", lambda: serving(deployed) == before.version)
    last = registry.history()[-1]
    assert (last.action, last.version, last.actor) == ("rollback", before.version, "supervisor")
    assert "crash loop" in last.reason and registry.champion().version == before.version
    status = serve_status(ws, serve_cfg, deploy_cfg)
    assert status["rolled_back_from"] == served.v2.version and status["health"] == "warning"


def test_stop_leaves_no_process_behind(
    served: ServedWorkspace, deployed: str, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> None:
    ws = served.workspace
    assert marked_processes(ws)
    state = read_state(ws)
    assert state is not None and state.backend is not None
    stop_local(ws)
    assert marked_processes(ws) == {}
    # the bento's shutdown hook (it closes the micro-batcher, then the logs) ran to its end
    assert "Completed cleanup hook: _close" in Path(state.backend.log).read_text()
    status = serve_status(ws, serve_cfg, deploy_cfg)
    assert (status["health"], status["exit_code"]) == ("unknown", 3)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
