"""End to end: `recops run` with real Prefect, GX, DVC, Feast, Lightning and BentoML.

1. a first run trains SASRec on a synthetic batch, beats the pop baseline, builds the bento
   and serves it; /recommend answers over HTTP with features from the Feast online store;
2. a second run with a deliberately worse model (pop) is rejected by the gate and the
   first model keeps serving;
3. a run on a bad batch stops at validation, quarantined; serving is untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from components.net import free_port

BIN = Path(sys.executable).parent
SMALL = [
    "--set",
    "data.synthetic.n_users=300",
    "--set",
    "data.synthetic.n_items=80",
    "--set",
    "data.synthetic.n_events=6000",
    "--set",
    "data.synthetic.n_clusters=4",
    "--set",
    "train.max_epochs=15",
    "--set",
    "train.progress_bar=false",
]


def _recops(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "COLUMNS": "200"}
    return subprocess.run(
        [str(BIN / "recops"), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    ws = tmp_path_factory.mktemp("e2e") / "ws"
    port = free_port()
    common = ["-w", str(ws), "--set", f"serve.port={port}", *SMALL]
    first = _recops("run", *common)
    yield ws, port, common, first
    _recops("serve", "stop", "-w", str(ws))


def _metadata(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=10).json()


@pytest.mark.slow
def test_first_run_promotes_and_serves(served) -> None:
    ws, port, _, first = served
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "PROMOTED" in first.stdout
    assert f"curl -s -X POST http://127.0.0.1:{port}/recommend" in first.stdout
    version = _metadata(port)["model_version"]
    assert version in first.stdout

    # by user id: the history comes from the Feast online store
    reply = httpx.post(
        f"http://127.0.0.1:{port}/recommend", json={"user_id": "u1", "k": 5}, timeout=30
    )
    assert reply.status_code == 200
    body = reply.json()
    assert body["source"] == "model" and len(body["items"]) == 5
    assert body["model_version"] == version

    models = _recops("models", "list", "--json", "-w", str(ws))
    listed = json.loads(models.stdout)
    assert [m["status"] for m in listed if m["version"] == version] == ["champion"]


@pytest.mark.slow
def test_worse_challenger_is_rejected_and_champion_keeps_serving(served) -> None:
    ws, port, common, first = served
    assert first.returncode == 0
    before = _metadata(port)["model_version"]
    second = _recops("run", *common, "--set", "model.name=pop")
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "REJECTED" in second.stdout
    assert _metadata(port)["model_version"] == before
    listed = json.loads(_recops("models", "list", "--json", "-w", str(ws)).stdout)
    statuses = {m["version"]: m["status"] for m in listed}
    assert statuses[before] == "champion"
    assert sorted(statuses.values()).count("rejected") == 1


@pytest.mark.slow
def test_bad_batch_is_quarantined_and_nothing_changes(served, tmp_path: Path) -> None:
    ws, port, common, first = served
    assert first.returncode == 0
    before = _metadata(port)["model_version"]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "user_id,item_id,timestamp,event_type\nu1,i1,2026-01-01T00:00:00Z,teleport\n" * 50
    )
    original = bad.read_bytes()
    third = _recops("run", *common, "--data", str(bad), "--format", "csv")
    assert third.returncode == 4, third.stdout[-3000:] + third.stderr[-3000:]
    assert "quarantine" in third.stderr and "Traceback" not in third.stderr
    quarantined = list((ws / "quarantine").iterdir())
    assert len(quarantined) == 1
    assert bad.read_bytes() == original  # the user's file is never modified
    assert _metadata(port)["model_version"] == before


@pytest.mark.slow
def test_manual_promote_deploy_then_rollback_serves_the_earlier_model(served) -> None:
    ws, port, common, first = served
    assert first.returncode == 0
    original = _metadata(port)["model_version"]
    listed = json.loads(_recops("models", "list", "--json", "-w", str(ws)).stdout)
    other = next(m["version"] for m in listed if m["version"] != original)

    promoted = _recops("models", "promote", other, "--reason", "e2e manual override", "-w", str(ws))
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    deployed = _recops("deploy", *common)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert _metadata(port)["model_version"] == other

    rolled = _recops("rollback", *common)
    assert rolled.returncode == 0, rolled.stdout[-3000:] + rolled.stderr[-3000:]
    assert _metadata(port)["model_version"] == original
    champion = [
        m["version"]
        for m in json.loads(_recops("models", "list", "--json", "-w", str(ws)).stdout)
        if m["status"] == "champion"
    ]
    assert champion == [original]
    history = (ws / "registry" / "history.jsonl").read_text().splitlines()
    actions = [json.loads(line)["action"] for line in history]
    assert actions[-2:] == ["manual_promote", "rollback"]
