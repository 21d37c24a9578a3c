"""Seen-item offsets by event type and recency: a carted item and a viewed one are lifted
differently, the table is trained by the loss, and every path that scores (full ranking,
sampled losses, ANN) adds the same offsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.data.config import DataConfig
from components.data.prepare import PreparedData, prepare
from components.errors import ConfigError
from components.models.ann import AnnIndex, ann_recommend, write_index
from components.models.base import (
    SEEN_BIAS_GAIN,
    SEEN_TABLE_GAIN,
    TrainingPairs,
    add_seen_offset_,
    distinct_seen,
)
from components.models.bundle import ModelBundle, build_model
from components.models.config import ModelConfig
from components.training.datamodules import BucketBatchSampler, training_dataset
from components.training.losses import _seen_offset, compute_loss
from components.training.trainer import build_bundle
from tests.components.models.conftest import TINY_MAX_LEN
from tests.components.models.test_contract import SMALL

VIEW, CART, BUY = 3, 1, 2  # vocabulary order: cart, purchase, view


def test_each_item_gets_the_base_once_and_each_of_its_types_once_at_its_latest() -> None:
    seen = torch.tensor([[7, 3, 3, 5, 3, 0]])
    events = torch.tensor([[VIEW, VIEW, CART, VIEW, VIEW, 0]])
    buckets = torch.tensor([[2, 2, 1, 1, 0, 0]])  # the last real entry is the most recent
    table = torch.arange(12, dtype=torch.float32).view(4, 3) / 10  # [type, bucket]
    out = add_seen_offset_(
        torch.zeros(1, 9), *distinct_seen(seen, events, buckets, torch.tensor(-1.0), table)
    )
    expected = torch.zeros(1, 9)
    expected[0, 3] = -1.0 + table[VIEW, 0] + table[CART, 1]  # viewed twice (latest: 0), carted
    expected[0, 5] = -1.0 + table[VIEW, 1]
    expected[0, 7] = -1.0 + table[VIEW, 2]
    torch.testing.assert_close(out, expected)


def _events(rows: list[list[tuple[int, str]]]) -> pd.DataFrame:
    users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    flat = [event for row in rows for event in row]
    steps = np.concatenate([np.arange(len(r)) for r in rows])
    return pd.DataFrame(
        {
            "user_id": pd.Series([f"u{u}" for u in users], dtype="string"),
            "item_id": pd.Series([f"i{i:03d}" for i, _ in flat], dtype="string"),
            "timestamp": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(steps, unit="min"),
            "event_type": pd.Series([kind for _, kind in flat], dtype="string"),
            "value": np.nan,
        }
    )


def _cart_then_buy(n_users: int = 60, n_items: int = 40) -> PreparedData:
    """view x, cart y, view z, purchase y, ...: the item bought next is always the one
    carted two events before, never a viewed one; ids alone do not say which."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n_users):
        row: list[tuple[int, str]] = []
        for _ in range(3):
            x, y, z = rng.choice(n_items, 3, replace=False)
            row += [(x, "view"), (y, "cart"), (z, "view"), (y, "purchase")]
        rows.append(row)
    return prepare(_events(rows), DataConfig(max_len=TINY_MAX_LEN))


@pytest.fixture(scope="module")
def carts() -> PreparedData:
    return _cart_then_buy()


def _model(name: str, prepared: PreparedData, **extra: object) -> torch.nn.Module:
    torch.manual_seed(0)
    params = {**SMALL[name], "event_types": True, **extra}
    return build_bundle(prepared, ModelConfig(name=name, params=params)).model


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "bert4rec"])
def test_carted_items_learn_a_higher_offset_than_viewed_ones(
    name: str, carts: PreparedData
) -> None:
    model = _model(name, carts).train()
    data, lengths = training_dataset(model.input_kind, carts.split.train, TINY_MAX_LEN)
    batch = data[next(iter(BucketBatchSampler(lengths, 256, False, 0)))]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = compute_loss(model.training_pairs(batch), "ce", 10)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    table = model.learned_seen_table()
    assert table is not None and len(table) == 4  # none, cart, purchase, view
    assert table[CART][0] > table[VIEW][0] + 1.0, table


def test_scores_move_by_the_entry_of_each_history_events_type(carts: PreparedData) -> None:
    model = _model("sasrec", carts, seen_recency=[2]).eval()
    histories = torch.tensor([[0, 4, 9, 4], [5, 6, 7, 8]])
    events = torch.tensor([[0, VIEW, VIEW, CART], [VIEW, VIEW, VIEW, VIEW]])
    with torch.no_grad():
        before = model.score_all(histories, None, events)
        model.seen_bias_table_raw[CART, 0] = 0.1  # carted, age 0 or 1
        model.seen_bias_table_raw[VIEW, 1] = -0.05  # viewed, age >= 2
        after = model.score_all(histories, None, events)
    diff = after - before
    cart, view = 0.1 * SEEN_TABLE_GAIN, -0.05 * SEEN_TABLE_GAIN
    # item 4: carted at age 0 and viewed at age 2, so both entries count
    assert diff[0, 4].item() == pytest.approx(cart + view)
    assert diff[1, 5].item() == pytest.approx(view) and diff[1, 6].item() == pytest.approx(view)
    moved = torch.zeros_like(diff, dtype=torch.bool)
    moved[0, 4] = moved[1, 5] = moved[1, 6] = True
    moved[:, 0] = True  # padding stays -inf
    # nothing else moved: item 9 and items 7, 8 were viewed at ages 0-1 (untouched bucket)
    assert bool((diff[~moved] == 0).all())


def test_sampled_losses_and_ann_add_the_same_offsets_as_full_scoring(
    carts: PreparedData, tmp_path: Path
) -> None:
    model = _model("sasrec", carts).eval()
    with torch.no_grad():
        model.seen_bias_raw.fill_(-0.1)
        model.seen_bias_table_raw.normal_(std=0.05)
    histories = carts.split.test.histories[:6]
    events = carts.split.test.events[:6]
    seen = model.seen_offsets(histories, events)
    assert seen is not None
    pairs = TrainingPairs(
        torch.randn(6, 16), carts.split.test.targets[:6], torch.randn(41, 16), *seen
    )
    dense = add_seen_offset_(torch.zeros(6, 41), *seen)
    candidates = torch.arange(1, 41)[None]
    torch.testing.assert_close(_seen_offset(pairs, candidates), dense[:, 1:])
    assert write_index(model, tmp_path) is not None
    ann = AnnIndex.load(tmp_path, nprobe=64)
    assert ann is not None
    none = torch.zeros(6, 1, dtype=torch.long)
    items, scores = ann_recommend(model, ann, histories, 5, none, events)
    with torch.no_grad():
        exact = model.score_all(histories, None, events)
    torch.testing.assert_close(scores, exact.gather(1, items))


def test_a_bundle_saved_before_the_table_loads_with_the_base_offset_alone(
    carts: PreparedData, tmp_path: Path
) -> None:
    bundle = build_bundle(
        carts, ModelConfig(name="sasrec", params={**SMALL["sasrec"], "event_types": True})
    )
    bundle.model.seen_bias_raw.data.fill_(-0.2)
    bundle.save(tmp_path / "old")
    state = torch.load(tmp_path / "old" / "weights.pt", weights_only=True)
    del state["seen_bias_table_raw"]
    torch.save(state, tmp_path / "old" / "weights.pt")
    loaded = ModelBundle.load(tmp_path / "old")
    table = loaded.model.learned_seen_table()
    assert table is not None and all(
        v == pytest.approx(-0.2 * SEEN_BIAS_GAIN) for r in table for v in r
    )
    test = carts.split.test
    torch.testing.assert_close(
        loaded.score(test.histories, None, test.events),
        bundle.score(test.histories, None, test.events),
    )


def test_models_without_types_or_order_keep_one_offset(carts: PreparedData) -> None:
    assert _model("sasrec", carts, event_types=False).seen_bias_table_raw is None
    lightgcn = build_model("lightgcn", SMALL["lightgcn"], 40, 60, TINY_MAX_LEN)
    assert lightgcn.seen_bias_table_raw is None
    with pytest.raises(ConfigError, match="seen_recency must be increasing"):
        build_model("sasrec", {"seen_recency": [5, 2]}, 40, 60, TINY_MAX_LEN)


def test_explanations_rescore_with_the_same_offsets_by_type(carts: PreparedData) -> None:
    from components.explain.influence import Question, deletion_influence
    from components.explain.search import target_column

    model = _model("sasrec", carts).eval()
    with torch.no_grad():
        model.seen_bias_table_raw.normal_(std=0.1)
    history = carts.split.test.histories[0][-6:]
    events = carts.split.test.events[0][-6:]
    targets = torch.unique(history)
    question = Question(history, targets, events)
    (influence,) = deletion_influence(model, [question], TINY_MAX_LEN, 6)
    with torch.no_grad():
        full = model.score_all(history[None], None, events[None])[0]
        for column, position in enumerate(influence.positions.tolist()):
            keep = torch.arange(len(history)) != position
            without = model.score_all(history[keep][None], None, events[keep][None])[0]
            torch.testing.assert_close(influence.drops[:, column], full[targets] - without[targets])
        column = target_column(model, history[None], events[None], int(targets[0]))
    torch.testing.assert_close(column[0], full[targets[0]])
