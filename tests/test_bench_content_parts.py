"""Pure parts of the content benchmarks: Wilson intervals and the pooled cold-item hits."""

from __future__ import annotations

import pytest
import torch

from benchmarks.content import summarise, wilson_interval
from benchmarks.funnel import RecentOracle, summarise_funnel


def test_wilson_interval_matches_hand_computed_values() -> None:
    # 6 hits in 264: p = 0.0227; Wilson 95 % by hand = [0.01046, 0.04869]
    assert wilson_interval(6, 264) == pytest.approx((0.01046, 0.04869), abs=1e-4)
    lo, hi = wilson_interval(0, 90)
    assert lo == 0.0 and hi == pytest.approx(0.04090, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_cold_hits_are_pooled_over_seeds() -> None:
    rows = [
        {"model": "m", "protocol": "cold_items", "hr@10": h, "ndcg@10": 0.0, "test_users": n}
        for h, n in ((3 / 90, 90), (1 / 79, 79), (2 / 95, 95))
    ]
    (entry,) = summarise(rows)
    assert (entry["hr@10_hits"], entry["hr@10_pooled_users"]) == (6, 264)
    assert entry["hr@10_wilson95"] == pytest.approx(wilson_interval(6, 264))


def test_funnel_summary_averages_purchase_targets_per_variant() -> None:
    rows = [
        {
            "variant": v,
            "seed": s,
            "hr@10": hr,
            "ndcg@10": hr / 2,
            "test_users": 100,
            "by_type.purchase": {"n_users": 10, "hr@10": hr + 0.1, "ndcg@10": hr},
        }
        for v, s, hr in (("a", 1, 0.2), ("a", 2, 0.4), ("b", 1, 0.5), ("b", 2, 0.5))
    ]
    a, b = summarise_funnel(rows)
    assert a["variant"] == "a" and a["purchase_hr@10"] == pytest.approx(0.4)
    assert a["hr@10_sd"] == pytest.approx(0.14142, abs=1e-4) and b["hr@10_sd"] == 0.0


def test_funnel_oracles_rank_carted_items_first_or_by_recency_alone() -> None:
    histories = torch.tensor([[0, 5, 2, 7, 3]])
    events = torch.tensor([[0, 1, 2, 2, 2]])  # item 5 carted (type 1), then three views
    carts = RecentOracle(n_items=8, cart_index=1).score(histories, None, events)
    recency = RecentOracle(n_items=8, cart_index=None).score(histories, None, events)
    assert carts[0].argsort(descending=True)[:4].tolist() == [5, 3, 7, 2]
    assert recency[0].argsort(descending=True)[:4].tolist() == [3, 7, 2, 5]
    assert carts[0, 0] == float("-inf") and carts[0, 1] == 0.0  # padding; never seen
