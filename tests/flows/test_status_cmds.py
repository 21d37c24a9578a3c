"""`recops status` and `recops report` on a workspace with one recorded run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.records import RunRecord
from components.workspace import Workspace
from flows.cli import app


@pytest.fixture
def recorded(workspace: Workspace) -> Workspace:
    run_dir = workspace.runs_dir / "20260101T000000-abc123"
    run_dir.mkdir(parents=True)
    RunRecord(
        run_id="20260101T000000-abc123",
        model_name="sasrec",
        config={},
        config_hash="f" * 16,
        code_rev="test",
        data_version="a" * 32,
        metrics_test={"ndcg@10": 0.1234},
        history=[{"epoch": 1.0, "train_loss": 3.5, "ndcg@10": 0.1, "hr@10": 0.2, "elapsed_s": 1.0}],
        model_version="v1",
        status="rejected",
    ).save(run_dir / "run_record.json")
    bad = workspace.quarantine_dir / "bad-0001"
    bad.mkdir(parents=True)
    (bad / "SUMMARY.txt").write_text("2 of 9 expectations failed: event_type values\n")
    return workspace


def test_status_lists_the_run_and_the_quarantined_batch(
    recorded: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = CliRunner().invoke(app, ["status", "-w", str(recorded.root)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "== recops status =="
    assert any(line.startswith("serving      nothing deployed") for line in lines)
    assert "champion     none yet" in lines
    run = next(line for line in lines if "20260101T000000-abc123" in line)
    assert "rejected" in run and "ndcg@10 0.1234" in run
    assert "  bad-0001: 2 of 9 expectations failed: event_type values" in lines
    assert any(line.startswith("schedules    none (no Prefect server running") for line in lines)

    as_json = json.loads(
        CliRunner().invoke(app, ["status", "--json", "-w", str(recorded.root)]).output
    )
    assert as_json["runs"][0]["status"] == "rejected"
    assert as_json["quarantined"][0]["batch_id"] == "bad-0001"
    assert as_json["serving"]["deployed"] is False


def test_report_renders_a_missing_page_from_the_record(recorded: Workspace) -> None:
    result = CliRunner().invoke(app, ["report", "latest", "-w", str(recorded.root)])
    assert result.exit_code == 0, result.output
    page = Path(result.output.splitlines()[0])
    assert page == recorded.runs_dir / "20260101T000000-abc123" / "report.html"
    html = page.read_text()
    assert 'data-key="train_loss" data-epoch="1">3.5000<' in html
    assert "training_curves.png" in result.output


def test_report_of_an_unknown_run_is_a_one_line_error(recorded: Workspace) -> None:
    import subprocess
    import sys

    recops = Path(sys.executable).parent / "recops"
    done = subprocess.run(
        [str(recops), "report", "nope", "-w", str(recorded.root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[0].startswith("error: no run 'nope' in ")
    assert "Traceback" not in done.stderr
