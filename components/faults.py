"""Named points where the fault-injection tests stop a real process.

``pause_point("versioning.after_dvc_add")`` does nothing unless the process was started
with ``RECOPS_FAULT_POINT`` naming that point; then it writes ``RECOPS_FAULT_FILE`` (so
the test knows the process got there) and sleeps until the test kills it with SIGKILL.
This is how tests/faults/ kills ``recops`` at an exact step instead of at a random time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

POINT_ENV = "RECOPS_FAULT_POINT"
FILE_ENV = "RECOPS_FAULT_FILE"


def armed(name: str) -> bool:
    """Whether this process was started to stop at ``name`` (hooks that cost something on
    a hot path, such as a training callback, are added only then)."""
    return os.environ.get(POINT_ENV) == name


def pause_point(name: str) -> None:
    """Block forever at ``name`` when the environment asks for it (see module doc)."""
    if not armed(name):
        return
    marker = os.environ.get(FILE_ENV)
    if marker:
        Path(marker).write_text(f"{os.getpid()}\n")
    while True:  # the test kills us here
        time.sleep(60)
