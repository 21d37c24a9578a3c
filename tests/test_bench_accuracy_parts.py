"""`recops bench accuracy` pieces that need no training: time to a target on both clocks."""

from __future__ import annotations

from benchmarks.accuracy import seconds_to_target

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
