"""`recops serve status` exit codes reach the shell (monitors read them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_status_of_an_empty_workspace_exits_3_unknown(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "BENTOML_DO_NOT_TRACK": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve", "status"]
        + ["--workspace", str(tmp_path / "ws")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=str(REPO_ROOT),
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "nothing is deployed" in done.stdout
