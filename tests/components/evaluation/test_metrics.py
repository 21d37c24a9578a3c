"""Full-ranking metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.data.splits import EvalSet
from components.evaluation.metrics import evaluate, rank_of_targets

INF = float("-inf")


def _eval_set(histories: list[list[int]], targets: list[int]) -> EvalSet:
    return EvalSet(np.arange(len(targets)), torch.tensor(histories), torch.tensor(targets))


def _fixed(scores: list[list[float]]):
    table = torch.tensor(scores)

    def scorer(histories: torch.Tensor, users: torch.Tensor | None) -> torch.Tensor:
        return table[users].clone()

    return scorer


def test_rank_counts_ties_pessimistically_and_ignores_padding() -> None:
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.5, 0.1], [9.0, 0.2, 0.2, 0.2, 0.2]])
    ranks = rank_of_targets(scores, torch.tensor([3, 1]))
    # row 0: item 2 (0.9) beats it, item 1 ties -> rank 2; column 0's 9.0 is padding
    # row 1: three ties ahead -> rank 3
    assert ranks.tolist() == [2, 3]


def test_unknown_target_is_a_miss() -> None:
    scores = torch.tensor([[INF, 1.0, 2.0, 3.0]])
    assert rank_of_targets(scores, torch.tensor([0])).tolist() == [3]


def test_hand_computed_hr_ndcg_mrr_and_coverage() -> None:
    # 4 items; user 0's target ranks 0, user 1's ranks 2, user 2's ranks 3 (last).
    scores = [[0, 4, 3, 2, 1], [0, 4, 3, 2, 1], [0, 1, 2, 3, 4]]
    data = _eval_set([[0, 2], [0, 4], [0, 3]], [1, 3, 1])
    result = evaluate(_fixed(scores), data, ks=[1, 3, 10], exclude_seen=False, batch_size=2)
    s = result.summary
    assert s["hr@1"] == pytest.approx(1 / 3)
    assert s["hr@3"] == pytest.approx(2 / 3)
    assert s["hr@10"] == pytest.approx(1.0)  # k beyond the catalogue: everything is a hit
    assert s["recall@3"] == s["hr@3"]
    assert s["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert s["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(5)) / 3)
    assert s["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 4) / 3)
    # top-1 lists: item 1, item 1, item 4 -> 2 of 4 items covered; top-3 covers all 4
    assert s["coverage@1"] == pytest.approx(0.5)
    assert s["coverage@3"] == pytest.approx(1.0)
    assert s["n_users"] == 3
    assert result.per_user["hr@1"].tolist() == [1, 0, 0]
    assert result.ranks.tolist() == [0, 2, 3]


def test_padding_is_never_ranked_even_if_the_model_scores_it_highest() -> None:
    scores = [[100.0, 1.0, 2.0, 3.0]]
    result = evaluate(_fixed(scores), _eval_set([[0, 1]], [3]), ks=[1], batch_size=8)
    assert result.summary["hr@1"] == 1.0
    assert result.summary["coverage@1"] == pytest.approx(1 / 3)


def test_exclude_seen_removes_history_items_before_ranking() -> None:
    scores = [[0, 5, 4, 3, 2], [0, 5, 4, 3, 2]]
    # user 0 saw items 1 and 2, so target 3 moves from rank 2 to rank 0;
    # user 1's target is in its own history: excluded, so it is a miss
    data = _eval_set([[1, 2], [0, 3]], [3, 3])
    plain = evaluate(_fixed(scores), data, ks=[1], exclude_seen=False)
    excluded = evaluate(_fixed(scores), data, ks=[1], exclude_seen=True)
    assert plain.ranks.tolist() == [2, 2]
    assert excluded.ranks[0] == 0 and excluded.ranks[1] >= 3
    assert excluded.exclude_seen and not plain.exclude_seen


def test_batching_does_not_change_results() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((37, 21)).tolist()
    data = _eval_set(rng.integers(0, 21, (37, 5)).tolist(), rng.integers(1, 21, 37).tolist())
    one = evaluate(_fixed(scores), data, ks=[5, 10], exclude_seen=True, batch_size=100)
    many = evaluate(_fixed(scores), data, ks=[5, 10], exclude_seen=True, batch_size=4)
    assert one.summary == many.summary
