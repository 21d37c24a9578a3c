"""``recops bench data --engine stream --stages``: a run measured stage by stage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from benchmarks.data import (
    EngineRun,
    bench_synthetic,
    run_data_benchmark,
    run_split_benchmark,
    same_outputs,
    stream_reference,
)
from components.data.config import DataConfig
from components.data.stream import write_events_dataset


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


def test_the_engine_comparison_finds_any_differing_output(tmp_path: Path) -> None:
    """``bench data --engine spark``'s equality check compares outputs element by element:
    the stream engine's own run equals itself, and one changed item, one changed check
    or one changed accepted count is found."""
    write_events_dataset(bench_synthetic(3_000), tmp_path / "events", 1_000)
    cfg = DataConfig(max_len=5, engine="stream")
    ran = EngineRun()
    stream_reference(tmp_path, cfg, None, ran)
    assert ran.report.passed and ran.sequences is not None and ran.split is not None
    assert same_outputs(ran, ran) == {"all_equal": True, **dict.fromkeys(_OUTPUTS, True)}

    values = ran.sequences.values.copy()
    values[len(values) // 2] += 1
    changed = replace(ran, sequences=replace(ran.sequences, values=values))
    assert _unequal(same_outputs(changed, ran)) == ["sequences"]

    results = [r.model_copy() for r in ran.report.results]
    results[-1] = results[-1].model_copy(update={"observed": 0.5})
    other_report = ran.report.model_copy(update={"results": results})
    assert _unequal(same_outputs(replace(ran, report=other_report), ran)) == ["validation_checks"]

    fewer = ran.version.model_copy(update={"n_rows": ran.version.n_rows - 1})
    assert _unequal(same_outputs(replace(ran, version=fewer), ran)) == ["accepted_rows"]


_OUTPUTS = (
    "validation_verdict",
    "validation_checks",
    "batch_stats",
    "accepted_rows",
    "vocabulary",
    "sequences",
    "split",
)


def _unequal(compared: dict[str, bool]) -> list[str]:
    assert compared["all_equal"] is False
    return [name for name, same in compared.items() if not same and name != "all_equal"]
