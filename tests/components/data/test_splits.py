from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from components.data import sequences as sequences_module
from components.data.config import DataConfig
from components.data.prepare import prepare
from components.data.schema import normalize_events
from components.data.sequences import Sequences, Vocabulary, build_sequences, pad_left
from components.data.splits import leave_one_out, temporal
from components.errors import DataError


def _events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return normalize_events(frame, source="test")


def test_vocabulary_reserves_zero_for_padding_and_roundtrips(tmp_path) -> None:
    events = _events([("u1", "b", 1), ("u2", "a", 2)])
    vocab = Vocabulary.from_events(events)
    assert vocab.item_index(["a", "b", "zzz"]).tolist() == [1, 2, 0]
    assert vocab.user_index(["u2", "nobody"]).tolist() == [1, -1]
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json") == vocab


def test_sequences_follow_time_then_input_order() -> None:
    events = _events([("u", "c", 5), ("u", "a", 1), ("u", "b", 5)])
    vocab = Vocabulary.from_events(events)
    seqs = build_sequences(events, vocab)
    assert vocab.item_tokens(seqs.row(0)) == ["a", "c", "b"]


def test_pad_left_keeps_most_recent_items() -> None:
    values = np.array([1, 2, 3, 4, 5, 6])
    offsets = np.array([0, 4, 4, 6])
    out = pad_left(values, offsets, 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 0], [0, 5, 6]]


def test_leave_one_out_never_leaks_targets_into_training() -> None:
    rows = [("u1", it, t) for t, it in enumerate("abcde")] + [("u2", "a", 1), ("u2", "b", 2)]
    prepared = prepare(_events(rows), DataConfig(max_len=4))
    split = prepared.split
    vocab = prepared.vocab
    assert split.train_only_users == 1  # u2 has 2 events: trained on, counted, not evaluated
    assert vocab.item_tokens(split.train.row(0)) == ["a", "b", "c"]
    assert vocab.item_tokens(split.train.row(1)) == ["a", "b"]
    assert vocab.item_tokens(split.valid.targets.tolist()) == ["d"]
    assert vocab.item_tokens(split.test.targets.tolist()) == ["e"]
    assert split.valid.histories.tolist() == [[0, 1, 2, 3]]
    assert split.test.histories.tolist() == [[1, 2, 3, 4]]
    # the test target never appears in its own history or in training
    assert split.test.targets[0].item() not in split.train.row(0)


def test_temporal_split_holds_out_the_future() -> None:
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 9), ("u2", "a", 3), ("u2", "d", 10)]
    events = _events(rows)
    vocab = Vocabulary.from_events(events)
    split = temporal(build_sequences(events, vocab), vocab.n_items, 4, test_fraction=0.4)
    cut_targets = vocab.item_tokens(split.test.targets.tolist())
    assert sorted(cut_targets) == ["c", "d"]
    assert int(split.train.lengths.sum()) <= 3


def test_split_requires_enough_events() -> None:
    events = _events([("u1", "a", 1), ("u1", "b", 2)])
    vocab = Vocabulary.from_events(events)
    with pytest.raises(DataError, match="at least 3 events"):
        leave_one_out(build_sequences(events, vocab), vocab.n_items, 5)


def test_synthetic_data_is_deterministic_and_realistic(tiny_events: pd.DataFrame) -> None:
    from components.data.synthetic import generate_events
    from tests.conftest import TINY_SYNTHETIC

    again = generate_events(TINY_SYNTHETIC)
    pd.testing.assert_frame_equal(tiny_events, again)
    assert len(tiny_events) == TINY_SYNTHETIC.n_events
    assert tiny_events.groupby("user_id").size().min() >= 3
    counts = tiny_events["item_id"].value_counts()
    assert counts.iloc[0] > 5 * counts.median()  # popularity skew
    assert set(tiny_events["event_type"].unique()) <= {"view", "click", "cart", "purchase"}
    ts = tiny_events.groupby("user_id")["timestamp"].apply(lambda s: s.is_monotonic_increasing)
    assert ts.all()


def test_synthetic_has_sequential_structure(tiny_events: pd.DataFrame) -> None:
    """The next item is far more predictable from the current one than from popularity."""
    ordered = tiny_events.sort_values(["user_id", "timestamp"], kind="stable")
    cur = ordered["item_id"].to_numpy()[:-1]
    nxt = ordered["item_id"].to_numpy()[1:]
    same_user = ordered["user_id"].to_numpy()[:-1] == ordered["user_id"].to_numpy()[1:]
    pairs = pd.DataFrame({"cur": cur[same_user], "nxt": nxt[same_user]})
    top_transition = pairs.groupby("cur")["nxt"].agg(lambda s: s.value_counts().iloc[0] / len(s))
    most_popular_share = tiny_events["item_id"].value_counts(normalize=True).iloc[0]
    assert top_transition.mean() > 3 * most_popular_share


def test_padded_tensor_type() -> None:
    events = _events([("u", "a", 1)])
    vocab = Vocabulary.from_events(events)
    assert build_sequences(events, vocab).padded(2).dtype == torch.int64


def test_cold_item_protocol_removes_items_from_training_and_keeps_their_test_users() -> None:
    from components.data.config import DataConfig
    from components.data.prepare import prepare
    from components.data.splits import cold_item_split
    from tests.components.models.conftest import cyclic_events

    prepared = prepare(cyclic_events(80, 30, 10, seed=1), DataConfig(max_len=12))
    split, cold = cold_item_split(prepared.split, share=0.1, seed=4)
    assert len(cold) == 3 and (cold >= 1).all()
    assert not np.isin(split.train.values, cold).any()
    kept = ~np.isin(prepared.split.train.values, cold)
    assert len(split.train.values) == int(kept.sum())  # only cold items were removed
    assert np.isin(split.test.targets.numpy(), cold).all() and len(split.test) > 0
    assert len(split.valid) == len(prepared.split.valid)  # model selection unchanged
    again, same = cold_item_split(prepared.split, share=0.1, seed=4)
    assert np.array_equal(cold, same)  # seeded
    other, different = cold_item_split(prepared.split, share=0.1, seed=5)
    assert not np.array_equal(cold, different)


def _random_sequences(seed: int = 5, users: int = 40) -> Sequences:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 12, size=users)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    return Sequences(
        rng.integers(1, 30, size=total),
        offsets,
        np.sort(rng.integers(0, 10**12, size=total)),
        rng.integers(1, 4, size=total),
    )


def _rows(seqs: Sequences, column: np.ndarray) -> list[list[int]]:
    return [column[a:b].tolist() for a, b in zip(seqs.offsets[:-1], seqs.offsets[1:], strict=True)]


@pytest.mark.parametrize("chunk", [3, 1 << 16])
def test_chunked_split_equals_a_per_user_reference(monkeypatch, chunk: int) -> None:
    """The chunked gathers and the eval sets padded straight from the sequences give, user
    by user, what slicing each user's list gives (chunk 3: many chunks, ragged last one)."""
    monkeypatch.setattr(sequences_module, "CHUNK_ROWS", chunk)
    seqs, max_len = _random_sequences(), 5
    values, kinds = _rows(seqs, seqs.values), _rows(seqs, seqs.events)
    split = leave_one_out(seqs, n_items=30, max_len=max_len)
    evaluable = [u for u, row in enumerate(values) if len(row) >= 3]
    assert _rows(split.train, split.train.values) == [
        row[:-2] if len(row) >= 3 else row for row in values
    ]
    assert _rows(split.train, split.train.events) == [
        row[:-2] if len(row) >= 3 else row for row in kinds
    ]

    def padded(row: list[int]) -> list[int]:
        kept = row[-max_len:]
        return [0] * (max_len - len(kept)) + kept

    for eval_set, drop in ((split.valid, 1), (split.test, 0)):
        assert eval_set.users.tolist() == evaluable
        cut = [len(values[u]) - drop - 1 for u in evaluable]
        assert eval_set.targets.tolist() == [
            values[u][c] for u, c in zip(evaluable, cut, strict=True)
        ]
        assert eval_set.histories.tolist() == [
            padded(values[u][:c]) for u, c in zip(evaluable, cut, strict=True)
        ]
        assert eval_set.events is not None and eval_set.target_events is not None
        assert eval_set.events.tolist() == [
            padded(kinds[u][:c]) for u, c in zip(evaluable, cut, strict=True)
        ]
        assert eval_set.target_events.tolist() == [
            kinds[u][c] for u, c in zip(evaluable, cut, strict=True)
        ]
        assert eval_set.positions is not None and eval_set.positions.tolist() == cut
    picked = np.array([7, 0, 7, 3])
    chosen = seqs.select(picked)
    assert _rows(chosen, chosen.values) == [values[u] for u in picked]
    assert pad_left(seqs.values, seqs.offsets, max_len).tolist() == [padded(row) for row in values]
