"""``recops bench data --engine stream --stages``: a run measured stage by stage."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.data import run_data_benchmark, run_split_benchmark


def _stage_names(report: dict) -> list[str]:
    return [s["stage"].split(" ")[0] for s in report["stages"]]


def test_stages_run_one_at_a_time_reuse_the_kept_folder(tmp_path: Path) -> None:
    keep = tmp_path / "keep"

    def run(*stages: str, budget_mb: int = 352) -> dict:
        out = tmp_path / f"{'-'.join(stages)}.json"
        run_data_benchmark(
            20_000, out, engine="stream", budget_mb=budget_mb, keep_dir=keep, stages=stages
        )
        return json.loads(out.read_text())

    first = run("generate", "bucket", "validate")
    assert _stage_names(first) == ["generate+write", "bucket", "validate"]
    assert first["stages"][2]["passed"] and (keep / "report.json").exists()
    # the next command versions and splits what the first one left (no regeneration)
    second = run("version", "sequences")
    assert _stage_names(second) == ["version", "sequences+split"]
    assert second["stages"][1]["passes"] > 1  # the small budget needs several passes
    assert second["stages"][1]["test_users"] > 0
    # the feature tables leave about 2 MB beside the process at 902 MB: several passes
    third = run("features", budget_mb=902)
    assert _stage_names(third) == ["feature", "materialize"]
    assert third["stages"][0]["files"] > 2 * third["stages"][0]["days"]
    assert third["stages"][1]["entities"]["user_features"] == 20_000 // 50


def test_split_only_reports_the_split_of_every_user(tmp_path: Path) -> None:
    report = run_split_benchmark(5_000, tmp_path / "split.json", per_user=10)
    written = json.loads((tmp_path / "split.json").read_text())
    assert written["events"] == report["events"] == 5_000
    assert written["valid_users"] == written["test_users"] == 500
    assert written["train_events"] == 500 * 8  # two held out per user
    assert written["peak_rss_mb"] > 0
