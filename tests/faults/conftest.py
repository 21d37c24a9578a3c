"""Fault injection: real ``recops`` processes killed with SIGKILL at named points
(``components/faults.py``), a real redis-server stopped, frozen and emptied, a real
(tmpfs) filesystem filled. Each test then checks that nothing was lost or appended twice
and that the next command succeeds without a human."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from components.data.config import SyntheticConfig
from components.data.synthetic import generate_events

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "flows.cli"]  # not -c: see flows/cli/__main__.py


@dataclass
class Done:
    rc: int
    out: str
    err: str


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RECOPS_HOME", None)
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        COLUMNS="200",
        **extra,
    )
    return env


def recops(tmp_path: Path, *args: str, timeout: float = 300, **env: str) -> Done:
    """Run ``recops ARGS`` to completion in a fresh process."""
    done = subprocess.run(
        [*CLI, *args],
        env=cli_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Done(done.returncode, done.stdout, done.stderr)


def kill_at(
    tmp_path: Path,
    point: str,
    *args: str,
    timeout: float = 300,
    python: list[str] | None = None,
) -> int:
    """Start ``recops ARGS`` (or the ``python`` command line with ARGS), wait until it
    reaches ``point``, then SIGKILL it; its pid."""
    marker = tmp_path / f"reached-{point}-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [*(python or CLI), *args],
        env=cli_env(tmp_path, RECOPS_FAULT_POINT=point, RECOPS_FAULT_FILE=str(marker)),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(
                    f"recops exited ({proc.returncode}) before {point}: {proc.stderr.read()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"recops did not reach {point} in {timeout:.0f}s")
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        return proc.pid
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def event_batches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two consecutive CSV batches of one small synthetic world (older, newer)."""
    events = generate_events(SyntheticConfig(n_users=80, n_items=60, n_events=3000, seed=11))
    events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    half = len(events) // 2
    folder = tmp_path_factory.mktemp("batches")
    paths = (folder / "week1.csv", folder / "week2.csv")
    for path, part in zip(paths, (events.iloc[:half], events.iloc[half:]), strict=True):
        part.to_csv(path, index=False)
    return paths


def rows(path: Path) -> int:
    return len(pd.read_csv(path))
