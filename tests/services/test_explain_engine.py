"""Explanations on the request path without HTTP (real bundles, the engine the bento uses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.data.config import SyntheticConfig
from components.data.sequences import Vocabulary, build_sequences
from components.data.synthetic import generate_events
from components.models.bundle import ModelBundle, build_model
from services.engine import Engine
from services.explanations import ExplainLimits, Method
from services.wire import explain_request_model, request_model
from tests.services.conftest import make_bundle


@pytest.fixture(scope="module")
def events():
    return generate_events(SyntheticConfig(n_users=30, n_items=25, n_events=600, seed=5))


@pytest.fixture(scope="module")
def engine(events) -> Engine:
    limits = ExplainLimits(max_history=4, max_k=5, top_events=3)
    return Engine(make_bundle(events, seed=0), "v-test", torch.device("cpu"), explain=limits)


def test_explaining_never_changes_the_recommendations(engine: Engine) -> None:
    histories = [list(engine.vocab.items[i : i + 6]) for i in range(0, 12, 3)]
    plain = engine.recommend_local([engine.plan(h, 5, True, []) for h in histories])
    explained = engine.recommend_local(
        [engine.plan(h, 5, True, [], explain=True) for h in histories]
    )
    for a, b in zip(plain, explained, strict=True):
        assert [(i.item_id, i.score) for i in a.items] == [(i.item_id, i.score) for i in b.items]
        assert a.explanation is None and all(i.because is None for i in a.items)
        assert b.explanation is not None and b.explanation.explainable
        assert all(i.because is not None for i in b.items)


def test_the_served_answer_is_the_response_model_as_data(engine: Engine) -> None:
    # the service renders explained answers as plain data (no model per event): it must be
    # what the validated response model gives, field for field (request_id: set by the service)
    history = [*engine.vocab.items[:6], "not-an-item"]
    types = ["view", "click", "view", "cart", "view", "purchase", "view"]
    plans = [
        engine.plan(history, 3, True, [], explain=True, event_types=types),
        engine.plan(history[2:6], 4, False, [], explain=True),
        engine.plan(["nope"], 2, True, [], explain=True),  # cold start
        engine.plan(history, 3, True, []),  # not explained
    ]
    queries = [p.query for p in plans if p.query is not None]
    answers = iter(engine.score(queries))
    scored = [next(answers) if p.query is not None else None for p in plans]
    engine.explain_plans(plans, scored)
    assert any(i.support for s in scored if s and s.influence for i in s.influence.items)
    for plan, found in zip(plans, scored, strict=True):
        expected = engine.respond(plan, found).model_dump(mode="json")
        del expected["request_id"]
        assert engine.render(plan, found) == expected


def test_because_names_history_events_by_position_type_and_influence(engine: Engine) -> None:
    history = [*engine.vocab.items[:6], "not-an-item"]
    types = ["view", "click", "view", "cart", "view", "purchase", "view"]
    (answer,) = engine.recommend_local(
        [engine.plan(history, 3, True, [], explain=True, event_types=types)]
    )
    assert answer.explanation.events_explained == 4  # max_history bounds the work
    assert "4 most recent" in answer.explanation.note
    for item in answer.items:
        assert 0 < len(item.because) <= 3
        drops = [b.influence for b in item.because]
        assert drops == sorted(drops, reverse=True) and drops[0] > 0
        for event in item.because:
            assert 2 <= event.position <= 5  # the 4 most recent known events
            assert history[event.position] == event.item_id
            assert event.event_type == types[event.position]
            assert event.events_ago == len(history) - event.position


def test_explain_any_item_reports_its_rank_and_matches_rescoring(engine: Engine) -> None:
    history = list(engine.vocab.items[3:7])
    target = engine.vocab.items[20]
    plan = engine.plan(history, 1, False, [], explain=True, targets=[engine.item_index(target)])
    answer = engine.explain_local(plan, target)
    scores = engine.bundle.score(engine.bundle.encode_histories([history])[0])[0]
    index = engine.item_index(target)
    assert answer.rank == int((scores > scores[index]).sum()) + 1
    for event in answer.because + answer.against:
        without = [t for p, t in enumerate(history) if p != event.position]
        changed = engine.bundle.score(engine.bundle.encode_histories([without])[0])[0]
        assert event.influence == pytest.approx(float(scores[index] - changed[index]), abs=1e-4)
        new_rank = int((changed > changed[index]).sum()) + 1  # ranks of listed events only
        assert event.rank_change == new_rank - answer.rank
    assert all(e.influence > 0 for e in answer.because)
    assert all(e.influence < 0 for e in answer.against)


@pytest.mark.parametrize("method", ["group", "search"])
def test_group_methods_list_marginal_drops_of_one_growing_deletion(
    engine: Engine, method: Method
) -> None:
    history = list(engine.vocab.items[2:9])
    # an item some event of this history pushes up (an untrained model's top item need not be)
    target = next(
        t
        for t in engine.vocab.items
        if engine.explain_local(
            engine.plan(history, 1, False, [], explain=True, targets=[engine.item_index(t)]), t
        ).because
    )
    index = engine.item_index(target)
    plan = engine.plan(history, 1, False, [], explain=True, targets=[index], top=3, method=method)
    answer = engine.explain_local(plan, target)
    assert answer.explanation.method == method and "group deletion" in answer.explanation.note

    def score_without(removed: set[int]) -> tuple[float, int]:
        kept = [t for p, t in enumerate(history) if p not in removed]
        scores = engine.bundle.score(engine.bundle.encode_histories([kept])[0])[0]
        return float(scores[index]), int((scores > scores[index]).sum()) + 1

    before, rank = score_without(set())
    removed: set[int] = set()
    assert answer.because
    for event in answer.because:  # each: its drop once the ones listed before are gone
        assert event.position >= len(history) - 4  # among the max_history most recent
        after, new_rank = score_without(removed | {event.position})
        assert event.influence == pytest.approx(before - after, abs=1e-4)
        assert event.influence > 0 or method == "search"  # a searched set may act only together
        assert event.rank_change == new_rank - rank
        removed.add(event.position)
        before = after
    single = engine.explain_local(
        engine.plan(history, 1, False, [], explain=True, targets=[index], method="deletion"),
        target,
    )
    assert single.explanation.method == "deletion"
    assert [e.position for e in single.against] == [e.position for e in answer.against]


def test_cold_start_and_pop_are_not_explainable_but_still_answer(events) -> None:
    vocab = Vocabulary.from_events(events)
    seqs = build_sequences(events, vocab)
    pop = build_model("pop", {}, vocab.n_items, vocab.n_users, 20)
    pop.fit_data(seqs)
    popularity = np.bincount(seqs.values, minlength=vocab.n_items + 1).astype(np.float64)
    engine = Engine(
        ModelBundle(pop, vocab, "pop", {}, 20, popularity), "v-pop", torch.device("cpu")
    )
    (answer,) = engine.recommend_local(
        [engine.plan(list(vocab.items[:3]), 4, True, [], explain=True)]
    )
    assert len(answer.items) == 4 and answer.source == "model"
    assert not answer.explanation.explainable and "pop" in answer.explanation.note
    assert all(item.because == [] for item in answer.items)
    (cold,) = engine.recommend_local([engine.plan(["nope"], 2, True, [], explain=True)])
    assert cold.source == "cold_start" and not cold.explanation.explainable


def test_explain_request_limits() -> None:
    assert explain_request_model(50, 10)(item_id="i", history=["a"]).method == "group"
    with pytest.raises(ValueError, match="method"):
        explain_request_model(50, 10)(item_id="i", history=["a"], method="attention")
    recommend = request_model(max_k=50, max_history=10, explain_max_k=5)
    with pytest.raises(ValueError, match="limited to k <= 5"):
        recommend(history=["a"], k=6, explain=True)
    assert recommend(history=["a"], k=6).k == 6
    with pytest.raises(ValueError, match="same length"):
        recommend(history=["a", "b"], event_types=["view"])
    explain = explain_request_model(max_history=10, max_top=4)
    with pytest.raises(ValueError, match="item_id"):
        explain(history=["a"])
    with pytest.raises(ValueError, match="less than or equal to 4"):
        explain(history=["a"], item_id="b", top=5)
