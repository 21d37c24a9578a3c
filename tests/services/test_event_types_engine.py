"""The request path reads each history event's type for a model trained with event types."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.data.config import SyntheticConfig
from components.data.sequences import Vocabulary, build_sequences
from components.data.synthetic import generate_events
from components.models.bundle import ModelBundle, build_model
from services.engine import Engine
from tests.services.conftest import MAX_LEN, PARAMS


def _bundle(event_types: bool) -> ModelBundle:
    events = generate_events(SyntheticConfig(n_users=30, n_items=25, n_events=600, funnel=True))
    vocab = Vocabulary.from_events(events)
    seqs = build_sequences(events, vocab)
    params = {**PARAMS, "event_types": event_types, "n_event_types": vocab.n_event_types}
    torch.manual_seed(0)
    model = build_model("sasrec", params, vocab.n_items, vocab.n_users, MAX_LEN)
    if event_types:
        with torch.no_grad():  # a visible event-type effect without training
            model.item_input.event_emb.weight[1:].normal_(std=1.0)
    popularity = np.bincount(seqs.values, minlength=vocab.n_items + 1).astype(np.float64)
    return ModelBundle(model, vocab, "sasrec", params, MAX_LEN, popularity)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(_bundle(True), "v-events", torch.device("cpu"))


def _answer(engine: Engine, history: list[str], kinds: list[str] | None) -> list[float]:
    plan = engine.plan(history, engine.n_items, False, [], event_types=kinds)
    (answer,) = engine.recommend_local([plan])
    return [i.score for i in sorted(answer.items, key=lambda i: i.item_id)]


def test_event_types_of_a_history_change_the_scores(engine: Engine) -> None:
    history = list(engine.vocab.items[:4])
    plan = engine.plan(history, 5, False, [], event_types=["view", "cart", "view", "cart"])
    assert plan.query is not None and plan.query.events == [3, 1, 3, 1]
    viewed = _answer(engine, history, ["view"] * 4)
    carted = _answer(engine, history, ["cart"] * 4)
    assert viewed != pytest.approx(carted)
    # no types is the old request: the same as giving none of the known ones
    assert _answer(engine, history, None) == pytest.approx(
        _answer(engine, history, ["nope"] * 4), abs=1e-6
    )


def test_types_follow_the_kept_items_and_unknown_types_are_reported(engine: Engine) -> None:
    history = [engine.vocab.items[0], "no-such-item", engine.vocab.items[1]]
    plan = engine.plan(history, 5, False, [], event_types=["cart", "view", "beam-me-up"])
    assert plan.query is not None and plan.query.events == [1, 0]
    assert "unknown event types read as none: beam-me-up" in plan.warnings


def test_a_model_without_event_types_ignores_them() -> None:
    plain = Engine(_bundle(False), "v-plain", torch.device("cpu"))
    history = list(plain.vocab.items[:4])
    plan = plain.plan(history, 5, False, [], event_types=["cart"] * 4)
    assert plan.query is not None and plan.query.events is None and not plan.warnings
