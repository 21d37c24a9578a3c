"""Every registered model honours the Recommender contract (parametrised over the registry)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.data.prepare import PreparedData
from components.models.bundle import ModelBundle
from components.models.config import ModelConfig
from components.models.zoo import available_models, get_model_class
from components.training.datamodules import BucketBatchSampler, training_dataset
from components.training.losses import compute_loss
from components.training.trainer import build_bundle

SMALL = {
    "sasrec": {
        "hidden_size": 16,
        "num_layers": 1,
        "num_heads": 2,
        "dropout": 0.0,
        "attn_dropout": 0.0,
    },
    "bert4rec": {
        "hidden_size": 16,
        "num_layers": 1,
        "num_heads": 2,
        "dropout": 0.0,
        "attn_dropout": 0.0,
    },
    "bsarec": {
        "hidden_size": 16,
        "num_layers": 2,
        "num_heads": 2,
        "dropout": 0.0,
        "attn_dropout": 0.0,
    },
    "lrurec": {"hidden_size": 16, "num_layers": 2, "dropout": 0.0, "recurrent_dropout": 0.0},
    "gru4rec": {"embedding_size": 16, "hidden_size": 16, "dropout": 0.0},
    "srgnn": {"hidden_size": 16, "dropout": 0.0},
    "lightgcn": {"embedding_size": 16, "num_layers": 2},
    "itemknn": {"neighbours": 10},
    "pop": {},
}
MODELS = available_models()


def test_registry_holds_the_whole_zoo() -> None:
    zoo = {"pop", "itemknn", "gru4rec", "sasrec", "bert4rec", "srgnn", "lightgcn"}
    assert zoo | {"bsarec", "lrurec"} <= set(MODELS)


def _bundle(name: str, prepared: PreparedData) -> ModelBundle:
    torch.manual_seed(0)
    bundle = build_bundle(prepared, ModelConfig(name=name, params=SMALL.get(name, {})))
    bundle.model.eval()
    return bundle


@pytest.mark.parametrize("name", MODELS)
def test_scores_cover_catalogue_and_padding_is_minus_inf(
    name: str, tiny_prepared: PreparedData
) -> None:
    bundle = _bundle(name, tiny_prepared)
    histories = tiny_prepared.split.test.histories[:7]
    scores = bundle.score(histories, torch.as_tensor(tiny_prepared.split.test.users[:7]))
    assert scores.shape == (7, tiny_prepared.split.n_items + 1)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("name", MODELS)
def test_left_padding_does_not_change_scores(name: str, tiny_prepared: PreparedData) -> None:
    bundle = _bundle(name, tiny_prepared)
    full = tiny_prepared.split.valid.histories[:5]  # rows have 8 items in 12 columns
    assert (full[:, :4] == 0).all()
    trimmed = full[:, 4:]
    assert torch.allclose(bundle.score(full), bundle.score(trimmed), atol=1e-5)


@pytest.mark.parametrize("name", [n for n in MODELS if get_model_class(n).input_kind == "causal"])
def test_causal_models_do_not_see_the_future(name: str, tiny_prepared: PreparedData) -> None:
    model = _bundle(name, tiny_prepared).model
    histories = tiny_prepared.split.train.padded(12)[:4]
    changed = histories.clone()
    changed[:, 8:] = (changed[:, 8:] % tiny_prepared.split.n_items) + 1
    with torch.no_grad():
        before, after = model.hidden_states(histories), model.hidden_states(changed)
    assert torch.allclose(before[:, :8], after[:, :8], atol=1e-6)
    assert not torch.allclose(before[:, 8:], after[:, 8:])


@pytest.mark.parametrize("name", [n for n in MODELS if get_model_class(n).trainable])
def test_loss_falls_on_a_tiny_batch(name: str, tiny_prepared: PreparedData) -> None:
    model = _bundle(name, tiny_prepared).model.train()
    data, lengths = training_dataset(model.input_kind, tiny_prepared.split.train, 12)
    batch = data[next(iter(BucketBatchSampler(lengths, 64, False, 0)))]
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(30):
        torch.manual_seed(0)  # the same Cloze masks / negatives every step
        loss = compute_loss(model.training_pairs(batch), "ce", 10)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip_gives_identical_scores(
    name: str, tiny_prepared: PreparedData, tmp_path: Path
) -> None:
    bundle = _bundle(name, tiny_prepared)
    bundle.save(tmp_path / "m")
    loaded = ModelBundle.load(tmp_path / "m")
    histories = tiny_prepared.split.test.histories
    users = torch.as_tensor(tiny_prepared.split.test.users)
    assert loaded.model_name == name and loaded.vocab == bundle.vocab
    assert torch.equal(bundle.score(histories, users), loaded.score(histories, users))


@pytest.mark.parametrize("name", ["sasrec", "pop"])
def test_recommend_never_returns_padding_or_history(name: str, tiny_prepared: PreparedData) -> None:
    bundle = _bundle(name, tiny_prepared)
    n_items = tiny_prepared.split.n_items
    histories = tiny_prepared.split.test.histories[:4]
    items, scores = bundle.recommend(histories, k=n_items + 50, exclude_seen=True)
    assert items.shape == (4, n_items)  # k clipped to the catalogue
    assert (items != 0).all()
    seen_rows = [set(h[h != 0].tolist()) for h in histories]
    for row, seen in zip(items[:, : n_items - 12].tolist(), seen_rows, strict=True):
        assert not seen & set(row)  # seen items never appear before unseen ones
    assert torch.isneginf(scores[:, -1]).all()  # excluded items come last, scored -inf
    top, _ = bundle.recommend(histories, k=3, exclude_seen=False, exclude=histories[:, -1:])
    assert not (top == histories[:, -1:]).any()


def test_cold_start_rows_fall_back_to_popularity(tiny_prepared: PreparedData) -> None:
    bundle = _bundle("sasrec", tiny_prepared)
    empty = torch.zeros(2, 12, dtype=torch.long)
    items, _ = bundle.recommend(empty, k=5, exclude_seen=True)
    expected = torch.as_tensor(bundle.item_popularity).topk(5).indices
    assert set(items[0].tolist()) <= set(
        torch.as_tensor(bundle.item_popularity).argsort(descending=True)[:8].tolist()
    )
    assert bundle.item_popularity[items[0]].min() >= bundle.item_popularity[expected].min()


def test_encode_histories_drops_unknown_tokens(tiny_prepared: PreparedData) -> None:
    bundle = _bundle("pop", tiny_prepared)
    known = list(tiny_prepared.vocab.items[:3])
    encoded, unknown = bundle.encode_histories([known, ["nope", known[0]], []])
    assert encoded.shape == (3, bundle.max_len)
    assert encoded[0, -3:].tolist() == [1, 2, 3] and (encoded[0, :-3] == 0).all()
    assert encoded[1, -1].item() == 1 and (encoded[1, :-1] == 0).all()
    assert unknown == [[], ["nope"], []]
    assert (encoded[2] == 0).all()
