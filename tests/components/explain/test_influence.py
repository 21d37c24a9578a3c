"""Deletion influence: hand-built models with known answers, and every registered model."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import Tensor

from components.data.prepare import PreparedData
from components.explain.influence import (
    Question,
    counts_above,
    deletion_influence,
    deletion_rows,
    is_explainable,
    ranks_of,
)
from components.models.base import ModelParams, Recommender, mask_padding_column
from components.models.zoo import available_models
from tests.components.models.test_contract import _bundle

N_ITEMS = 6


class _OneItemModel(Recommender):
    """Item 5's score is 2.0 when item 3 is anywhere in the history, else 0; other items
    have fixed scores 1.0 > 0.9 > ... so ranks are known."""

    name: ClassVar[str] = "one-item-test"
    Params = ModelParams
    input_kind = "none"
    trainable = False

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        base = torch.tensor([0.0, 1.0, 0.9, 0.8, 0.7, 0.0, 0.5])
        scores = base.expand(histories.shape[0], -1).clone()
        scores[:, 5] = 2.0 * (histories == 3).any(dim=1).float()
        return mask_padding_column(scores)


class _SumModel(Recommender):
    """Score of item i = sum over history events h of ``table[h, i]``: the deletion
    influence of an event is exactly its table row."""

    name: ClassVar[str] = "sum-test"
    Params = ModelParams
    input_kind = "none"
    trainable = False

    def __init__(self) -> None:
        super().__init__(ModelParams(), N_ITEMS, 0, 8)
        generator = torch.Generator().manual_seed(0)
        table = torch.randn(N_ITEMS + 1, N_ITEMS + 1, generator=generator)
        table[0] = 0.0
        self.register_buffer("table", table)

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        return mask_padding_column(self.table[histories].sum(dim=1))


def test_the_one_item_that_matters_carries_all_the_influence() -> None:
    model = _OneItemModel(ModelParams(), N_ITEMS, 0, 8)
    history = torch.tensor([1, 3, 2, 4])
    (influence,) = deletion_influence(model, [Question(history, torch.tensor([5, 1]))], 8, 10)
    assert influence.positions.tolist() == [0, 1, 2, 3]
    assert influence.drops[0].tolist() == [0.0, 2.0, 0.0, 0.0]
    assert influence.ranks.tolist() == [1, 2]  # item 5 (2.0) first, item 1 (1.0) second
    # without item 3, item 5 scores 0: below items 1, 2, 3, 4 and 6 -> rank 6
    assert influence.rank_changes[0].tolist() == [0, 5, 0, 0]
    assert influence.rank_changes[1].tolist() == [0, -1, 0, 0]  # item 1 moves up to first
    assert influence.top_events(0, 1) == [1]


def test_sum_model_influence_is_each_events_table_row() -> None:
    model = _SumModel()
    history = torch.tensor([2, 5, 2, 6, 1])
    targets = torch.tensor([1, 3, 4])
    (influence,) = deletion_influence(model, [Question(history, targets)], 8, 10)
    expected = model.table[history][:, targets].T
    assert torch.allclose(influence.drops, expected, atol=1e-6)
    full = model.score_all(torch.cat([torch.zeros(3, dtype=torch.long), history])[None])[0]
    assert torch.allclose(influence.scores, full[targets])


def test_rank_changes_match_rescoring_each_variant_alone() -> None:
    model = _SumModel()
    history = torch.tensor([4, 1, 6, 3])
    targets = torch.arange(1, N_ITEMS + 1)
    (influence,) = deletion_influence(model, [Question(history, targets)], 8, 10)
    for column, position in enumerate(influence.positions.tolist()):
        without = torch.cat([history[:position], history[position + 1 :]])
        scores = model.score_all(without[None])[0]
        brute = torch.tensor([int((scores > scores[t]).sum()) + 1 for t in targets])
        assert influence.rank_changes[:, column].tolist() == (brute - influence.ranks).tolist()


def test_only_the_most_recent_events_are_deleted_and_width_truncates() -> None:
    rows, positions = deletion_rows(torch.tensor([7, 8, 9, 10, 11]), width=4, max_events=2)
    assert positions.tolist() == [2, 3]  # of the scored history [8, 9, 10, 11]
    assert rows.tolist() == [[8, 9, 10, 11], [0, 8, 9, 11], [0, 8, 9, 10]]
    empty_rows, empty_positions = deletion_rows(torch.tensor([], dtype=torch.long), 4, 3)
    assert empty_rows.tolist() == [[0, 0, 0, 0]] and empty_positions.numel() == 0


def test_ranks_count_items_scored_strictly_higher() -> None:
    scores = torch.tensor([[float("-inf"), 0.5, 0.9, 0.5, 0.1]])
    assert ranks_of(scores, torch.tensor([2, 1, 3, 4])).tolist() == [[1, 2, 2, 4]]


@pytest.mark.parametrize("ranked_far_down", [False, True])
def test_counts_above_equals_comparing_whole_rows(ranked_far_down: bool) -> None:
    """Both branches (few candidates above each row's lowest threshold, or many) count
    exactly the entries of the query's own row strictly above its threshold, ties and
    ``-inf`` padding included."""
    generator = torch.Generator().manual_seed(3)
    block = torch.randint(0, 50, (6, 400), generator=generator).float()  # many ties
    block[:, 0] = float("-inf")
    rows = torch.tensor([0, 0, 1, 3, 3, 5, 1])
    # thresholds are entries of their rows: near the top, or (far down) anywhere
    order = block.argsort(dim=1, descending=True)
    depth = 300 if ranked_far_down else 4
    columns = order[rows, torch.randint(0, depth, (7,), generator=generator)]
    thresholds = block[rows, columns]
    expected = (block[rows] > thresholds[:, None]).sum(dim=1)
    assert torch.equal(counts_above(block, rows, thresholds), expected)
    assert torch.equal(expected + 1, ranks_of(block[rows], columns).diagonal())


def test_top_events_break_ties_towards_the_most_recent() -> None:
    model = _OneItemModel(ModelParams(), N_ITEMS, 0, 8)
    (influence,) = deletion_influence(
        model, [Question(torch.tensor([1, 2, 4]), torch.tensor([5]))], 8, 10
    )
    assert influence.top_events(0, 2) == [2, 1]


MODELS = available_models()


@pytest.mark.parametrize("name", MODELS)
def test_every_model_explains_with_one_variant_per_event(
    name: str, tiny_prepared: PreparedData
) -> None:
    bundle = _bundle(name, tiny_prepared)
    histories = tiny_prepared.split.test.histories[:4]
    questions = [Question(h[h != 0], torch.tensor([1, 2, 3])) for h in histories]
    before = bundle.recommend(histories, 5)
    batched = deletion_influence(bundle.model, questions, bundle.max_len, 6, max_rows=10)
    after = bundle.recommend(histories, 5)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    for question, influence in zip(questions, batched, strict=True):
        assert influence.explainable is is_explainable(bundle.model)
        events = min(6, len(question.history)) if influence.explainable else 0
        assert influence.drops.shape == influence.rank_changes.shape == (3, events)
        assert torch.isfinite(influence.drops).all()
        alone = deletion_influence(bundle.model, [question], bundle.max_len, 6)[0]
        assert torch.allclose(influence.drops, alone.drops, atol=1e-5)
    if name == "pop":
        assert not batched[0].explainable and batched[0].positions.numel() == 0


@pytest.mark.parametrize("name", [n for n in MODELS if n != "pop"])
def test_every_model_drop_is_the_score_of_the_history_without_the_event(
    name: str, tiny_prepared: PreparedData
) -> None:
    bundle = _bundle(name, tiny_prepared)
    history = tiny_prepared.split.test.histories[1]
    history = history[history != 0]
    targets = torch.tensor([2, 4])
    (influence,) = deletion_influence(bundle.model, [Question(history, targets)], bundle.max_len, 3)
    full = bundle.score(history[None])[0, targets]
    for column, position in enumerate(influence.positions.tolist()):
        without = torch.cat([history[:position], history[position + 1 :]])
        expected = full - bundle.score(without[None])[0, targets]
        assert torch.allclose(influence.drops[:, column], expected, atol=1e-4)


def test_listed_rank_changes_equal_the_full_ones_where_computed() -> None:
    model = _SumModel()
    history = torch.tensor([4, 1, 6, 3, 2, 5, 1])
    targets = torch.arange(1, N_ITEMS + 1)
    (full,) = deletion_influence(model, [Question(history, targets)], 8, 10)
    (listed,) = deletion_influence(model, [Question(history, targets)], 8, 10, listed=2)
    assert full.ranked is None and listed.ranked is not None
    assert torch.equal(listed.drops, full.drops)
    for target in range(len(targets)):
        drops = listed.drops[target]
        # the events an explanation lists: top ones that raise the item, bottom ones that lower it
        columns = [c for c in listed.top_events(target, 2) if drops[c] > 0] + [
            c for c in listed.bottom_events(target, 2) if drops[c] < 0
        ]
        assert sorted(set(columns)) == listed.ranked[target].nonzero().flatten().tolist()
        assert listed.rank_changes[target, columns].tolist() == (
            full.rank_changes[target, columns].tolist()
        )
    assert int(listed.ranked.sum()) < listed.ranked.numel()  # the others were skipped
