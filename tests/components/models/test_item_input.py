"""The shared input layer (id + text + category, event types) under the model contract.

Content vectors here are fixed random unit vectors (the real encoder is tested in
tests/components/features/test_text_encoder.py): what matters is that every sequence model
built on ItemInput keeps the contract and scores items through their content.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from components.data.prepare import PreparedData
from components.models.bundle import ModelBundle, build_model
from tests.components.models.test_contract import SMALL

CONTENT_MODELS = ["sasrec", "bert4rec", "gru4rec"]
TEXT_DIM = 24
FEATURE_SETS = [["id", "text", "category"], ["text", "category"], ["text"], ["category"]]


def _content(n_items: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n_items + 1, TEXT_DIM)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    text[0] = 0
    categories = np.zeros((n_items + 1, 2), dtype=np.int64)
    categories[1:, 0] = rng.integers(1, 5, n_items)
    categories[1::3, 1] = 5
    return text, categories


def _bundle(name: str, prepared: PreparedData, features: list[str]) -> ModelBundle:
    torch.manual_seed(0)
    n = prepared.split.n_items
    params = {
        **SMALL[name],
        "item_features": features,
        "text_dim": TEXT_DIM,
        "n_categories": 5,
        "category_slots": 2,
    }
    model = build_model(name, params, n, prepared.vocab.n_users, prepared.split.max_len)
    text, categories = _content(n)
    trained = np.ones(n + 1, dtype=bool)
    trained[n] = False  # the last item has no training events: a cold item
    model.item_input.set_content(text, categories, trained)
    model.eval()
    popularity = np.ones(n + 1)
    popularity[0] = 0
    return ModelBundle(model, prepared.vocab, name, params, prepared.split.max_len, popularity)


@pytest.mark.parametrize("features", FEATURE_SETS, ids="+".join)
@pytest.mark.parametrize("name", CONTENT_MODELS)
def test_padding_ignored_and_save_load_bit_identical(
    name: str, features: list[str], tiny_prepared: PreparedData, tmp_path: Path
) -> None:
    bundle = _bundle(name, tiny_prepared, features)
    full = tiny_prepared.split.valid.histories[:5]
    assert torch.allclose(bundle.score(full), bundle.score(full[:, 4:]), atol=1e-5)
    bundle.save(tmp_path / "m")
    loaded = ModelBundle.load(tmp_path / "m")
    histories = tiny_prepared.split.test.histories
    assert torch.equal(bundle.score(histories), loaded.score(histories))
    assert torch.isfinite(loaded.score(histories)[:, 1:]).all()


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_content_models_do_not_see_the_future(name: str, tiny_prepared: PreparedData) -> None:
    model = _bundle(name, tiny_prepared, ["id", "text", "category"]).model
    histories = tiny_prepared.split.train.padded(12)[:4]
    changed = histories.clone()
    changed[:, 8:] = (changed[:, 8:] % tiny_prepared.split.n_items) + 1
    with torch.no_grad():
        before, after = model.hidden_states(histories), model.hidden_states(changed)
    assert torch.allclose(before[:, :8], after[:, :8], atol=1e-6)
    assert not torch.allclose(before[:, 8:], after[:, 8:])


@pytest.mark.parametrize("name", CONTENT_MODELS)
def test_cold_item_has_no_id_embedding_but_is_scored_by_its_text(
    name: str, tiny_prepared: PreparedData
) -> None:
    bundle = _bundle(name, tiny_prepared, ["id", "text", "category"])
    items = bundle.model.item_input
    cold = tiny_prepared.split.n_items
    assert not bool(items.has_id[cold]) and bool(items.has_id[1])
    histories = tiny_prepared.split.test.histories[:3]
    before = bundle.score(histories)[:, cold].clone()
    with torch.no_grad():  # give the cold item another text: its score must follow
        items.text[cold] = torch.roll(items.text[cold], 1)
    items.refresh()  # drops the cached table
    after = bundle.score(histories)[:, cold]
    assert not torch.allclose(before, after)
    table = bundle.model.output_embeddings()
    with torch.no_grad():
        projected = items.text_proj(items.text[cold])
        slots = items.categories[cold]
        mean = items.categories_emb(slots[slots > 0]).mean(dim=0)
    assert torch.allclose(table[cold], projected + mean, atol=1e-6)  # no id part


def test_the_eval_table_is_built_once_and_rebuilt_after_training(
    tiny_prepared: PreparedData,
) -> None:
    """The serving path calls eval() per request: that must not rebuild the item table
    (1.3 ms of an 8.5 ms request at 12k items); training must."""
    bundle = _bundle("sasrec", tiny_prepared, ["id", "text", "category"])
    items = bundle.model.item_input
    histories = tiny_prepared.split.test.histories[:3]
    before = bundle.score(histories).clone()
    with torch.no_grad():
        cached = items.table()
    bundle.model.eval()  # what ModelBundle.score does on every call
    with torch.no_grad():
        assert items.table() is cached
    bundle.model.train()
    with torch.no_grad():
        items.ids.weight.mul_(2.0)  # a training step changes the weights
    after = bundle.score(histories)  # back in eval: the table reflects the new weights
    assert not torch.allclose(before, after)
    with torch.no_grad():
        assert items.table() is not cached


def test_id_only_default_matches_legacy_bundles(
    tiny_prepared: PreparedData, tmp_path: Path
) -> None:
    """A bundle written before the shared input layer (one nn.Embedding named
    ``encoder.items``) loads into the new layer and scores identically."""
    for name in CONTENT_MODELS:
        bundle = _bundle(name, tiny_prepared, ["id"])
        bundle.save(tmp_path / name)
        state = torch.load(tmp_path / name / "weights.pt", weights_only=True)
        prefix = "items." if name == "gru4rec" else "encoder.items."
        legacy = {k: v for k, v in state.items() if not k.startswith(prefix)}
        weight = state[prefix + "ids.weight"]
        if name == "bert4rec":
            weight = torch.cat([weight, state[prefix + "special.weight"]])
        legacy[prefix + "weight"] = weight
        torch.save(legacy, tmp_path / name / "weights.pt")
        loaded = ModelBundle.load(tmp_path / name)
        histories = tiny_prepared.split.test.histories
        assert torch.equal(bundle.score(histories), loaded.score(histories)), name


def test_event_types_change_scores_only_where_given(tiny_prepared: PreparedData) -> None:
    torch.manual_seed(0)
    n = tiny_prepared.split.n_items
    params = {**SMALL["sasrec"], "event_types": True, "n_event_types": 3}
    model = build_model("sasrec", params, n, tiny_prepared.vocab.n_users, 12).eval()
    histories = tiny_prepared.split.test.histories[:4]
    events = (histories != 0).long()  # every real position is type 1
    purchase = events.clone()
    purchase[:, -1] = 3 * (histories[:, -1] != 0)
    with torch.no_grad():
        plain = model.encode(histories)
        typed = model.encode(histories, events=events)
        other = model.encode(histories, events=purchase)
    assert not torch.allclose(plain, typed)
    assert not torch.allclose(typed, other)


def test_id_dropout_trains_content_alone_and_never_touches_eval(
    tiny_prepared: PreparedData,
) -> None:
    items = _bundle("sasrec", tiny_prepared, ["id", "text"]).model.item_input
    items.train(True)
    torch.manual_seed(1)
    first, second = items.table(), items.table()
    assert not torch.allclose(first, second)  # a fresh draw of dropped ids every step
    with torch.no_grad():
        content_only = items.text_proj(items.text)
    dropped = (first - content_only).abs().sum(dim=1) < 1e-6
    assert 0 < int(dropped[1:].sum()) < tiny_prepared.split.n_items
    items.train(False)
    with torch.no_grad():
        assert torch.equal(items.table(), items.table())


def test_id_dropout_keeps_the_expected_id_term_of_evaluation(
    tiny_prepared: PreparedData,
) -> None:
    """Inverted dropout: averaged over training draws, a warm item's row is its eval row.
    Unscaled, eval gave every warm item (1 - p) x more id term than training had taught, an
    offset no cold item (content only) has; cold-item HR@10 on ml-100k was 0 for that."""
    items = _bundle("sasrec", tiny_prepared, ["id", "text"]).model.item_input
    with torch.no_grad():
        evaluated = items.table()
        items.train(True)
        torch.manual_seed(0)
        mean = torch.stack([items.table() for _ in range(2000)]).mean(dim=0)
    assert torch.allclose(mean, evaluated, atol=0.1 * float(evaluated.abs().max()))
