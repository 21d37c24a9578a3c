"""Prefix reuse for one-event deletions equals encoding every deletion from scratch."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from components.explain.influence import (
    Question,
    deletion_influence,
    deletion_rows,
    ranks_of,
)
from components.models.base import Recommender
from components.models.sasrec import SASRec
from components.models.zoo import get_model_class

N_ITEMS, WIDTH = 300, 12


def _model(name: str, **params: Any) -> Recommender:
    torch.manual_seed(0)
    cls = get_model_class(name)
    model = cls(cls.Params(**params), N_ITEMS, 0, WIDTH)
    with torch.no_grad():  # a learned seen-item offset, so it is exercised
        assert model.seen_bias_raw is not None
        model.seen_bias_raw.fill_(-0.3)
    return model.eval()


def _sasrec(**params: Any) -> SASRec:
    model = _model("sasrec", **params)
    assert isinstance(model, SASRec)
    return model


@pytest.mark.parametrize(
    "name,params",
    [
        ("sasrec", {}),  # post-LN, 2 blocks (the Beauty recipe)
        ("sasrec", {"norm_first": True, "num_layers": 3}),
        ("sasrec", {"num_layers": 1}),
        ("sasrec", {"event_types": True, "n_event_types": 3}),
        ("bsarec", {}),  # causal low-pass filter + attention, 2 layers
        ("bsarec", {"num_layers": 3, "alpha": 0.3, "event_types": True, "n_event_types": 3}),
        ("gru4rec", {}),
        ("gru4rec", {"num_layers": 2, "event_types": True, "n_event_types": 3}),
        ("lrurec", {"hidden_size": 16}),  # 2 blocks: first-block closed form, last-row sum
        ("lrurec", {"hidden_size": 16, "num_layers": 1}),  # the first block is the last
        ("lrurec", {"hidden_size": 16, "num_layers": 3, "event_types": True, "n_event_types": 3}),
    ],
)
@pytest.mark.parametrize("length,events", [(WIDTH, WIDTH), (7, 4), (2, 2)])
def test_prefix_reuse_equals_encoding_each_deletion(
    name: str, params: dict[str, Any], length: int, events: int
) -> None:
    """The hook equals ``encode`` of every left-padded deletion within float32
    reassociation (``atol`` 1e-5 on LayerNorm-scale states; LRURec's powers of ``lambda``
    are taken in closed form, the scan multiplies them up)."""
    model = _model(name, **params)
    generator = torch.Generator().manual_seed(1)
    histories = torch.randint(1, N_ITEMS + 1, (3, length), generator=generator)
    types = torch.randint(1, 4, (3, length), generator=generator)
    kinds = types if params.get("event_types") else None
    with torch.no_grad():
        found = model.encode_deletions(histories, torch.arange(length - events, length), kinds)
    assert found is not None and found.shape[:2] == (3, events + 1)
    for question, history in enumerate(histories):  # a batch of histories of one length
        rows, positions = deletion_rows(history, WIDTH, events)
        assert positions.tolist() == list(range(length - events, length))
        kind_rows = None if kinds is None else deletion_rows(kinds[question], WIDTH, events)[0]
        with torch.no_grad():
            expected = model.encode(rows, None, kind_rows)
        assert torch.allclose(found[question], expected, atol=1e-5)


def test_no_shortcut_where_it_would_not_be_exact() -> None:
    history, positions = torch.tensor([[5, 9, 2, 7]]), torch.arange(4)
    # positions counted from the most recent event shift every earlier event on a deletion
    assert _sasrec(positions_from="last").encode_deletions(history, positions) is None
    for name in ("sasrec", "bsarec", "gru4rec", "lrurec"):
        training = _model(name).train()  # dropout on
        assert training.encode_deletions(history, positions) is None
    # BSARec's reference filter reads the whole padded window (future and padding included)
    assert _model("bsarec", filter="window").encode_deletions(history, positions) is None
    assert _sasrec().encode_deletions(history[:, :1], positions[:1]) is None  # nothing left
    assert _model("lrurec").encode_deletions(history[:, :1], positions[:1]) is None


@pytest.mark.parametrize(
    "name,params",
    [
        ("sasrec", {}),
        ("bsarec", {}),
        ("bsarec", {"filter": "window"}),  # no shortcut: the generic path
        ("gru4rec", {}),
        ("lrurec", {}),
    ],
)
def test_influence_equals_rescoring_every_deletion_with_score_all(
    name: str, params: dict[str, Any]
) -> None:
    """Drops and the listed rank changes from encodings + target columns equal plain
    counterfactual deletion: ``score_all`` of each history without one event."""
    model = _model(name, **params)
    history = torch.randint(1, N_ITEMS + 1, (WIDTH,), generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([history[-1].item(), 17, 250])  # one of them is in the history
    question = Question(history, targets)
    other = Question(history.flip(0)[2:], targets)  # another length: a group of its own
    found, _, again = deletion_influence(model, [question, other, question], WIDTH, WIDTH, listed=3)
    assert torch.allclose(again.drops, found.drops, atol=1e-6)
    rows, _ = deletion_rows(history, WIDTH, WIDTH)
    with torch.no_grad():
        scores = model.score_all(rows)
    expected = (scores[:1, targets] - scores[1:, targets]).T
    assert torch.allclose(found.drops, expected, atol=1e-5)
    assert torch.allclose(found.scores, scores[0, targets], atol=1e-5)
    assert torch.equal(found.ranks, ranks_of(scores[:1], targets)[0])
    assert found.ranked is not None and bool(found.ranked.any())
    changes = (ranks_of(scores[1:], targets) - found.ranks[None]).T
    assert torch.equal(found.rank_changes[found.ranked], changes[found.ranked])
