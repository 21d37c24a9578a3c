"""The online decision's statistics and its behaviour on simulated logs (in the serving
log's schemas, through the same comparison ``recops deploy compare`` runs)."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from benchmarks.online import (
    CHALLENGER,
    CHAMPION,
    World,
    decide_once,
    render_table,
    run_online_benchmark,
    simulate_logs,
)
from components.deploy.online import (
    compare,
    mcnemar_greater,
    paired_delta_ci,
    two_proportion_greater,
    two_sample_ci,
)


def test_mcnemar_is_the_exact_binomial_tail_of_the_discordant_pairs() -> None:
    assert mcnemar_greater(0, 0) == 1.0
    expected = binomtest(14, 20, 0.5, alternative="greater").pvalue
    assert mcnemar_greater(14, 6) == pytest.approx(expected)
    assert mcnemar_greater(6, 14) > 0.5  # the champion winning is no evidence


def test_intervals_contain_the_observed_difference_and_shrink_with_n() -> None:
    low, high = paired_delta_ci(30, 10, 200)  # type: ignore[misc]
    assert low < 0.1 < high
    wide = two_sample_ci(20, 100, 30, 100)
    narrow = two_sample_ci(200, 1000, 300, 1000)
    assert wide is not None and narrow is not None
    assert wide[0] < 0.1 < wide[1] and narrow[1] - narrow[0] < wide[1] - wide[0]
    assert two_proportion_greater(200, 1000, 300, 1000) < 1e-4
    assert two_proportion_greater(300, 1000, 200, 1000) > 0.99


@pytest.mark.parametrize("mode", ["shadow", "canary"])
def test_a_better_challenger_is_promoted_and_an_equal_one_is_not(mode: str) -> None:
    world = World()
    assert decide_once(world, 3000, True, mode, seed=0)["decision"] == "promote"
    equal = decide_once(world, 3000, False, mode, seed=1)
    assert equal["decision"] == "retire"
    assert decide_once(world, 3000, True, mode, seed=0)["challenger_hr"] > equal["champion_hr"]


def test_the_benchmark_reports_power_and_false_promotions_per_horizon() -> None:
    result = run_online_benchmark([400], seeds=3)
    assert {r["mode"] for r in result["rows"]} == {"shadow", "canary"}
    for row in result["rows"]:
        assert 0 <= row["power"] <= 1 and 0 <= row["false_promotion"] <= 1
    assert "false+" in render_table(result)


def test_compare_reports_the_shadows_dropped_copies() -> None:
    """A shadow that could not keep up: the proxy's dropped copies are in the comparison
    (table and JSON) beside the test on the copies it answered."""
    world = World()
    served, feedback = simulate_logs(world, 200, True, "shadow", seed=0)
    proxy = {"mode": "shadow", "mirrored": 150, "dropped": 50, "mirror_timeouts": 3}
    c = compare(
        served,
        feedback,
        mode="shadow",
        champion=CHAMPION,
        challenger=CHALLENGER,
        k=10,
        alpha=0.05,
        min_lists=50,
        proxy=proxy,
    )
    assert c.mirror is not None and c.mirror.drop_share == pytest.approx(0.25)
    assert "200 copies, 50 dropped (25.0%; 0 stale), 3 timed out" in c.table()
    assert c.as_dict()["mirror"]["drop_share"] == pytest.approx(0.25)
    canary = compare(
        served,
        feedback,
        mode="canary",
        champion=CHAMPION,
        challenger=CHALLENGER,
        k=10,
        alpha=0.05,
        min_lists=50,
        proxy={**proxy, "mode": "canary"},
    )
    assert canary.mirror is None and "mirror:" not in canary.table()
