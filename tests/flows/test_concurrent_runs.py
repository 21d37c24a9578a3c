"""Two `recops run` processes on one workspace at once, on the same batch: both finish,
the dataset has one version with the batch once, and the registry has exactly one champion
and a complete, ordered history (the promotion lock serialises gate -> promote).

The batch is one file given to both (``--data``): without it each run generates "the next
synthetic batch" of the version it finds, so a run that starts after the other accepted
its batch rightly ingests batch 1, and the test would depend on start-up timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.data.config import SyntheticConfig
from components.data.synthetic import write_events_parquet

BIN = Path(sys.executable).parent
SMALL = [
    "--set",
    "deploy.target=none",
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
    batch = write_events_parquet(
        SyntheticConfig(n_users=200, n_items=60, n_events=4000, n_clusters=4),
        tmp_path / "batch.parquet",
    )
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "COLUMNS": "200"}
    cmd = [str(BIN / "recops"), "run", "-w", str(ws), "--data", str(batch), *SMALL]
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
