"""The request path without HTTP: planning, batched scoring, cold start (real bundle)."""

from __future__ import annotations

import pytest
import torch

from components.data.config import SyntheticConfig
from components.data.synthetic import generate_events
from services.engine import Engine
from services.wire import request_model
from tests.services.conftest import make_bundle


@pytest.fixture(scope="module")
def engine() -> Engine:
    events = generate_events(SyntheticConfig(n_users=30, n_items=25, n_events=600, seed=5))
    return Engine(make_bundle(events, seed=0), "v-test", torch.device("cpu"))


def test_unknown_items_are_dropped_and_reported(engine: Engine) -> None:
    known = list(engine.vocab.items[:3])
    plan = engine.plan([*known, "no-such-item"], 5, True, [])
    assert plan.source == "model"
    assert plan.query is not None and len(plan.query.history) == 3
    assert plan.warnings == ["unknown item ids dropped from history: no-such-item"]


def test_only_unknown_items_is_a_cold_start_with_popular_items(engine: Engine) -> None:
    (answer,) = engine.recommend_local([engine.plan(["nope"], 4, True, [])])
    assert answer.source == "cold_start"
    popular = engine.vocab.item_tokens(engine.popular(4, []).items)
    assert [i.item_id for i in answer.items] == popular
    scores = [i.score for i in answer.items]
    assert scores == sorted(scores, reverse=True)


def test_seen_and_excluded_items_never_come_back(engine: Engine) -> None:
    history = list(engine.vocab.items[:5])
    excluded = list(engine.vocab.items[5:8])
    (answer,) = engine.recommend_local([engine.plan(history, 10, True, excluded)])
    returned = {i.item_id for i in answer.items}
    assert len(returned) == 10 and not returned & (set(history) | set(excluded))
    (kept,) = engine.recommend_local([engine.plan(history, engine.n_items, False, [])])
    assert set(history) <= {i.item_id for i in kept.items}


def test_batched_scoring_matches_one_by_one(engine: Engine) -> None:
    histories = [list(engine.vocab.items[i : i + 4]) for i in range(0, 12, 2)]
    plans = [
        engine.plan(h, k, True, []) for h, k in zip(histories, [1, 3, 5, 7, 9, 11], strict=True)
    ]
    together = engine.recommend_local(plans)
    alone = [engine.recommend_local([p])[0] for p in plans]
    for a, b, plan in zip(together, alone, plans, strict=True):
        assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
        assert len(a.items) == plan.k


def test_k_larger_than_catalogue_is_clipped(engine: Engine) -> None:
    (answer,) = engine.recommend_local([engine.plan(list(engine.vocab.items[:2]), 500, True, [])])
    assert len(answer.items) == engine.n_items - 2


def test_request_limits_are_enforced() -> None:
    model = request_model(max_k=50, max_history=3)
    with pytest.raises(ValueError, match="less than or equal to 50"):
        model(history=["a"], k=51)
    with pytest.raises(ValueError, match="at most 3"):
        model(history=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="give user_id or history"):
        model(k=3)
    assert model(user_id="u1").k == 10


@pytest.mark.parametrize("k", ["7", True, 7.0])
def test_k_must_be_a_json_integer_not_a_string_or_bool(k) -> None:
    model = request_model(max_k=50, max_history=3)
    with pytest.raises(ValueError, match="k"):
        model.model_validate({"history": ["a"], "k": k})
    assert model.model_validate({"history": ["a"], "k": 7}).k == 7


def test_every_item_id_and_the_user_id_are_length_bounded() -> None:
    model = request_model(max_k=50, max_history=3, max_id_length=8)
    for body in (
        {"history": ["a" * 9]},
        {"history": ["a"], "exclude": ["b" * 9]},
        {"user_id": "u" * 9},
        {"history": [""]},
    ):
        with pytest.raises(ValueError):
            model.model_validate(body)
    assert model.model_validate({"history": ["a" * 8], "exclude": ["b" * 8]}).history


def test_scores_equal_the_model_call_on_full_max_len_padding(engine: Engine) -> None:
    """The engine trims all-padding columns before the model; answers must be those of
    the untrimmed ``[B, max_len]`` call."""
    from services.engine import _left_padded, _right_padded

    histories = [["i1", "i2", "i3"], ["i4"], ["i5", "i6"]]
    plans = [engine.plan(h, 5, True, []) for h in histories]
    queries = [p.query for p in plans if p.query is not None]
    scored = engine.score(queries)
    padded = _left_padded([q.history for q in queries], engine.max_len)
    assert padded.shape[1] == engine.max_len and (padded[:, :-3] == 0).all()
    exclude = _right_padded([q.exclude or [0] for q in queries])
    items, scores = engine.bundle.recommend(padded, 5, exclude_seen=False, exclude=exclude)
    for row, answer in enumerate(scored):
        assert answer.items == items[row].tolist()
        assert answer.scores == pytest.approx(scores[row].tolist(), rel=1e-5, abs=1e-6)


def test_compiled_answers_are_the_trainers_evaluation_ranking_on_real_histories() -> None:
    """On 200 real ml-100k histories (up to 50 events, the benchmark SASRec's settings from
    configs/models/sasrec.yaml): the ONNX and the traced scorers' top 10 is the eager
    engine's, scores
    within the stated tolerance, and each answer's r-th item has rank r under the
    trainer's own full-ranking evaluation (components.evaluation, seen items excluded)."""
    import numpy as np
    import yaml

    from components.data.loaders import load_events
    from components.data.sequences import Vocabulary, build_sequences
    from components.data.splits import EvalSet
    from components.evaluation.metrics import evaluate
    from components.models.bundle import ModelBundle, build_model
    from components.models.compiled import TOLERANCE
    from tests.conftest import REPO_ROOT, shared_file

    events = load_events(shared_file("ml-100k", "ml-100k.inter"), "recbole")
    params = yaml.safe_load((REPO_ROOT / "configs/models/sasrec.yaml").read_text())["model"]
    vocab = Vocabulary.from_events(events)
    seqs = build_sequences(events, vocab)
    torch.manual_seed(0)
    model = build_model("sasrec", params["params"], vocab.n_items, vocab.n_users, 50)
    popularity = np.bincount(seqs.values, minlength=vocab.n_items + 1).astype(np.float64)
    bundle = ModelBundle(model, vocab, "sasrec", params["params"], 50, popularity)
    eager = Engine(bundle, "v", torch.device("cpu"), scorer="eager")
    users = np.random.default_rng(0).choice(len(seqs), 200, replace=False)
    plans = [eager.plan(vocab.item_tokens(seqs.row(u)[-50:]), 10, True, []) for u in users]
    queries = [p.query for p in plans if p.query is not None]
    assert len(queries) == 200
    reference = eager.score(queries)
    for kind in ("onnx", "traced"):
        compiled = Engine(bundle, "v", torch.device("cpu"), scorer=kind)
        assert compiled.scorer.kind == kind, compiled.scorer.reason
        served = compiled.score(queries)
        for got, want in zip(served, reference, strict=True):
            assert got.items == want.items and len(got.items) == 10
            scale = 1.0 + max(abs(s) for s in want.scores)
            assert got.scores == pytest.approx(want.scores, rel=0, abs=TOLERANCE * scale)
    histories = torch.zeros((200 * 10, 50), dtype=torch.long)
    for row, query in enumerate(queries):
        histories[row * 10 : row * 10 + 10, 50 - len(query.history) :] = torch.tensor(query.history)
    targets = torch.tensor([item for answer in served for item in answer.items])
    ranks = evaluate(
        bundle,
        EvalSet(np.zeros(len(targets), dtype=np.int64), histories, targets),
        exclude_seen=True,
    ).ranks
    assert ranks.tolist() == list(range(10)) * 200
