"""Which process owns a piece of state, and whether that process still lives.

A marker is ``"<pid>:<create time>"``: the creation time tells a live owner from an
unrelated process that later got the same pid. Run records of running trainings, the
registry's staging folders and the temporary Prefect servers of ``recops`` commands carry
one, so the next command can tell what a ``kill -9`` left behind from work in progress.
"""

from __future__ import annotations

import psutil


def owner_marker() -> str:
    """This process's marker."""
    me = psutil.Process()
    return f"{me.pid}:{me.create_time():.3f}"


def owner_alive(marker: str) -> bool:
    """Whether the process that wrote ``marker`` still runs (False for a malformed one)."""
    pid, _, created = marker.partition(":")
    try:
        owner = psutil.Process(int(pid))
        return abs(owner.create_time() - float(created)) < 1.0 and (
            owner.status() != psutil.STATUS_ZOMBIE
        )
    except (ValueError, psutil.Error):
        return False
