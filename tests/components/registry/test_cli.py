"""`recops models list/show/promote` and `recops rollback` against a real workspace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from components.registry.changes import apply_gate, rollback_champion
from components.registry.store import ModelRegistry
from tests.conftest import REPO_ROOT

from .conftest import register_n


def recops(*args: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("recops")
    return subprocess.run(
        [str(exe), *args, "--workspace", str(workspace)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "RECOPS_ACTOR": "cli:tester",
            "PATH": "/usr/bin:/bin",
            "BENTOML_DO_NOT_TRACK": "true",
            "PYTHONPATH": str(REPO_ROOT),  # this checkout, not wherever recops is installed
        },
    )


def test_cli_promote_promote_rollback_list_show(registry: ModelRegistry) -> None:
    root = registry.workspace.root
    v1, v2 = register_n(registry, 2)

    assert recops("models", "promote", v1, "--reason", "first", workspace=root).returncode == 0
    out = recops("models", "promote", v2[:8], workspace=root)
    assert out.returncode == 0, out.stderr
    assert f"manual_promote: champion {v1} -> {v2}" in out.stdout

    # `recops rollback` is a Prefect flow (flows/cli/run_cmds.py); its registry step:
    change = rollback_champion(registry, actor="cli:tester")
    assert change.describe().startswith(f"rollback: champion {v2} -> {v1}")

    listed = json.loads(recops("models", "list", "--json", workspace=root).stdout)
    assert [(row["version"], row["status"]) for row in listed] == [
        (v1, "champion"),
        (v2, "retired"),
    ]
    assert listed[0]["data_version"] == "data-0" and listed[0]["ndcg@10"] == 0.1

    table = recops("models", "list", workspace=root).stdout
    assert v1 in table and "champion" in table and "NDCG@10" in table

    shown = recops("models", "show", v1, workspace=root)
    assert shown.returncode == 0, shown.stderr
    assert "config hash" in shown.stdout and "hash0" in shown.stdout
    assert "rollback" in shown.stdout and "cli:tester" in shown.stdout
    history = json.loads(recops("models", "show", v1, "--json", workspace=root).stdout)["history"]
    assert [e["action"] for e in history] == ["register", "manual_promote", "rollback"]


def test_cli_errors_are_one_line_with_exit_code(registry: ModelRegistry) -> None:
    root = registry.workspace.root
    out = recops("models", "promote", "missing", workspace=root)
    assert out.returncode == 8
    assert "error: no registered model version 'missing'" in out.stderr
    assert "Traceback" not in out.stderr
    out = recops("models", "show", "missing", workspace=root)
    assert out.returncode == 8 and "no registered model version" in out.stderr


def test_apply_gate_and_rollback_changes(registry: ModelRegistry) -> None:
    from components.evaluation.gate import GateDecision

    v1, v2 = register_n(registry, 2)
    yes = GateDecision(
        promote=True,
        reasons=["better"],
        primary_metric="ndcg@10",
        challenger={"ndcg@10": 0.2},
        baseline={"ndcg@10": 0.1},
        reference="baseline",
    )
    no = yes.model_copy(update={"promote": False, "reasons": ["not significant"]})
    first = apply_gate(registry, v1, yes, actor="flow:retrain")
    assert (first.before, first.after, first.event.action) == (None, v1, "promote")
    second = apply_gate(registry, v2, no, actor="flow:retrain")
    assert (second.before, second.after, second.event.action) == (v1, v1, "reject")
    assert not second.changed and second.event.reason == "not significant"
    assert registry.get(v2).record.gate["reasons"] == ["not significant"]
    shown = recops("models", "show", v1, workspace=registry.workspace.root).stdout
    assert "gate decision:" in shown and "decision: PROMOTE" in shown
    registry.promote(v2, actor="ops", reason="override")
    back = rollback_champion(registry, actor="ops")
    assert (back.before, back.after) == (v2, v1) and "rollback" in back.describe()
