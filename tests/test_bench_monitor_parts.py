"""`recops bench monitor` pieces that need no server: order-balanced blocks, the interval."""

from __future__ import annotations

import pytest

from benchmarks.monitor import balanced_blocks, paired_cost


def _pair(on_first: bool, cost: float, order_effect: float) -> dict:
    """A pair where the bento that runs second pays ``order_effect`` more CPU per request."""
    second_on = 1.0 + order_effect if not on_first else 1.0
    second_off = 1.0 + order_effect if on_first else 1.0
    return {
        "requests_on": 100,
        "requests_off": 100,
        "cpu_s_on": 100 * (1 + cost) * second_on,
        "cpu_s_off": 100 * second_off,
    }


def test_blocks_cancel_the_order_effect_that_single_pairs_show() -> None:
    pairs = [_pair(on_first=i % 2 == 0, cost=0.01, order_effect=0.3) for i in range(8)]
    single = [p["cpu_s_on"] / p["cpu_s_off"] - 1 for p in pairs]
    assert max(single) > 0.25 and min(single) < -0.2  # what one pair alone would report
    blocks = balanced_blocks(pairs)
    assert len(blocks) == 4
    assert all(b["cpu"] == pytest.approx(0.01, abs=1e-3) for b in blocks)
    assert all(b["throughput"] == 0.0 for b in blocks)


def test_paired_cost_interval_holds_the_median_and_narrows_with_agreement() -> None:
    spread = paired_cost([-0.2, 0.1, 0.0, 0.3, -0.1, 0.05])
    tight = paired_cost([0.01, 0.012, 0.009, 0.011, 0.01, 0.0105])
    for c in (spread, tight):
        assert c["ci95"][0] <= c["median"] <= c["ci95"][1]
    assert tight["ci95"][1] - tight["ci95"][0] < spread["ci95"][1] - spread["ci95"][0]
    assert paired_cost([])["blocks"] == 0
