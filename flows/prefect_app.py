"""The ASGI factory of recops' temporary Prefect server, through Prefect's public API.

:mod:`flows.temporary_server` serves it with ``uvicorn --factory``: the same app Prefect's
own temporary server runs (``create_app`` with ``ephemeral=True``: no UI, no background
services; ``final=True``: the only app this process builds), asked for by its documented
arguments rather than by the private environment variables Prefect sets for its child.

The server stops itself when the ``recops`` command that started it is gone, however it
ended: a ``SIGTERM`` (a scheduler's timeout, ``kill``) ends that process without its
``atexit`` hooks, and a ``kill -9`` without anything. The server inherits its owner's
marker (:data:`flows.reaper.OWNER_ENV`) and watches it; the reaper stays as the backstop
for a server that could not stop itself.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING

from components.owner import owner_alive
from flows.reaper import OWNER_ENV

if TYPE_CHECKING:
    from fastapi import FastAPI


#: seconds between two looks at the owner (a psutil lookup: microseconds)
OWNER_POLL_S = 0.5
#: seconds after the SIGTERM before the watch kills the process outright (uvicorn's own
#: shutdown is bounded by ``--timeout-graceful-shutdown``; this is the last resort)
KILL_AFTER_S = 30.0


def _watch_owner(marker: str) -> None:
    # Nothing is logged here: this process's stderr is its owner's, and when the owner is
    # gone it may be a pipe nobody reads any more (full: a write blocks) or nobody holds
    # (a write raises and ended this thread before it stopped anything).
    while owner_alive(marker):
        time.sleep(OWNER_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
    time.sleep(KILL_AFTER_S)  # a daemon thread: only still here if the shutdown hung
    os.kill(os.getpid(), signal.SIGKILL)


def stop_with_owner(marker: str | None) -> threading.Thread | None:
    """Stop this process (``SIGTERM``) once the process of ``marker`` has ended; no-op for
    a server started by something other than a ``recops`` command (no marker)."""
    if not marker:
        return None
    watcher = threading.Thread(target=_watch_owner, args=(marker,), name="owner-watch", daemon=True)
    watcher.start()
    return watcher


def create_temporary_app() -> FastAPI:
    """Prefect's REST API as a temporary server (``uvicorn --factory`` calls this)."""
    from prefect.server.api.server import create_app

    stop_with_owner(os.environ.get(OWNER_ENV))
    return create_app(ephemeral=True, final=True)
