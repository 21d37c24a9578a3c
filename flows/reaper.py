"""Reap the temporary Prefect servers that killed ``recops`` processes left behind.

Without ``PREFECT_API_URL`` Prefect starts a temporary server (a ``uvicorn`` child,
~200 MB) inside each process that runs a flow and stops it on a clean exit; a ``kill -9``
of that process leaves it running forever. Every ``recops`` command marks itself in its
environment (:data:`OWNER_ENV`, inherited by the server it starts), and reaps, before it
does anything else, each temporary server whose marked owner is gone. A server started by
another program (no marker), or with another ``PREFECT_HOME``, is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import psutil

from components.owner import owner_alive, owner_marker

log = logging.getLogger(__name__)

OWNER_ENV = "RECOPS_OWNER"  # "<pid>:<create time>" of the recops process that ran flows
#: the factory recops' own early temporary server runs (:mod:`flows.prefect_app`)
SERVER_APP = "flows.prefect_app:create_temporary_app"
#: the factory of the temporary server Prefect starts itself (when no early one is used)
PREFECT_SERVER_APP = "prefect.server.api.server:create_app"


def mark_owner() -> None:
    """Record this process as the owner of any temporary server it will start."""
    os.environ[OWNER_ENV] = owner_marker()


def _prefect_home(env: dict[str, str]) -> str:
    return str(Path(env.get("PREFECT_HOME", "~/.prefect")).expanduser().resolve())


def _temporary(cmdline: list[str], env: dict[str, str]) -> bool:
    """Ours by its factory; Prefect's own by the marker Prefect gives its child (read only
    to recognise it: a ``prefect server start`` a user runs never carries it)."""
    return SERVER_APP in cmdline or env.get("PREFECT__SERVER_EPHEMERAL") == "1"


def orphaned_servers() -> list[psutil.Process]:
    """Temporary Prefect servers of this ``PREFECT_HOME`` whose recops owner is dead."""
    home = _prefect_home(dict(os.environ))
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = proc.info["cmdline"] or []
            if SERVER_APP not in cmdline and PREFECT_SERVER_APP not in cmdline:
                continue
            env = proc.environ()
            marker = env.get(OWNER_ENV)
            if not marker or not _temporary(cmdline, env):
                continue
            if _prefect_home(env) == home and not owner_alive(marker):
                found.append(proc)
    return found


def reap_orphaned_servers() -> int:
    """Kill every orphaned temporary server (see module doc); returns how many."""
    orphans = orphaned_servers()
    for proc in orphans:
        with contextlib.suppress(psutil.Error):
            log.info("stopping the temporary Prefect server pid %d left by a killed run", proc.pid)
            proc.kill()
            proc.wait(timeout=10)
    return len(orphans)
