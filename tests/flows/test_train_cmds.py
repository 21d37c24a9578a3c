"""`recops train`, `recops evaluate`, `recops bench accuracy` and `recops bench step` through the real command
tree (in-process, Typer's runner) on a tiny file in the Beauty (one sequence per line) format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import flows.cli  # noqa: F401  (registers the commands)
from flows.cli.app import app


@pytest.fixture
def seq_file(tmp_path: Path) -> Path:
    """80 users walking a 30-item cycle (i -> i+1) from random starts, one line each."""
    rng = np.random.default_rng(0)
    lines = []
    for user in range(1, 81):
        start = int(rng.integers(0, 30))
        items = [(start + step) % 30 + 1 for step in range(int(rng.integers(5, 12)))]
        lines.append(" ".join(map(str, [user, *items])))
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def recops(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "home" / "bentoml"))
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result

    return invoke


FAST = ["--set", "train.batch_size=16", "--set", "train.progress_bar=false"]
SMALL_SASREC = ["--set", "model.params.hidden_size=16", *FAST]


def test_train_then_evaluate_the_saved_bundle(recops, seq_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    recops(
        "train",
        "--data",
        str(seq_file),
        "--format",
        "seq",
        "--model",
        "sasrec",
        "--max-epochs",
        "3",
        *SMALL_SASREC,
        "--json",
        str(out),
    )
    trained = json.loads(out.read_text())
    assert trained["model"] == "sasrec" and trained["epochs"] >= 1 and not trained["exclude_seen"]
    assert trained["test"]["n_users"] == 80  # every user is evaluated
    assert trained["seen_bias"] < 0  # the walk never revisits an item within a window
    evaluated = tmp_path / "eval.json"
    result = recops(
        "evaluate",
        "--model-dir",
        trained["bundle_dir"],
        "--data",
        str(seq_file),
        "--format",
        "seq",
        "--keep-seen",
        "--json",
        str(evaluated),
    )
    assert "history items NOT excluded" in result.output
    metrics = json.loads(evaluated.read_text())["metrics"]
    assert metrics["ndcg@10"] == pytest.approx(trained["test"]["ndcg@10"], abs=1e-6)


def test_bench_accuracy_prints_and_writes_one_row_per_model(
    recops, seq_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    result = recops(
        "bench",
        "accuracy",
        "--data",
        str(seq_file),
        "--format",
        "seq",
        "--models",
        "pop,sasrec",
        "--max-epochs",
        "2",
        *FAST,
        "--json",
        str(out),
    )
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["pop", "sasrec"]
    sasrec = rows[1]
    assert sasrec["epochs"] >= 1 and sasrec["train_samples_per_s"] > 0 and sasrec["peak_rss_mb"] > 0
    assert sasrec["other_protocol"]["exclude_seen"] is True
    assert rows[0]["seen_bias"] is None and isinstance(sasrec["seen_bias"], float)
    table = result.output
    assert "seen offset" in table and "history items not excluded" in table
    assert "s to NDCG>=0.05" in table and "seconds_to_high_target" in sasrec
    assert "(CPU s)" in table and "cpu_seconds_to_target" in sasrec
    assert all(entry["cpu_s"] > 0 for entry in sasrec["history"])
    assert any(line.startswith("sasrec") for line in table.splitlines())
    # the seed summary reads the run back: the same file twice = two runs of one seed
    summary_out = tmp_path / "summary.json"
    result = recops("bench", "accuracy-summary", str(out), str(out), "--json", str(summary_out))
    summary = json.loads(summary_out.read_text())["summary"]
    assert [(s["model"], s["seeds"]) for s in summary] == [("pop", [42, 42]), ("sasrec", [42, 42])]
    kept = summary[1]["ndcg@10 kept"]
    assert kept["mean"] == pytest.approx(sasrec["ndcg@10"]) and kept["sd"] == 0.0
    assert summary[1]["ndcg@10 excluded"]["mean"] == pytest.approx(
        sasrec["other_protocol"]["ndcg@10"]
    )
    assert "valid NDCG@10" in result.output and "NDCG@10 excl" in result.output


def test_bench_step_times_each_phase_per_variant(recops, seq_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "step.json"
    result = recops(
        "bench",
        "step",
        "--data",
        str(seq_file),
        "--format",
        "seq",
        "--model",
        "lrurec",
        "--batch-sizes",
        "8,16",
        "--precisions",
        "fp32,bf16",
        "--steps",
        "2",
        "--json",
        str(out),
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch_size"], r["precision"]) for r in rows] == [
        (8, "fp32"),
        (8, "bf16"),
        (16, "fp32"),
        (16, "bf16"),
    ]
    for row in rows:
        phases = sum(row[f"{p}_ms"] for p in ("collate", "encode", "loss", "backward"))
        assert row["step_ms"] == pytest.approx(phases) and row["targets_per_s"] > 0
        assert row["timed_steps"] == 2
    assert rows[2]["lr"] == pytest.approx(rows[0]["lr"] * 2**0.5)  # sqrt-scaled with the batch
    assert "b16 bf16" in result.output
