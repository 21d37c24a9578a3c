"""Histories for the influence report remapped into another model's vocabulary."""

from __future__ import annotations

import torch

from components.data.sequences import Vocabulary
from components.explain.histories import EvalHistories, remap_histories


def test_remapped_histories_drop_unknown_items_with_their_event_types() -> None:
    vocab = Vocabulary(users=("u",), items=("a", "b", "c", "d"))
    champion = Vocabulary(users=("u",), items=("d", "b", "x"))  # a and c are unknown
    data = EvalHistories(
        histories=torch.tensor([[0, 1, 2, 3, 4], [0, 0, 0, 4, 2], [0, 0, 0, 0, 1]]),
        event_types=[["view", "cart", "view", "buy"], ["view", "buy"], ["cart"]],
    )
    out = remap_histories(data, vocab, champion, width=3)
    # b -> 2, d -> 1 in the champion's indices; rows stay left padded
    assert out.histories.tolist() == [[0, 2, 1], [0, 1, 2], [0, 0, 0]]
    assert out.event_types == [["cart", "buy"], ["view", "buy"], []]
    cropped = remap_histories(data, vocab, champion, width=1)
    assert cropped.histories.tolist() == [[1], [2], [0]]
    assert cropped.event_types == [["buy"], ["buy"], []]
    untyped = remap_histories(EvalHistories(histories=data.histories), vocab, champion, 3)
    assert untyped.event_types is None and torch.equal(untyped.histories, out.histories)
