"""`dvc repro` runs every stage of dvc.yaml on a tiny dataset, with real DVC."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_dvc_repro_runs_all_stages_and_reports_metrics(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "dvc.yaml", project)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["max_epochs"] = 2
    # a content-aware model: the catalogue travels prepare -> train -> evaluate, and its
    # categories reach the model through the workspace's Feast store (no text encoder)
    params["model"]["params"] = {"item_features": ["id", "category"]}
    params["features"]["text_encoder"] = "none"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert _run(["git", "init", "-q"], project).returncode == 0
    assert _run(["dvc", "init", "-q"], project).returncode == 0

    result = _run(["dvc", "repro"], project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("prepare", "validate", "features", "train", "evaluate"):
        assert f"Running stage '{stage}'" in result.stdout
    metrics = json.loads((project / "pipeline" / "metrics.json").read_text())["test"]
    assert 0.0 <= metrics["ndcg@10"] <= 1.0 and metrics["n_users"] > 0
    items = pd.read_parquet(project / "pipeline" / "items.parquet")
    assert len(items) > 0 and items["category"].str.len().gt(0).all()
    report = json.loads((project / "pipeline" / "validation.json").read_text())
    assert report["passed"] is True

    shown = _run(["dvc", "metrics", "show", "--json"], project)
    assert shown.returncode == 0 and "ndcg@10" in shown.stdout
    # nothing changed: a second repro is a no-op
    again = _run(["dvc", "repro"], project)
    assert again.returncode == 0 and "Running stage" not in again.stdout
