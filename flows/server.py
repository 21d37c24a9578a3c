"""A real local Prefect server for this workspace (``recops server start|stop|status``).

Schedules and automations need a running ``prefect server start``: the temporary server
Prefect starts inside a process without ``PREFECT_API_URL`` never fires a schedule. This
module starts one as a detached process with its SQLite database and log under
``workspace.prefect_dir`` and records it (pid, start time, port) like the bento, so
``status`` finds it, ``stop`` reaps its whole process group and a stale record (a killed
server, a reused pid) is recognised and never signalled.

:func:`api_url` is the one place that decides where flows, deployments and events go:
``$PREFECT_API_URL`` when set, else this workspace's server when it answers.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil
from pydantic import BaseModel, ConfigDict

from components.deploy.local import ProcessInfo, port_in_use, stop_process
from components.errors import RecopsError
from components.net import free_port
from components.workspace import Workspace

log = logging.getLogger(__name__)

RECORD = "server.json"
DEFAULT_PORT = 4200
START_TIMEOUT_S = 180.0
API_ENV = "PREFECT_API_URL"


class OrchestratorError(RecopsError):
    """The Prefect server could not be started or is needed and not running."""

    exit_code = 11


class ServerRecord(BaseModel):
    """``prefect/server.json``: the server process this workspace started."""

    model_config = ConfigDict(extra="forbid")

    process: ProcessInfo
    host: str
    started_at: datetime

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.process.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.process.port}"


def read_record(workspace: Workspace) -> ServerRecord | None:
    path = workspace.prefect_dir / RECORD
    if not path.exists():
        return None
    return ServerRecord.model_validate_json(path.read_text())


def _write_record(workspace: Workspace, record: ServerRecord) -> None:
    path = workspace.prefect_dir / RECORD
    tmp = path.with_name(f".{RECORD}.{os.getpid()}.tmp")
    tmp.write_text(record.model_dump_json(indent=2))
    os.replace(tmp, path)


def healthy(api: str, timeout: float = 2.0) -> bool:
    """The server at ``api`` answers its health probe."""
    try:
        return httpx.get(f"{api}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def running_server(workspace: Workspace) -> ServerRecord | None:
    """The recorded server when its process is ours, alive and healthy."""
    record = read_record(workspace)
    if record is None or not record.process.alive():
        return None
    return record if healthy(record.api_url) else None


def server_env(workspace: Workspace, ui: bool = True) -> dict[str, str]:
    """The server process' environment: database and home inside the workspace."""
    home = workspace.prefect_dir
    env = {k: v for k, v in os.environ.items() if k != API_ENV}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true" if ui else "false",
        }
    )
    return env


def _spawn_server(workspace: Workspace, host: str, port: int, ui: bool) -> ProcessInfo:
    prefect = Path(sys.executable).with_name("prefect")
    cmd = [str(prefect), "server", "start", "--host", host, "--port", str(port)]
    log_path = workspace.prefect_dir / "server.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=server_env(workspace, ui),
            cwd=str(workspace.prefect_dir),
        )
    create_time = psutil.Process(proc.pid).create_time()
    return ProcessInfo(pid=proc.pid, create_time=create_time, port=port, log=str(log_path))


def _wait_healthy(info: ProcessInfo, api: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(api):
            return
        if not info.alive():
            raise OrchestratorError(f"the Prefect server exited during start-up (see {info.log})")
        time.sleep(0.5)
    stop_process(info)
    raise OrchestratorError(f"the Prefect server did not answer in {timeout:.0f}s (see {info.log})")


def start_server(
    workspace: Workspace,
    host: str = "127.0.0.1",
    port: int | None = None,
    ui: bool = True,
    timeout: float = START_TIMEOUT_S,
) -> tuple[ServerRecord, bool]:
    """Start the workspace's server unless it already runs; (record, started now)."""
    from filelock import FileLock

    workspace.prefect_dir.mkdir(parents=True, exist_ok=True)
    workspace.lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(workspace.lock_dir / "prefect-server.lock"), timeout=timeout + 30):
        existing = running_server(workspace)
        if existing is not None:
            return existing, False
        stale = read_record(workspace)
        if stale is not None:
            stop_process(stale.process)  # a hung server we started; a reused pid is left alone
        chosen = port or DEFAULT_PORT
        if port_in_use(host, chosen):
            if port:
                raise OrchestratorError(f"port {port} on {host} is already in use")
            chosen = free_port(host)
        info = _spawn_server(workspace, host, chosen, ui)
        record = ServerRecord(process=info, host=host, started_at=datetime.now(timezone.utc))
        _write_record(workspace, record)
        _wait_healthy(info, record.api_url, timeout)
        log.info("Prefect server started at %s (pid %d)", record.ui_url, info.pid)
        return record, True


def stop_server(workspace: Workspace) -> ServerRecord | None:
    """Stop the recorded server (its whole process group); None when none was recorded."""
    record = read_record(workspace)
    if record is None:
        return None
    stop_process(record.process)
    (workspace.prefect_dir / RECORD).unlink(missing_ok=True)
    return record


def server_status(workspace: Workspace) -> dict[str, Any]:
    """Whether the recorded server runs and answers; where its UI, API and log are."""
    record = read_record(workspace)
    configured = os.environ.get(API_ENV)
    if record is None:
        return {"running": False, "api_url_env": configured}
    alive = record.process.alive()
    return {
        "running": alive and healthy(record.api_url),
        "process_alive": alive,
        "pid": record.process.pid,
        "ui": record.ui_url,
        "api_url": record.api_url,
        "started_at": record.started_at.isoformat(),
        "log": record.process.log,
        "database": str(workspace.prefect_dir / "prefect.db"),
        "api_url_env": configured,
    }


def api_url(workspace: Workspace) -> str | None:
    """Where Prefect calls go: ``$PREFECT_API_URL``, else this workspace's running server."""
    configured = os.environ.get(API_ENV)
    if configured:
        return configured
    record = running_server(workspace)
    return record.api_url if record else None


def require_server(workspace: Workspace, *, start: bool) -> str:
    """A Prefect API that can fire schedules and automations.

    ``$PREFECT_API_URL`` wins. Otherwise the workspace's server, started now when
    ``start``; without it an :class:`OrchestratorError` names the command to run.
    """
    url = api_url(workspace)
    if url:
        return url
    if not start:
        raise OrchestratorError(
            "no Prefect server: schedules and automations need one",
            hint=f"run `recops server start -w {workspace.root}` or set PREFECT_API_URL",
        )
    record, _ = start_server(workspace)
    return record.api_url


@contextmanager
def using_api(url: str) -> Iterator[None]:
    """Point Prefect in this process (and the flow-run processes it starts) at ``url``."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    previous = os.environ.get(API_ENV)
    os.environ[API_ENV] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield
    finally:
        if previous is None:
            os.environ.pop(API_ENV, None)
        else:
            os.environ[API_ENV] = previous
