"""``recops data add`` exit codes and output, through the real console entry point."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.components.validation.conftest import make_events


def _recops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_data_add_accepts_then_rejects_then_lists_versions(tmp_path):
    ws = str(tmp_path / "ws")
    good = tmp_path / "good.csv"
    make_events(seed=11).to_csv(good, index=False)
    accepted = _recops("data", "add", str(good), "-w", ws)
    assert accepted.returncode == 0, accepted.stderr
    assert "accepted" in accepted.stdout and "dataset version" in accepted.stdout

    bad = tmp_path / "bad.csv"
    frame = make_events(seed=12).astype({"event_type": object})
    frame.loc[:20, "event_type"] = "teleport"
    frame.to_csv(bad, index=False)
    rejected = _recops("data", "add", str(bad), "-w", ws, "--batch-id", "bad1")
    assert rejected.returncode == 4
    assert "event_type_known" in rejected.stderr
    assert str(tmp_path / "ws" / "quarantine" / "bad1") in rejected.stderr.replace("\n", "")

    listed = _recops("data", "versions", "--json", "-w", ws)
    assert listed.returncode == 0
    versions = json.loads(listed.stdout)
    assert len(versions) == 1 and versions[0]["current"] and versions[0]["n_rows"] == 400
