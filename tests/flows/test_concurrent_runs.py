"""Two `recops run` processes on one workspace at once: both finish, the dataset has one
version with the batch once, and the registry has exactly one champion and a complete,
ordered history (the promotion lock serialises gate -> promote)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SMALL = [
    "--set",
    "deploy.target=none",
    "--set",
    "data.synthetic.n_users=200",
    "--set",
    "data.synthetic.n_items=60",
    "--set",
    "data.synthetic.n_events=4000",
    "--set",
    "data.synthetic.n_clusters=4",
    "--set",
    "model.name=itemknn",  # fits in seconds and clearly beats pop: the lock is under test
    "--set",
    "train.progress_bar=false",
    "--set",
    "features.enabled=false",
]


@pytest.mark.slow
def test_two_concurrent_runs_leave_one_champion(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "COLUMNS": "200"}
    cmd = [str(BIN / "recops"), "run", "-w", str(ws), *SMALL]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(o[-3000:] for o in outputs)

    versions = json.loads(
        subprocess.run(
            [str(BIN / "recops"), "data", "versions", "--json", "-w", str(ws)],
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    )
    assert len(versions) == 1 and len(versions[0]["batches"]) == 1

    history = [
        json.loads(line) for line in (ws / "registry" / "history.jsonl").read_text().splitlines()
    ]
    actions = sorted(e["action"] for e in history)
    assert actions.count("register") == 2
    assert actions.count("promote") + actions.count("reject") == 2
    assert actions.count("promote") >= 1
    listed = json.loads(
        subprocess.run(
            [str(BIN / "recops"), "models", "list", "--json", "-w", str(ws)],
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    )
    assert [m["status"] for m in listed].count("champion") == 1
