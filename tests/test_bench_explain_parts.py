"""The pieces behind `recops bench explain`'s faithfulness figures (no training)."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.explain import deletion_sets, eligible_rows, faithfulness, without_events
from components.data.sequences import Vocabulary
from components.models.bundle import ModelBundle
from tests.components.explain.test_influence import _SumModel


def test_without_events_removes_positions_and_left_pads() -> None:
    row = without_events(torch.tensor([5, 6, 7, 8]), [0, 2], width=5)
    assert row.tolist() == [0, 0, 0, 6, 8]


def test_deletion_sets_pick_largest_drops_random_and_most_recent() -> None:
    drops = np.array([0.1, 0.9, -0.2, 0.5, 0.3, 0.0])
    sets = deletion_sets(drops, 6, np.random.default_rng(0), gradients=-drops)
    assert sets["top3"] == [1, 3, 4]
    assert sets["recent3"] == [3, 4, 5]
    assert len(set(sets["random3"])) == 3 and all(0 <= p < 6 for p in sets["random3"])
    assert sets["ig3"] == [0, 2, 5]


def test_eligible_rows_need_enough_history() -> None:
    histories = torch.tensor([[0, 0, 1], [1, 2, 3], [0, 4, 5]])
    assert eligible_rows(histories, 2, 10, 0).tolist() == [1, 2]


def test_on_an_additive_model_top3_by_influence_is_the_best_deletion() -> None:
    """Influence is exact for a model whose score is a sum over events: deleting the 3
    most influential events must drop the target at least as much as any other set."""
    model = _SumModel()
    vocab = Vocabulary(users=("u",), items=tuple(f"i{i}" for i in range(1, 7)))
    bundle = ModelBundle(model, vocab, "sum-test", {}, 8, np.ones(7))
    histories = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6], [0, 3, 1, 4, 1, 5, 6, 2]])
    figures = faithfulness(bundle, histories, seed=0)
    assert figures["users"] == 2
    assert figures["top3_mean_score_drop"] >= figures["random3_mean_score_drop"]
    assert figures["top3_mean_score_drop"] >= figures["recent3_mean_score_drop"]
    assert figures["ig_ms_per_user"] is None  # no embedding layer: deletion only
