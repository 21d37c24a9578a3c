"""Prefect's temporary server, started by recops before the heavy imports instead of by
Prefect at the first flow call.

Without ``PREFECT_API_URL`` Prefect starts a temporary server (``uvicorn`` over
``prefect.server.api.server:create_app``) inside the first flow call: it first imports the
whole server package into the calling process (7.3 s of a 95 s ``recops bench pipeline``
at load 10), then waits for the child to answer (15.6 s). Nothing else runs meanwhile.

:func:`start_temporary_server` spawns the same ``uvicorn`` command on
:func:`flows.prefect_app.create_temporary_app`, which asks Prefect's public ``create_app``
for the same ephemeral app (services and UI off), as the first thing a command that runs
flows does; the child starts on the other core while this process
imports torch, Lightning and the flow modules. :func:`flow_api` then waits for it (usually
not at all) and points Prefect at it for the flows run inside, and stops it afterwards.
The flow still runs on a real Prefect server with its SQLite database in ``PREFECT_HOME``,
exactly as in Prefect's own temporary mode; the reaper (:mod:`flows.reaper`) finds it
after a ``kill -9`` by its factory on the command line and the owner marker.

This module imports nothing heavy at module level: it must cost milliseconds, or starting
early buys nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from components.net import free_port
from flows.reaper import SERVER_APP  # the command line the reaper matches after a kill -9

log = logging.getLogger(__name__)

API_ENV = "PREFECT_API_URL"
HOST = "127.0.0.1"
#: a public setting: the temporary server serves no UI (``create_app(ephemeral=True)``
#: turns the UI and the background services off as well)
SERVER_ENV = {"PREFECT_UI_ENABLED": "0"}
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 5.0
#: seconds uvicorn waits for open connections after a SIGTERM before it closes them: a
#: connection held open by a dead owner's surviving child (an inherited socket) otherwise
#: kept a "stopping" server alive for good (seen once in a fault test at load 15)
GRACEFUL_SHUTDOWN_S = 3


@dataclass
class TemporaryServer:
    """A temporary Prefect server process this process started (and stops at exit)."""

    process: subprocess.Popen[bytes]
    port: int
    started: float = field(default_factory=time.perf_counter)
    #: seconds :meth:`wait_ready` blocked (0 when the server was up before it was needed)
    waited_s: float = 0.0

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    def answers(self) -> bool:
        """The server answers its health probe now."""
        import httpx

        try:
            return httpx.get(f"{self.api_url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> bool:
        """Block until the server answers (True), or it exited or ``timeout`` passed (False)."""
        begin = time.perf_counter()
        deadline = begin + timeout
        try:
            while time.perf_counter() < deadline:
                if self.answers():
                    return True
                if self.process.poll() is not None:
                    return False
                time.sleep(0.1)
            return False
        finally:
            self.waited_s = time.perf_counter() - begin

    def stop(self) -> None:
        """Terminate the server (kill it after :data:`STOP_TIMEOUT_S`); safe to call twice."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def server_command(port: int) -> list[str]:
    """Prefect's own temporary-server command (``SubprocessASGIServer``), on recops'
    factory (:func:`flows.prefect_app.create_temporary_app`)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        SERVER_APP,
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
        "--timeout-graceful-shutdown",
        str(GRACEFUL_SHUTDOWN_S),
    ]


def start_temporary_server() -> TemporaryServer | None:
    """Spawn a temporary Prefect server now, unless ``$PREFECT_API_URL`` names one.

    Returns at once (the server starts in the background); None when an API is configured.
    """
    if os.environ.get(API_ENV):
        return None
    port = free_port(HOST)
    process = subprocess.Popen(
        server_command(port), stdin=subprocess.DEVNULL, env={**os.environ, **SERVER_ENV}
    )
    server = TemporaryServer(process=process, port=port)
    atexit.register(server.stop)
    return server


def _configured_api() -> str | None:
    """The API URL Prefect's settings resolve to (environment, profile or .env)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def drain_prefect_workers() -> None:
    """Send the logs and events Prefect still queues to the server before it stops (what
    ``prefect.testing.utilities.prefect_test_harness`` does); the next flow in this process
    then gets fresh workers with the next server's URL."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # a worker that never started
        APILogWorker.instance().drain()
    EventsWorker.drain_all(timeout=STOP_TIMEOUT_S)


@contextmanager
def flow_api(server: TemporaryServer | None) -> Iterator[TemporaryServer | None]:
    """Run the flows inside against ``server`` (started early by
    :func:`start_temporary_server`), then stop it.

    Prefect's queued logs and events are sent before the server stops. Falls back to
    Prefect's own behaviour, and stops ``server``, when there is none, when
    Prefect's settings already name an API (a profile), or when the server did not come up
    (Prefect then starts its own temporary server, as it would have anyway).
    """
    if server is None:
        yield None
        return
    try:
        if _configured_api() is not None or not server.wait_ready():
            if server.process.poll() is not None:
                log.warning("the early Prefect server exited (%s)", server.process.returncode)
            server.stop()
            yield None
            return
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield server
            finally:
                drain_prefect_workers()
    finally:
        server.stop()
