"""Event types carried beside the items: vocabulary, sequences, splits and the funnel world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.config import DataConfig, SyntheticConfig
from components.data.prepare import prepare
from components.data.schema import EVENT, ITEM, USER, sort_events
from components.data.sequences import Vocabulary, build_sequences
from components.data.splits import cold_item_split
from components.data.synthetic import FUNNEL_WINDOW, generate_events

FUNNEL = SyntheticConfig(n_users=40, n_items=60, n_events=1500, funnel=True, seed=3)


def _types_of(vocab: Vocabulary, indices: np.ndarray) -> list[str]:
    return ["" if i == 0 else vocab.event_types[i - 1] for i in indices]


def test_sequences_carry_each_events_type_through_every_selection() -> None:
    events = generate_events(FUNNEL)
    vocab = Vocabulary.from_events(events)
    assert vocab.event_types == ("cart", "purchase", "view")
    seqs = build_sequences(events, vocab)
    assert seqs.events is not None
    ordered = sort_events(events)
    for user in (0, 7, 39):
        mine = ordered[ordered[USER] == vocab.users[user]]
        start, stop = seqs.offsets[user], seqs.offsets[user + 1]
        assert vocab.item_tokens(seqs.values[start:stop]) == mine[ITEM].tolist()
        assert _types_of(vocab, seqs.events[start:stop]) == mine[EVENT].tolist()
    # every selection moves the types with their items
    rows = np.array([5, 2])
    picked = seqs.select(rows)
    assert np.array_equal(
        picked.events[: picked.lengths[0]], seqs.events[seqs.offsets[5] : seqs.offsets[6]]
    )
    shorter = seqs.truncate_tail(2)
    assert np.array_equal(shorter.events[: shorter.lengths[0]], seqs.events[: seqs.lengths[0] - 2])
    drop = np.zeros(vocab.n_items + 1, dtype=bool)
    drop[seqs.values[0]] = True
    kept = seqs.without_items(drop)
    assert np.array_equal(kept.events, seqs.events[~drop[seqs.values]])


def test_evaluation_sets_hold_history_types_and_the_target_events_type() -> None:
    events = generate_events(FUNNEL)
    prepared = prepare(events, DataConfig(max_len=10))
    seqs, test = prepared.sequences, prepared.split.test
    assert test.events is not None and test.target_events is not None
    assert test.events.shape == test.histories.shape
    assert bool(((test.events == 0) == (test.histories == 0)).all())  # aligned padding
    for row in (0, 3):
        user = int(test.users[row])
        end = seqs.offsets[user + 1]
        assert test.target_events[row] == seqs.events[end - 1]
        assert test.events[row, -1] == seqs.events[end - 2]
        assert test.histories[row, -1] == seqs.values[end - 2]
    valid = prepared.split.valid
    user = int(valid.users[0])
    assert valid.target_events[0] == seqs.events[seqs.offsets[user + 1] - 2]
    cold, _ = cold_item_split(prepared.split, 0.3, seed=1)
    assert cold.test.events is not None and len(cold.test.target_events) == len(cold.test)


def test_vocabulary_round_trips_event_types_and_reads_older_files(tmp_path: Path) -> None:
    vocab = Vocabulary(("u1",), ("a", "b"), ("cart", "view"))
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
    assert list(vocab.event_index(["view", "rating", "cart"])) == [2, 0, 1]
    (tmp_path / "old.json").write_text(json.dumps({"users": ["u1"], "items": ["a"]}))
    assert Vocabulary.load(tmp_path / "old.json").event_types == ()


def test_funnel_purchases_are_of_items_the_user_carted_recently() -> None:
    events = sort_events(generate_events(FUNNEL))
    assert set(events[EVENT].unique()) == {"view", "cart", "purchase"}
    checked = 0
    for _, mine in events.groupby(USER, sort=False):
        kinds, items = mine[EVENT].tolist(), mine[ITEM].tolist()
        plain = [(k, i) for k, i in zip(kinds, items, strict=True)]
        for pos, (kind, item) in enumerate(plain):
            if kind != "purchase":
                continue
            before = [(k, i) for k, i in plain[:pos] if k != "purchase"][-FUNNEL_WINDOW:]
            assert ("cart", item) in before
            checked += 1
    assert checked > 50


def test_frames_without_event_type_column_give_sequences_without_types() -> None:
    frame = pd.DataFrame(
        {
            USER: ["u1", "u1", "u2"],
            ITEM: ["a", "b", "a"],
            "timestamp": pd.to_datetime([1, 2, 3], unit="s", utc=True),
        }
    )
    vocab = Vocabulary.from_events(frame)
    assert vocab.event_types == ()
    assert build_sequences(frame, vocab).events is None
