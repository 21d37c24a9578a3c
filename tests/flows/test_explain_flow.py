"""The influence report of a real retrain flow (Prefect, GX, DVC, Lightning; no serving),
and `recops explain` on the workspace it leaves behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow


def _config(workspace: Path) -> dict[str, Any]:
    return {
        "workspace": str(workspace),
        "data": {
            "max_len": 20,
            "synthetic": {"n_users": 120, "n_items": 40, "n_events": 2400, "n_clusters": 3},
        },
        "model": {"name": "sasrec", "params": {"hidden_size": 16, "num_layers": 1}},
        "train": {"max_epochs": 2, "progress_bar": False, "num_threads": 1},
        "features": {"enabled": False},
        "deploy": {"target": "none"},
        "explain": {"report_users": 30, "report_k": 5},
    }


def _artifact(flow_run_id: Any, key: str) -> str:
    """The data of the one artifact ``key`` of flow run ``flow_run_id`` (from the API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    assert len(found) == 1, found
    return str(found[0].data)


@pytest.fixture(scope="module")
def api(prefect_server) -> Iterator[str]:
    """The shared real Prefect server as this process's API (no ephemeral server)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, _ = prefect_server
    with temporary_settings({PREFECT_API_URL: url}):
        yield url


@pytest.fixture(scope="module")
def two_runs(api: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run 1 (no champion yet), promote its model by hand, run 2 (challenger vs champion)."""
    from components.registry.store import ModelRegistry
    from components.workspace import Workspace
    from flows.retrain import retrain_flow

    ws_root = tmp_path_factory.mktemp("explain-flow") / "ws"
    config = _config(ws_root)
    first = retrain_flow(config=config, return_state=True)
    record_1 = first.result().record.model_dump(mode="json")
    registry = ModelRegistry(Workspace.at(ws_root))
    if registry.champion() is None:
        registry.promote(record_1["model_version"], actor="test", reason="a champion to compare")
    second = retrain_flow(config=config, return_state=True)
    return {
        "ws": ws_root,
        "runs": [
            (state.state_details.flow_run_id, state.result().record.model_dump(mode="json"))
            for state in (first, second)
        ],
    }


def test_each_retrain_writes_the_plot_the_figures_and_an_artifact(two_runs) -> None:
    for index, (flow_run_id, record) in enumerate(two_runs["runs"]):
        run_dir = Path(record["artifact_dir"])
        png = run_dir / "influence.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        reports = json.loads((run_dir / "influence.json").read_text())
        labels = [r["label"] for r in reports]
        assert labels == (["challenger"] if index == 0 else ["challenger", "champion"])
        challenger = reports[0]
        assert challenger["model_version"] == record["model_version"]
        assert challenger["explainable"] and challenger["users"] == 30
        assert challenger["pairs"] == 30 * 5
        assert 0.0 <= challenger["last_item_share"] <= 1.0
        assert challenger["by_events_ago"][0]["events_ago"] == 1
        shares = [row["mean_share"] for row in challenger["by_events_ago"]]
        assert all(0.0 <= s <= 1.0 for s in shares)
        kinds = {row["event_type"] for row in challenger["by_event_type"]}
        assert kinds <= {"view", "click", "cart", "purchase"} and len(kinds) > 1
        markdown = _artifact(flow_run_id, "recops-influence")
        assert "driven mostly by the last event" in markdown and str(png) in markdown
        assert f"`{record['model_version']}`" in markdown
    champion = json.loads(
        (Path(two_runs["runs"][1][1]["artifact_dir"]) / "influence.json").read_text()
    )[1]
    assert champion["model_version"] == two_runs["runs"][0][1]["model_version"]


def test_recops_explain_prints_the_engines_answer_as_a_table(two_runs, monkeypatch) -> None:
    """In-process through the command tree (Typer's runner)."""
    import flows.cli  # noqa: F401  (registers the commands)
    from flows.cli.app import app

    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    ws = str(two_runs["ws"])
    out = runner.invoke(app, ["explain", "--user", "u1", "--k", "3", "-w", ws])
    assert out.exit_code == 0, out.output + repr(out.exception)
    lines = out.output.splitlines()
    assert lines[0].startswith("user u1:") and "because:" in lines[1]
    assert sum(1 for line in lines if line[:4].strip() in {"1", "2", "3"}) == 3
    json_path = two_runs["ws"] / "explain.json"
    item = runner.invoke(
        app, ["explain", "--user", "u1", "--item", "i1", "-w", ws, "--json", str(json_path)]
    )
    assert item.exit_code == 0, item.output + repr(item.exception)
    assert "item i1: score" in item.output and "raised by:" in item.output
    answer = json.loads(json_path.read_text())
    assert answer["item_id"] == "i1" and answer["explanation"]["explainable"]
    assert answer["explanation"]["method"] == "group"  # the default for one item
    assert answer["rank"] >= 1


def test_recops_explain_bad_input_is_one_line(two_runs) -> None:
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("recops")
    ws = str(two_runs["ws"])
    for args, fragment in (
        (["--user", "nobody"], "unknown user 'nobody'"),
        (["--user", "u1", "--item", "nothing"], "unknown item 'nothing'"),
        (["--user", "u1", "--version", "nope"], "nope"),
        (["--user", "u1", "--method", "magic"], "--method must be deletion, group or search"),
    ):
        done = subprocess.run(
            [str(exe), "explain", *args, "-w", ws], capture_output=True, text=True, timeout=300
        )
        assert done.returncode != 0, done.stdout
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0], done.stderr
