"""`recops features ...` through the real command tree (in-process, Typer's runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows.cli  # noqa: F401  (registers the commands)
from components.errors import FeatureStoreError
from flows.cli.app import app

pytestmark = pytest.mark.slow


@pytest.fixture
def recops(monkeypatch: pytest.MonkeyPatch):
    """Invoke ``recops`` in-process; the workspace env it sets is restored afterwards."""
    monkeypatch.setenv("RECOPS_HOME", "unused")
    monkeypatch.setenv("BENTOML_HOME", "unused")
    runner = CliRunner()

    def invoke(home: Path, *args: str):
        return runner.invoke(app, [*args, "--workspace", str(home)])

    return invoke


def test_materialize_then_get_a_users_recent_items(tmp_path: Path, recops) -> None:
    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,item_id,timestamp\n"
        "u1,a,2024-01-01T00:00:00Z\nu1,b,2024-01-02T00:00:00Z\nu1,c,2024-01-03T00:00:00Z\n"
        "u2,a,2024-01-02T00:00:00Z\n"
    )
    home = tmp_path / "ws"
    out = tmp_path / "mat.json"
    first = recops(
        home,
        "features",
        "materialize",
        "--events",
        str(events),
        "--end",
        "2024-01-02T12:00:00Z",
        "--json",
        str(out),
    )
    assert first.exit_code == 0, first.output
    result = json.loads(out.read_text())
    assert result["end"].startswith("2024-01-02T12:00:00")
    assert {v["view"]: v["rows"] for v in result["views"]}["user_features"] == 3

    got = tmp_path / "get.json"
    before = recops(home, "features", "get", "--user", "u1", "--json", str(got))
    assert before.exit_code == 0, before.output
    assert json.loads(got.read_text())[0]["recent_items"] == ["a", "b"]  # c is after --end

    again = recops(home, "features", "materialize")  # incremental, tables kept
    assert again.exit_code == 0, again.output
    recops(home, "features", "get", "-u", "u1", "-u", "ghost", "--json", str(got))
    rows = json.loads(got.read_text())
    assert rows[0]["recent_items"] == ["a", "b", "c"]
    assert rows[1]["recent_items"] is None


def test_bad_end_time_is_a_feature_store_error(tmp_path: Path, recops) -> None:
    result = recops(tmp_path / "ws", "features", "materialize", "--end", "yesterday-ish")
    assert isinstance(result.exception, FeatureStoreError)
    assert result.exception.exit_code == 6 and "not a timestamp" in str(result.exception)
