"""`recops bench accuracy` pieces that need no training: time to a target on both clocks,
the seed summary of `recops bench accuracy-summary`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.accuracy import (
    format_seed_table,
    protocol_figures,
    read_runs,
    seconds_to_target,
    summarise_seeds,
)
from components.errors import DataError

HISTORY = [
    {"ndcg@10": 0.02, "elapsed_s": 40.0, "cpu_s": 30.0},
    {"ndcg@10": 0.036, "elapsed_s": 90.0, "cpu_s": 61.0},
    {"ndcg@10": 0.051, "elapsed_s": 150.0, "cpu_s": 95.0},
]


def test_first_validation_at_the_target_on_the_wall_and_cpu_clocks() -> None:
    assert seconds_to_target(HISTORY, 0.035) == 90.0
    assert seconds_to_target(HISTORY, 0.035, clock="cpu_s") == 61.0
    assert seconds_to_target(HISTORY, 0.05, clock="cpu_s") == 95.0


def test_a_target_never_reached_has_no_time() -> None:
    assert seconds_to_target(HISTORY, 0.06) is None
    assert seconds_to_target(HISTORY, 0.06, clock="cpu_s") is None


def test_a_history_without_cpu_times_reports_none_not_zero() -> None:
    old = [{"ndcg@10": 0.04, "elapsed_s": 12.0}]  # run records from before the CPU clock
    assert seconds_to_target(old, 0.035) == 12.0
    assert seconds_to_target(old, 0.035, clock="cpu_s") is None


def _row(seed: int, ndcg: float, flipped: float, *, lr: float = 1e-3, **extra: object) -> dict:
    """One `bench accuracy --json` row of a history-kept run (its flip: history excluded)."""
    return {
        "model": "sasrec",
        "hr@10": 2 * ndcg,
        "ndcg@10": ndcg,
        "mrr": ndcg / 2,
        "valid_ndcg@10": ndcg + 0.01,
        "epochs": 10 + seed,
        "cpu_seconds_to_target": 30.0 + seed,
        "cpu_seconds_to_high_target": 60.0,
        "high_target_ndcg": 0.05,
        "exclude_seen": False,
        "other_protocol": {"exclude_seen": True, "hr@10": 0.1, "ndcg@10": flipped, "mrr": 0.04},
        "params": {"hidden_size": 64},
        "train": {"seed": seed, "lr": lr, "progress_bar": False},
        **extra,
    }


def _payload(*rows: dict) -> dict:
    return {"data": "Beauty.txt", "target_ndcg": 0.035, "rows": list(rows)}


def test_seed_summary_is_mean_and_sample_sd_per_configuration() -> None:
    summary = summarise_seeds(
        [
            _payload(_row(1, 0.050, 0.052)),
            _payload(_row(2, 0.054, 0.056), _row(3, 0.040, 0.041, lr=2e-3)),
            _payload(_row(3, 0.058, 0.060)),
        ]
    )
    assert [s["seeds"] for s in summary] == [[1, 2, 3], [3]]  # lr 2e-3 is apart
    kept = summary[0]["ndcg@10 kept"]
    assert kept["mean"] == pytest.approx(0.054) and kept["n"] == 3
    assert kept["sd"] == pytest.approx(0.004)  # sqrt((0.004² + 0 + 0.004²) / 2)
    assert summary[0]["ndcg@10 excluded"]["mean"] == pytest.approx(0.056)
    assert summary[0]["epochs"]["mean"] == pytest.approx(12.0)
    assert summary[1]["ndcg@10 kept"] == {"mean": pytest.approx(0.040), "sd": None, "n": 1}


def test_a_history_excluded_run_reports_its_own_figures_as_excluded() -> None:
    row = _row(1, 0.058, 0.041, exclude_seen=True)
    row["other_protocol"]["exclude_seen"] = False
    figures = protocol_figures(row)
    assert figures["ndcg@10 excluded"] == 0.058 and figures["ndcg@10 kept"] == 0.041
    assert figures["hr@10 excluded"] == pytest.approx(0.116) and figures["mrr kept"] == 0.04


def test_a_target_some_seeds_never_reached_is_counted_out_and_shown() -> None:
    unreached = _row(2, 0.054, 0.056, cpu_seconds_to_high_target=None)
    summary = summarise_seeds([_payload(_row(1, 0.050, 0.052), unreached)])
    assert summary[0]["cpu_seconds_to_high_target"] == {"mean": 60.0, "sd": None, "n": 1}
    table = format_seed_table(summary)
    assert "60 (1/2)" in table and "0.0520 ± 0.0028" in table and "CPU s to 0.05" in table


def test_a_file_that_is_not_a_benchmark_run_is_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"summary": []}))
    for path in (bad, tmp_path / "missing.json"):
        with pytest.raises(DataError) as caught:
            read_runs([path])
        assert str(path) in caught.value.message and "\n" not in caught.value.message
