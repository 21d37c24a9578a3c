"""A shadow's CPU priority (components/deploy/priority.py) on a real process tree: a
parent with threads and a child process, lowered to SCHED_IDLE / nice 19 and back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from components.deploy import priority

# a parent with three extra threads and a child process that has two of its own
TREE = """
import subprocess, sys, threading, time
child = "import threading, time\\n[threading.Thread(target=time.sleep, args=(60,)).start() for _ in range(2)]\\ntime.sleep(60)"
subprocess.Popen([sys.executable, "-c", child])
[threading.Thread(target=time.sleep, args=(60,)).start() for _ in range(3)]
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def tree() -> Iterator[list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the child's own threads are up
        children = parent.children()
        if children and children[0].num_threads() >= 3:
            break
        time.sleep(0.05)
    pids = [proc.pid] + [c.pid for c in parent.children()]
    yield pids
    for pid in reversed(pids):
        psutil.Process(pid).kill()
    proc.wait(10)


def test_a_process_tree_is_lowered_thread_by_thread_and_raised_again(tree: list[int]) -> None:
    assert len(tree) == 2 and all(len(os.listdir(f"/proc/{p}/task")) >= 3 for p in tree)
    assert all(priority.of(p) == {"normal"} for p in tree)
    assert priority.apply(tree, "idle")
    assert all(priority.of(p) == {"idle"} for p in tree)
    assert priority.apply(tree, "low")
    assert all(priority.of(p) == {"low"} for p in tree)
    raised = priority.apply(tree, "normal")  # needs CAP_SYS_NICE (CI and this host: root)
    if os.geteuid() == 0:
        assert raised and all(priority.of(p) == {"normal"} for p in tree)
    else:  # refused, reported: a promoted shadow then gets a fresh process
        assert not raised and all(priority.of(p) == {"low"} for p in tree)
