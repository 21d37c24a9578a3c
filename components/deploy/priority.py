"""CPU priority of a backend process tree: a shadow never competes with live traffic.

A shadow's answers are never returned to a client, so its model work should only use CPU
the champion leaves idle. Linux offers two levels below a normal process:

* ``idle`` - the ``SCHED_IDLE`` policy (``sched(7)``): a scheduler weight of 3 against a
  normal task's 1024 (nice 19: 15), so in practice it runs on CPU nothing else wants.
  The default for a shadow.
* ``low`` - nice 19 under the normal policy.

A shadow starts at normal priority (imports and model load: its readiness must not wait
for spare CPU) and is lowered by :func:`apply` once it passed its checks, before the
proxy mirrors anything to it: thread by thread (Linux keeps the policy and the nice
value per thread; threads started later inherit their creator's). Going back up (a
promoted shadow whose warm process becomes the champion) needs ``CAP_SYS_NICE`` or an
``RLIMIT_NICE`` that allows it; :func:`apply` returns False when the kernel refuses, and
the caller starts a fresh process instead.
"""

from __future__ import annotations

import contextlib
import os
from typing import Literal

Priority = Literal["normal", "low", "idle"]
LOW_NICE = 19


def _threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def apply(pids: list[int], priority: Priority) -> bool:
    """Set ``priority`` on every thread of ``pids``; False when the kernel refused any
    (raising a priority without the privilege). Vanished threads are skipped; a second
    pass catches a thread started by one not yet changed."""
    for _ in range(2):
        for pid in pids:
            for tid in _threads(pid):
                try:
                    _set(tid, priority)
                except PermissionError:
                    return False
                except ProcessLookupError:
                    continue
    return all(of(pid) <= {priority} for pid in pids)


def _set(tid: int, priority: Priority) -> None:
    if priority == "idle":
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        return
    if os.sched_getscheduler(tid) != os.SCHED_OTHER:
        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, tid, LOW_NICE if priority == "low" else 0)


def of(pid: int) -> set[str]:
    """The priorities the threads of ``pid`` run at (``{"idle"}`` for a lowered shadow)."""
    found: set[str] = set()
    for tid in _threads(pid):
        with contextlib.suppress(OSError):
            if os.sched_getscheduler(tid) == os.SCHED_IDLE:
                found.add("idle")
            elif os.getpriority(os.PRIO_PROCESS, tid) >= LOW_NICE:
                found.add("low")
            else:
                found.add("normal")
    return found
