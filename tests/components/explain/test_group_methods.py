"""Group-aware influence: greedy group deletion and Shapley values of the deletion game,
on hand-built models with known answers and on every registered model."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import Tensor

from components.data.prepare import PreparedData
from components.explain.group import greedy_group_deletion
from components.explain.influence import Question, deletion_influence, is_explainable
from components.explain.search import best_deletion_sets, searched_group_deletion
from components.explain.shapley import coalition_rows, shapley_values
from components.models.base import ModelParams, Recommender, mask_padding_column
from components.models.sasrec import SASRec, SASRecParams
from components.models.zoo import available_models
from tests.components.models.test_contract import _bundle

N_ITEMS = 8


class _RedundantModel(Recommender):
    """Item 8 scores 1.0 when any of items 2, 3, 4 is in the history (they are
    interchangeable: removing one alone changes nothing) plus 0.25 when item 1 is; every
    other item scores a fixed 0.5."""

    name: ClassVar[str] = "redundant-test"
    Params = ModelParams
    input_kind = "none"
    trainable = False

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        scores = torch.full((histories.shape[0], N_ITEMS + 1), 0.5)
        group = (histories[:, :, None] == torch.tensor([2, 3, 4])).any(dim=2).any(dim=1)
        scores[:, 8] = 1.0 * group.float() + 0.25 * (histories == 1).any(dim=1).float()
        return mask_padding_column(scores)


class _SaturatingModel(Recommender):
    """Item 8 scores ``min(count of items 2-4, 2) * 0.6 + 0.35 * [item 1]``: with all
    three present, one of 2-4 alone is worth nothing, a second one 0.6."""

    name: ClassVar[str] = "saturating-test"
    Params = ModelParams
    input_kind = "none"
    trainable = False

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        scores = torch.full((histories.shape[0], N_ITEMS + 1), 0.5)
        count = (histories[:, :, None] == torch.tensor([2, 3, 4])).any(dim=2).sum(dim=1)
        scores[:, 8] = 0.6 * count.clamp(max=2).float() + 0.35 * (histories == 1).any(dim=1)
        return mask_padding_column(scores)


class _PairModel(Recommender):
    """Item 8 scores ``0.5 [item 1] + 0.45 [item 2] + 0.45 [item 3] + 0.3 [item 2 or 3]``:
    item 1 is worth most alone (0.5), but items 2 and 3 together are worth 1.2."""

    name: ClassVar[str] = "pair-test"
    Params = ModelParams
    input_kind = "none"
    trainable = False

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        scores = torch.full((histories.shape[0], N_ITEMS + 1), 0.5)
        has = [(histories == item).any(dim=1).float() for item in (1, 2, 3)]
        either = torch.maximum(has[1], has[2])
        scores[:, 8] = 0.5 * has[0] + 0.45 * has[1] + 0.45 * has[2] + 0.3 * either
        return mask_padding_column(scores)


def _model(cls: type[Recommender]) -> Recommender:
    return cls(ModelParams(), N_ITEMS, 0, 10)


def test_redundant_events_share_the_credit_under_shapley() -> None:
    # history: the three interchangeable items, item 1, two irrelevant items (5, 6)
    question = Question(torch.tensor([2, 3, 4, 1, 5, 6]), torch.tensor([8]))
    single = deletion_influence(_model(_RedundantModel), [question], 10, 10)[0]
    assert single.top_events(0, 1) == [3]  # only item 1 matters alone
    assert single.drops[0, [0, 1, 2]].tolist() == [0.0, 0.0, 0.0]
    (values,) = shapley_values(_model(_RedundantModel), [question], 10, 10)
    assert values.exact
    assert torch.allclose(
        values.values[0], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.25, 0, 0]), atol=1e-6
    )
    assert sorted(values.top_events(0, 3)) == [0, 1, 2]  # deleting these removes the 1.0


def test_sampled_shapley_is_close_to_exact_and_sums_to_the_total_drop() -> None:
    model = _model(_SaturatingModel)
    history = torch.tensor([5, 2, 6, 3, 1, 4, 7, 6, 5, 7])
    question = Question(history, torch.tensor([8, 2]))
    (exact,) = shapley_values(model, [question], 10, 10, exact_max=10)
    (sampled,) = shapley_values(model, [question], 10, 10, exact_max=4, permutations=400)
    assert exact.exact and not sampled.exact
    assert torch.allclose(sampled.values, exact.values, atol=0.05)
    full = model.score_all(history[None])[0, 8]
    empty = model.score_all(torch.zeros(1, 10, dtype=torch.long))[0, 8]
    for values in (exact, sampled):  # efficiency: values sum to v(all) - v(none)
        assert float(values.values[0].sum()) == pytest.approx(float(full - empty), abs=1e-5)
    assert torch.allclose(exact.values[0, [1, 3, 5]], torch.full((3,), 0.4))


def test_greedy_picks_are_marginal_drops_of_one_growing_deletion() -> None:
    model = _model(_SaturatingModel)
    history = torch.tensor([5, 2, 3, 1, 4])
    ((found,),) = greedy_group_deletion(model, [Question(history, torch.tensor([8]))], 10, 10, 3)
    # alone only item 1 (0.35) matters; with it gone, one of 2-4 is free (0.0, the most
    # recent), and then the next one of them drops the score by 0.6
    assert found.positions.tolist() == [3, 4, 2]
    assert torch.allclose(found.drops, torch.tensor([0.35, 0.0, 0.6]))
    keep = torch.ones(len(history), dtype=torch.bool)
    keep[found.positions] = False
    without = model.score_all(coalition_rows(history, 10, keep[None]))[0, 8]
    assert float(found.score - without) == pytest.approx(float(found.drops.sum()), abs=1e-6)


def test_coalition_rows_keep_order_and_left_pad() -> None:
    history = torch.tensor([7, 8, 9])
    keep = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    assert coalition_rows(history, 4, keep).tolist() == [
        [0, 0, 7, 9],
        [0, 0, 0, 0],
        [0, 7, 8, 9],
    ]
    assert coalition_rows(history, 2, keep[2:]).tolist() == [[8, 9]]


MODELS = available_models()


@pytest.mark.parametrize("name", MODELS)
def test_every_model_gets_group_influence_that_matches_rescoring(
    name: str, tiny_prepared: PreparedData
) -> None:
    bundle = _bundle(name, tiny_prepared)
    histories = tiny_prepared.split.test.histories[:3]
    questions = [Question(h[h != 0], torch.tensor([1, 2])) for h in histories]
    groups = greedy_group_deletion(bundle.model, questions, bundle.max_len, 6, 3, max_rows=7)
    values = shapley_values(bundle.model, questions, bundle.max_len, 6, permutations=4)
    for question, per_target, shap in zip(questions, groups, values, strict=True):
        assert shap.values.shape == (2, 6 if is_explainable(bundle.model) else 0)
        assert torch.isfinite(shap.values).all()
        for found in per_target:
            if not is_explainable(bundle.model):
                assert found.positions.numel() == 0
                continue
            assert found.positions.numel() == 3
            history = question.history[-bundle.max_len :]
            keep = torch.ones(len(history), dtype=torch.bool)
            keep[found.positions] = False
            rows = coalition_rows(history, bundle.max_len, torch.stack([keep, keep | True]))
            with torch.no_grad():
                scores = bundle.model.score_all(rows)[:, found.target]
            assert float(scores[1]) == pytest.approx(found.score, abs=1e-4)
            assert float(scores[1] - scores[0]) == pytest.approx(float(found.drops.sum()), abs=1e-4)


class _TypedModel(Recommender):
    """Item 8 scores 1.0 for each purchase (event type 2) of item 3 in the history: the
    event type must leave the history together with its item."""

    name: ClassVar[str] = "typed-test"
    Params = ModelParams
    input_kind = "none"
    trainable = False

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        assert events is not None and events.shape == histories.shape
        scores = torch.full((histories.shape[0], N_ITEMS + 1), 0.5)
        scores[:, 8] = ((histories == 3) & (events == 2)).sum(dim=1).float()
        return mask_padding_column(scores)


def test_event_types_leave_the_history_with_their_events() -> None:
    model = _model(_TypedModel)
    # item 3 viewed, item 3 purchased, item 1 purchased
    question = Question(torch.tensor([3, 3, 1]), torch.tensor([8]), torch.tensor([1, 2, 2]))
    (single,) = deletion_influence(model, [question], 10, 10)
    assert single.drops[0].tolist() == [0.0, 1.0, 0.0]
    ((group,),) = greedy_group_deletion(model, [question], 10, 10, 1)
    assert group.positions.tolist() == [1] and group.drops.tolist() == [1.0]
    (values,) = shapley_values(model, [question], 10, 10)
    assert torch.allclose(values.values[0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_searched_sets_find_the_redundant_block_that_greedy_misses() -> None:
    # the interchangeable items 2, 3, 4 are the oldest events; item 1 alone is worth 0.25
    question = Question(torch.tensor([2, 3, 4, 1, 5, 6, 7, 5]), torch.tensor([8]))
    model = _model(_RedundantModel)
    ((greedy,),) = greedy_group_deletion(model, [question], 10, 10, 3)
    assert float(greedy.drops.sum()) == pytest.approx(0.25)  # after item 1, no single event matters
    ((found,),) = best_deletion_sets(model, [question], 10, size=3, pool=8)
    assert sorted(found.positions.tolist()) == [0, 1, 2]
    assert found.drop == pytest.approx(1.0)


def test_searched_set_lowers_the_item_at_least_as_much_as_the_most_recent_events() -> None:
    torch.manual_seed(3)
    model = SASRec(SASRecParams(), 60, 0, 10).eval()
    histories = [torch.randint(1, 61, (n,)) for n in (4, 7, 10, 10)]
    questions = [Question(h, torch.tensor([7, 33])) for h in histories]
    found = best_deletion_sets(model, questions, 10, size=3, pool=2)
    for question, per_target in zip(questions, found, strict=True):
        history = question.history
        recent = torch.zeros(10, dtype=torch.long)
        recent[10 - (len(history) - 3) :] = history[: len(history) - 3]
        whole = torch.zeros(10, dtype=torch.long)
        whole[10 - len(history) :] = history
        with torch.no_grad():
            scores = model.score_all(torch.stack([whole, recent]))
        for best, target in zip(per_target, question.targets.tolist(), strict=True):
            assert len(set(best.positions.tolist())) == 3
            recent_drop = float(scores[0, target] - scores[1, target])
            assert best.drop >= recent_drop - 1e-5


def test_searched_group_deletion_gives_marginal_drops_of_the_searched_set() -> None:
    question = Question(torch.tensor([2, 3, 4, 1, 5, 6, 7, 5]), torch.tensor([8]))
    ((found,),) = searched_group_deletion(_model(_RedundantModel), [question], 10, 8)
    assert sorted(found.positions.tolist()) == [0, 1, 2]
    # one interchangeable event after another: only the last removal lowers the item
    assert found.drops.tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert found.rank_changes.tolist()[-1] > 0
    assert found.score == pytest.approx(1.25)


def test_a_beam_over_joint_deletions_finds_the_pair_that_greedy_misses() -> None:
    question = Question(torch.tensor([1, 2, 3, 5, 6]), torch.tensor([8]))
    model = _model(_PairModel)
    ((greedy,),) = greedy_group_deletion(model, [question], 10, 10, 2)
    assert greedy.positions.tolist() == [0, 2]  # item 1, then item 3 (the most recent tie)
    assert float(greedy.drops.sum()) == pytest.approx(0.95)
    ((beam,),) = greedy_group_deletion(model, [question], 10, 10, 2, beam=2)
    assert sorted(beam.positions.tolist()) == [1, 2]
    # each pick's drop is a re-scoring with the earlier picks gone: 0.45, then 0.45 + 0.3
    assert beam.drops.tolist() == pytest.approx([0.45, 0.75])
    assert beam.score == pytest.approx(1.7) and beam.rank == 1
    assert beam.rank_changes.tolist() == [0, 0]  # 1.25, then 0.5: no other item scores higher
    ((same,),) = greedy_group_deletion(model, [question], 10, 10, 2, beam=1)
    assert same.positions.tolist() == greedy.positions.tolist()
