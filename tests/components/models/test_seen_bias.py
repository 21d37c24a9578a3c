"""Repeat-aware scoring: one learned logit offset for items already in the history.

The offset must touch exactly the history items, be trained by the loss through the same
"seen" sets the model scores from at inference, and follow the data: negative where the
next item is never one already seen, positive where it always is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.data.config import DataConfig
from components.data.prepare import PreparedData, prepare
from components.models.base import (
    SeenItems,
    TrainingPairs,
    add_seen_offset_,
    causal_seen,
    distinct_seen,
)
from components.models.bundle import ModelBundle
from components.models.config import ModelConfig
from components.training.datamodules import BucketBatchSampler, training_dataset
from components.training.losses import _seen_offset, compute_loss
from components.training.trainer import build_bundle
from tests.components.models.conftest import TINY_MAX_LEN, prepared_cyclic
from tests.components.models.test_contract import SMALL

LEARNERS = ["sasrec", "gru4rec", "bert4rec", "srgnn", "lightgcn"]


def _events(items_per_user: list[list[int]]) -> pd.DataFrame:
    users = np.repeat(np.arange(len(items_per_user)), [len(r) for r in items_per_user])
    items = np.concatenate(items_per_user)
    steps = np.concatenate([np.arange(len(r)) for r in items_per_user])
    return pd.DataFrame(
        {
            "user_id": pd.Series([f"u{u}" for u in users], dtype="string"),
            "item_id": pd.Series([f"i{i:03d}" for i in items], dtype="string"),
            "timestamp": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(steps, unit="min"),
            "event_type": pd.Series(["interaction"] * len(users), dtype="string"),
            "value": np.nan,
        }
    )


def _repeat_buyers(n_users: int = 60, n_items: int = 25, length: int = 10) -> PreparedData:
    """Every user alternates between two items (a b a b ...): from the third event on, the
    next item is always one the user already has."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n_users):
        a, b = rng.choice(n_items, 2, replace=False)
        rows.append([a, b] * (length // 2))
    return prepare(_events(rows), DataConfig(max_len=TINY_MAX_LEN))


def _trained_offset(name: str, prepared: PreparedData, steps: int = 25) -> float:
    torch.manual_seed(0)
    model = build_bundle(prepared, ModelConfig(name=name, params=SMALL[name])).model.train()
    data, lengths = training_dataset(model.input_kind, prepared.split.train, TINY_MAX_LEN)
    batch = data[next(iter(BucketBatchSampler(lengths, 256, False, 0)))]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = compute_loss(model.training_pairs(batch), "ce", 10)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert model.seen_bias is not None
    return float(model.seen_bias.detach())


def test_causal_seen_lists_what_each_step_has_read() -> None:
    seen = causal_seen(torch.tensor([[0, 4, 5, 6]]))
    assert seen[0].tolist() == [[0, 0, 0, 0], [0, 4, 0, 0], [0, 4, 5, 0], [0, 4, 5, 6]]


def seen_mask(seen: torch.Tensor, n_columns: int) -> torch.Tensor:
    """Dense reference: True where the column's item is in the row (padding never)."""
    columns = torch.arange(n_columns)
    return (seen[:, :, None] == columns[None, None, :]).any(dim=1) & (columns != 0)


def base_only(seen: torch.Tensor, bias: torch.Tensor) -> SeenItems:
    """The offsets of a model without a table: ``bias`` once per distinct item."""
    zeros = torch.zeros_like(seen)
    return distinct_seen(seen, zeros, zeros, bias, None)


def test_offset_lands_once_on_each_distinct_history_item() -> None:
    scores = torch.zeros(2, 5)
    seen = base_only(torch.tensor([[0, 2, 2, 3], [0, 0, 0, 0]]), torch.tensor(-1.5))
    out = add_seen_offset_(scores, *seen)
    assert out.tolist() == [[0.0, 0.0, -1.5, -1.5, 0.0], [0.0] * 5]


def test_sparse_offset_equals_the_dense_mask_and_trains_the_same() -> None:
    torch.manual_seed(0)
    seen = torch.randint(0, 40, (16, 12))  # with repeats and padding
    logits = torch.randn(16, 40)
    bias = torch.tensor(-2.0, requires_grad=True)
    sparse = add_seen_offset_(logits.clone(), *base_only(seen, bias))
    dense = logits + bias * seen_mask(seen, 40)
    assert torch.allclose(sparse[:, 1:], dense[:, 1:])
    targets = torch.randint(1, 40, (16,))
    grads = []
    for out in (sparse, dense):
        out = out.clone()
        out[:, 0] = float("-inf")
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(out, targets), bias)
        grads.append(grad)
    assert torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("loss", ["sampled_softmax", "bce"])
def test_sampled_losses_offset_the_same_items_as_full_softmax(loss: str) -> None:
    torch.manual_seed(0)
    seen = torch.randint(0, 30, (6, 5))
    bias = torch.tensor(-3.0)
    pairs = TrainingPairs(
        torch.randn(6, 4), torch.randint(1, 30, (6,)), torch.randn(30, 4), *base_only(seen, bias)
    )
    candidates = torch.randint(1, 30, (1, 40))
    expected = bias * seen_mask(seen, 30).gather(1, candidates.expand(6, -1))
    assert torch.equal(_seen_offset(pairs, candidates), expected)
    assert torch.isfinite(compute_loss(pairs, loss, 10))


def test_scores_move_by_the_offset_on_history_items_only(tiny_prepared: PreparedData) -> None:
    model = build_bundle(
        tiny_prepared, ModelConfig(name="sasrec", params=SMALL["sasrec"])
    ).model.eval()
    histories = tiny_prepared.split.test.histories[:4]
    with torch.no_grad():
        before = model.score_all(histories)
        model.seen_bias_raw.fill_(-0.3)
        after = model.score_all(histories)
    diff = (after - before)[:, 1:]
    in_history = seen_mask(histories, before.shape[1])[:, 1:]
    assert torch.allclose(diff[in_history], torch.tensor(-3.0))
    assert torch.equal(diff[~in_history], torch.zeros_like(diff[~in_history]))


def test_seen_bias_can_be_switched_off(tiny_prepared: PreparedData) -> None:
    params = {**SMALL["sasrec"], "seen_bias": False}
    model = build_bundle(tiny_prepared, ModelConfig(name="sasrec", params=params)).model
    assert model.seen_bias is None and "seen_bias_raw" not in dict(model.named_parameters())


@pytest.mark.parametrize("name", LEARNERS)
def test_offset_turns_negative_when_next_items_are_new(name: str) -> None:
    # the cyclic walk never revisits an item within a window
    assert _trained_offset(name, prepared_cyclic(), steps=60) < -0.5


@pytest.mark.parametrize("name", [n for n in LEARNERS if n != "lightgcn"])
def test_offset_turns_positive_when_next_items_are_repeats(name: str) -> None:
    assert _trained_offset(name, _repeat_buyers()) > 0.5


def test_lightgcn_pairs_never_count_their_own_target_as_seen(tiny_prepared: PreparedData) -> None:
    model = build_bundle(
        tiny_prepared, ModelConfig(name="lightgcn", params=SMALL["lightgcn"])
    ).model
    data, _ = training_dataset("interaction_graph", tiny_prepared.split.train, TINY_MAX_LEN)
    batch = data[list(range(len(data)))]
    pairs = model.training_pairs(batch)
    assert pairs.seen is not None
    assert not (pairs.seen == pairs.targets[:, None]).any()
    assert (pairs.seen != 0).sum(dim=1).min() > 0  # the user's other items are there


@pytest.mark.parametrize("name", ["sasrec", "lightgcn"])
def test_bundles_saved_before_repeat_aware_scoring_still_load(
    name: str, tiny_prepared: PreparedData, tmp_path: Path
) -> None:
    # what an older bundle looks like: no seen_bias switch in its params, no offset in its weights
    params = {**SMALL[name], "seen_bias": False}
    bundle = build_bundle(tiny_prepared, ModelConfig(name=name, params=params))
    bundle.save(tmp_path / "old")
    meta_path = tmp_path / "old" / "bundle.json"
    meta = json.loads(meta_path.read_text())
    del meta["params"]["seen_bias"]
    meta_path.write_text(json.dumps(meta))
    loaded = ModelBundle.load(tmp_path / "old")
    assert loaded.model.seen_bias is None
    histories = tiny_prepared.split.test.histories
    users = torch.as_tensor(tiny_prepared.split.test.users)
    assert torch.equal(loaded.score(histories, users), bundle.score(histories, users))


def test_a_params_dict_without_the_switch_follows_the_weights(
    tiny_prepared: PreparedData, tmp_path: Path
) -> None:
    bundle = build_bundle(tiny_prepared, ModelConfig(name="sasrec", params=SMALL["sasrec"]))
    bundle.model.seen_bias_raw.data.fill_(-0.5)
    bundle.params = dict(SMALL["sasrec"])  # hand-built bundles may carry only the keys they set
    bundle.save(tmp_path / "m")
    loaded = ModelBundle.load(tmp_path / "m")
    assert loaded.model.seen_bias is not None and float(
        loaded.model.seen_bias.detach()
    ) == pytest.approx(-5.0)


def test_lightgcn_reads_each_users_training_items_from_its_graph(
    tiny_prepared: PreparedData,
) -> None:
    model = build_bundle(
        tiny_prepared, ModelConfig(name="lightgcn", params=SMALL["lightgcn"])
    ).model
    train = tiny_prepared.split.train
    users = torch.tensor([3, 0, 3, len(train) - 1])
    items = model.training_items(users)
    for row, user in zip(items.tolist(), users.tolist(), strict=True):
        owned = train.values[train.offsets[user] : train.offsets[user + 1]]
        assert {i for i in row if i} == set(owned.tolist())
