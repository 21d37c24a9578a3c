"""The local deployment target: a supervised ``bentoml serve`` behind a switchable proxy.

Layout (all under ``workspace.deploy_dir``, guarded by ``lock_dir/deploy.lock``):

* ``local.json``    - the deployment state (version, bento, ports, pids, logs);
* ``backend.json``  - the proxy's target file (which backend port is live);
* ``logs/``         - one log per backend process and one for the proxy.

Switch-over (never leaves users without service): the new bento starts on a free
loopback port *beside* the old one; it must become ready (``/readyz``) and pass a smoke
test (``/metadata`` names the new version, ``/recommend`` on a known history answers
from the model); only then is ``backend.json`` rewritten, so the proxy on the public
port sends new connections to it; the public port answers with the new version (checked
through the proxy), and after ``deploy.switch_drain_s`` the old backend is stopped. Any
failure before the rewrite stops the new process and raises :class:`DeployFailed`; the
old backend and the proxy are untouched.

Processes start in their own session (``start_new_session``) with output to log files,
so they outlive the CLI that started them; BentoML's own arbiter restarts its worker if
it dies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil
from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict

from components.deploy.bento import REPO_ROOT, build_bento
from components.deploy.config import LocalDeployConfig, ServeConfig
from components.errors import DeployFailed
from components.features.config import FeaturesConfig
from components.net import free_port
from components.quiet import quiet_environment
from components.workspace import Workspace

log = logging.getLogger(__name__)

STATE_FILE = "local.json"
TARGET_FILE = "backend.json"
LOCK_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 15.0


class ProcessInfo(BaseModel):
    """A detached process we started: enough to find it again and not kill a stranger."""

    model_config = ConfigDict(extra="forbid")

    pid: int
    create_time: float
    port: int
    log: str

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return (
                abs(proc.create_time() - self.create_time) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


class LocalState(BaseModel):
    """What is deployed locally (``local.json``)."""

    model_config = ConfigDict(extra="forbid")

    host: str
    public_port: int
    version: str | None = None
    bento_tag: str | None = None
    backend: ProcessInfo | None = None
    proxy: ProcessInfo | None = None
    previous_version: str | None = None
    deployed_at: datetime | None = None


@dataclass(frozen=True)
class Deployment:
    """The result of a successful deploy."""

    version: str
    bento_tag: str
    url: str
    port: int
    pid: int
    previous_version: str | None


# --- state ----------------------------------------------------------------------------
def _lock(workspace: Workspace) -> FileLock:
    workspace.ensure()
    return FileLock(str(workspace.lock_dir / "deploy.lock"), timeout=LOCK_TIMEOUT_S)


def read_state(workspace: Workspace) -> LocalState | None:
    path = workspace.deploy_dir / STATE_FILE
    if not path.exists():
        return None
    return LocalState.model_validate_json(path.read_text())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_state(workspace: Workspace, state: LocalState) -> None:
    _write_atomic(workspace.deploy_dir / STATE_FILE, state.model_dump_json(indent=2))


# --- processes ------------------------------------------------------------------------
def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _spawn(
    cmd: list[str], log_path: Path, port: int, env: dict[str, str], cwd: Path
) -> ProcessInfo:
    """Start ``cmd`` detached (own session, no stdin, output to ``log_path``)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=str(cwd),
        )
    return ProcessInfo(
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        port=port,
        log=str(log_path),
    )


def stop_process(info: ProcessInfo | None, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group (BentoML's arbiter and its workers), SIGKILL after
    ``timeout``; a process that is already gone (or a reused pid) is left alone."""
    if info is None or not info.alive():
        return
    try:
        os.killpg(info.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(info.pid)
        if not info.alive():
            return
        time.sleep(0.1)
    log.warning("pid %d did not stop in %.0fs; killing its group", info.pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(info.pid, signal.SIGKILL)
    _reap(info.pid)


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _child_env(workspace: Workspace) -> dict[str, str]:
    env = dict(os.environ)
    env["BENTOML_HOME"] = str(workspace.bentoml_home)
    env["RECOPS_HOME"] = str(workspace.root)
    return quiet_environment(env)


def start_backend(workspace: Workspace, bento_tag: str, host: str) -> ProcessInfo:
    """``bentoml serve <bento_tag>`` on a free loopback port."""
    port = free_port(host)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    log_path = workspace.deploy_dir / "logs" / f"backend-{bento_tag.replace(':', '-')}-{stamp}.log"
    cmd = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", host, "--port", str(port)]
    # cwd outside the repo: the bento must run its own copy of services/ and components/
    return _spawn(cmd, log_path, port, _child_env(workspace), workspace.deploy_dir)


def start_proxy(workspace: Workspace, host: str, port: int) -> ProcessInfo:
    log_path = workspace.deploy_dir / "logs" / "proxy.log"
    cmd = [
        sys.executable,
        "-m",
        "components.deploy.proxy",
        "--host",
        host,
        "--port",
        str(port),
        "--target-file",
        str(workspace.deploy_dir / TARGET_FILE),
    ]
    info = _spawn(cmd, log_path, port, _child_env(workspace), REPO_ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_in_use(host, port):
            return info
        if not info.alive():
            break
        time.sleep(0.1)
    stop_process(info)
    raise DeployFailed(f"the proxy did not open {host}:{port} (see {log_path})")


# --- checks ---------------------------------------------------------------------------
def auth_headers(serve_cfg: ServeConfig) -> dict[str, str]:
    key = os.environ.get(serve_cfg.api_key_env)
    return {"X-API-Key": key} if key else {}


def wait_ready(info: ProcessInfo, host: str, timeout: float) -> None:
    """Poll ``/readyz`` until 200; DeployFailed when the process dies or time runs out."""
    url = f"http://{host}:{info.port}/readyz"
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            _reap(info.pid)
            if not info.alive():
                raise DeployFailed(
                    f"the new server exited before it was ready: "
                    f"{_last_error(info.log)} (log: {info.log})"
                )
            if (failure := startup_failure(info.log)) is not None:
                raise DeployFailed(f"the new server failed to load: {failure} (log: {info.log})")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise DeployFailed(f"the new server was not ready after {timeout:.0f}s (log: {info.log})")


def smoke_test(base_url: str, version: str, serve_cfg: ServeConfig) -> None:
    """``/metadata`` names ``version`` and ``/recommend`` answers from the model."""
    headers = auth_headers(serve_cfg)
    try:
        with httpx.Client(base_url=base_url, timeout=30.0, headers=headers) as client:
            meta = client.get("/metadata")
            meta.raise_for_status()
            served = meta.json().get("model_version")
            if served != version:
                raise DeployFailed(f"smoke test: {base_url} serves {served}, expected {version}")
            sample = meta.json().get("sample_items") or []
            answer = client.post("/recommend", json={"history": sample, "k": 5})
            answer.raise_for_status()
            body = answer.json()
    except httpx.HTTPError as exc:
        raise DeployFailed(f"smoke test against {base_url} failed: {exc}") from exc
    if sample and (body.get("source") != "model" or not body.get("items")):
        raise DeployFailed(f"smoke test: /recommend did not answer from the model: {body}")


STARTUP_ERROR_MARKER = "Initializing service error"  # BentoML logs it when __init__ raises


def startup_failure(log_path: str) -> str | None:
    """The exception line when BentoML reported a failing service ``__init__``, else None
    (its arbiter would keep retrying the worker; we fail fast instead)."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return None
    at = text.find(STARTUP_ERROR_MARKER)
    if at < 0:
        return None
    for line in text[at:].splitlines()[1:]:
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head.strip():
            return line.strip()[:300]
    return "service initialisation raised"


def _last_error(log_path: str) -> str:
    try:
        lines = Path(log_path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors or lines or ["no output"])[-1].strip()[:300]


# --- public API -----------------------------------------------------------------------
def deploy_version(
    workspace: Workspace,
    version: str,
    serve_cfg: ServeConfig,
    deploy_cfg: LocalDeployConfig,
    features_cfg: FeaturesConfig,
) -> Deployment:
    """Build the bento for ``version`` and switch the local deployment to it (see module doc).

    Raises :class:`DeployFailed` (the previous deployment keeps serving) when the build,
    start-up, readiness or smoke test fails, or the public port belongs to someone else.
    """
    host = serve_cfg.host
    try:
        with _lock(workspace):
            return _deploy_locked(workspace, version, host, serve_cfg, deploy_cfg, features_cfg)
    except Timeout as exc:
        raise DeployFailed("another deployment is in progress (deploy lock held)") from exc


def _deploy_locked(
    workspace: Workspace,
    version: str,
    host: str,
    serve_cfg: ServeConfig,
    deploy_cfg: LocalDeployConfig,
    features_cfg: FeaturesConfig,
) -> Deployment:
    state = read_state(workspace)
    proxy = state.proxy if state and state.proxy and state.proxy.alive() else None
    if proxy is not None and proxy.port != serve_cfg.port:
        raise DeployFailed(
            f"the local deployment listens on port {proxy.port}, not {serve_cfg.port}",
            hint="run `recops serve stop` first",
        )
    if proxy is None and port_in_use(host, serve_cfg.port):
        raise DeployFailed(
            f"port {serve_cfg.port} on {host} is in use by another program",
            hint="set serve.port to a free port",
        )
    old_backend = state.backend if state and state.backend and state.backend.alive() else None

    bento = build_bento(workspace, version, serve_cfg, deploy_cfg, features_cfg)
    backend = start_backend(workspace, bento.tag, host)
    log.info("started %s on port %d (pid %d)", bento.tag, backend.port, backend.pid)
    started_proxy = False
    try:
        wait_ready(backend, host, deploy_cfg.readiness_timeout_s)
        smoke_test(f"http://{host}:{backend.port}", bento.version, serve_cfg)
        if proxy is None:
            proxy = start_proxy(workspace, host, serve_cfg.port)
            started_proxy = True
        _write_atomic(
            workspace.deploy_dir / TARGET_FILE,
            json.dumps({"host": host, "port": backend.port, "version": bento.version}),
        )
        smoke_test(f"http://{host}:{serve_cfg.port}", bento.version, serve_cfg)
    except BaseException:
        stop_process(backend)
        if started_proxy:
            stop_process(proxy)
        if old_backend is not None:  # the proxy may already point at the new port
            _write_atomic(
                workspace.deploy_dir / TARGET_FILE,
                json.dumps(
                    {
                        "host": host,
                        "port": old_backend.port,
                        "version": state.version if state else None,
                    }
                ),
            )
        raise
    previous = state.version if state else None
    new_state = LocalState(
        host=host,
        public_port=serve_cfg.port,
        version=bento.version,
        bento_tag=bento.tag,
        backend=backend,
        proxy=proxy,
        previous_version=previous,
        deployed_at=datetime.now(timezone.utc),
    )
    _save_state(workspace, new_state)
    if old_backend is not None and old_backend.pid != backend.pid:
        time.sleep(deploy_cfg.switch_drain_s)
        stop_process(old_backend)
    log.info(
        "deployed %s at http://%s:%d (previous: %s)", bento.version, host, serve_cfg.port, previous
    )
    return Deployment(
        version=bento.version,
        bento_tag=bento.tag,
        url=f"http://{host}:{serve_cfg.port}",
        port=serve_cfg.port,
        pid=backend.pid,
        previous_version=previous,
    )


def serve_status(workspace: Workspace, serve_cfg: ServeConfig) -> dict[str, Any]:
    """What is deployed and whether it answers (never raises for a dead deployment)."""
    state = read_state(workspace)
    if state is None or state.version is None:
        return {"deployed": False}
    base = f"http://{state.host}:{state.public_port}"
    health: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=base, timeout=5.0, headers=auth_headers(serve_cfg)) as client:
            health["healthz"] = client.get("/healthz").status_code
            health["readyz"] = client.get("/readyz").status_code
            meta = client.get("/metadata")
            health["serving_version"] = (
                meta.json().get("model_version") if meta.is_success else None
            )
    except httpx.HTTPError as exc:
        health["error"] = str(exc)
    return {
        "deployed": True,
        "version": state.version,
        "bento_tag": state.bento_tag,
        "url": base,
        "port": state.public_port,
        "backend_port": state.backend.port if state.backend else None,
        "pid": state.backend.pid if state.backend else None,
        "backend_alive": bool(state.backend and state.backend.alive()),
        "proxy_pid": state.proxy.pid if state.proxy else None,
        "proxy_alive": bool(state.proxy and state.proxy.alive()),
        "previous_version": state.previous_version,
        "deployed_at": state.deployed_at.isoformat() if state.deployed_at else None,
        "log": state.backend.log if state.backend else None,
        **health,
    }


def stop_local(workspace: Workspace) -> LocalState | None:
    """Stop the backend and the proxy; returns what was running (None if nothing)."""
    with _lock(workspace):
        state = read_state(workspace)
        if state is None:
            return None
        stop_process(state.backend)
        stop_process(state.proxy)
        (workspace.deploy_dir / TARGET_FILE).unlink(missing_ok=True)
        (workspace.deploy_dir / STATE_FILE).unlink(missing_ok=True)
        return state
