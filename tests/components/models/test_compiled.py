"""The serving scorer: a frozen trace of ``score_all`` only where it stands for every input."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from components.models.base import mask_padding_column
from components.models.bundle import build_model
from components.models.compiled import TOLERANCE, serving_scorer
from components.models.pop import Pop

CPU = torch.device("cpu")
N_ITEMS = 30


def _histories(seed: int, batch: int, length: int) -> Tensor:
    """Histories unlike the scorer's own probes: other seeds, sizes, padding and repeats."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.randint(1, N_ITEMS + 1, (batch, length), generator=generator)
    out[0, : length - 1] = 0  # one real item
    out[-1, 1] = out[-1, -1]  # a repeat
    return out


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("sasrec", {}),
        ("sasrec", {"seen_recency": [1, 5]}),
        ("sasrec", {"event_types": True, "n_event_types": 3}),
        ("bsarec", {}),
        ("bert4rec", {}),
    ],
)
def test_a_traced_model_scores_as_the_model_does(name: str, params: dict) -> None:
    model = build_model(name, params, N_ITEMS, 4, 12).eval()
    with_events = bool(params.get("event_types"))
    scorer = serving_scorer(model, True, with_events, CPU)
    assert scorer.kind == "traced", scorer.reason
    for seed, (batch, length) in enumerate([(1, 5), (3, 12), (4, 9), (2, 4)]):
        histories = _histories(seed + 10, batch, length)
        events = torch.randint(0, 4, histories.shape) if with_events else None
        with torch.inference_mode():
            want = model.score_all(histories, None, events)
            got = scorer(histories, events)
        assert torch.equal(got[:, 1:].topk(10).indices, want[:, 1:].topk(10).indices)
        scale = 1.0 + float(want[:, 1:].abs().max())
        assert torch.allclose(got[:, 1:], want[:, 1:], rtol=0.0, atol=TOLERANCE * scale)
        assert bool(torch.isneginf(got[:, 0]).all())  # padding is never ranked


@pytest.mark.parametrize("name", ["gru4rec", "lrurec"])
def test_a_model_whose_trace_reads_tensor_values_is_served_eagerly(name: str) -> None:
    """GRU4Rec packs sequences by their lengths and LRURec scans by length: both read
    tensors back into Python while tracing, so a trace would freeze one input's lengths."""
    model = build_model(name, {}, N_ITEMS, 4, 12).eval()
    scorer = serving_scorer(model, True, False, CPU)
    assert scorer.kind == "eager"
    assert "reads tensor values in Python" in scorer.reason
    histories = _histories(3, 3, 7)
    with torch.inference_mode():
        assert torch.equal(scorer(histories), model.score_all(histories))


def test_eager_by_configuration_calls_the_model_itself() -> None:
    model = build_model("sasrec", {}, N_ITEMS, 4, 12).eval()
    scorer = serving_scorer(model, False, False, CPU)
    assert scorer.kind == "eager" and scorer.traced is None
    assert "eager" in scorer.reason


class _ShapeBranching(Pop):
    """Scores one way for short histories and another for long ones, deciding by the
    history's width: a trace would freeze the traced width's branch."""

    def score_all(
        self, histories: Tensor, users: Tensor | None = None, events: Tensor | None = None
    ) -> Tensor:
        scores = super().score_all(histories, users, events)
        if histories.shape[1] > 4:
            scores = -scores
        return mask_padding_column(scores)


def test_a_trace_that_does_not_hold_for_other_shapes_is_refused() -> None:
    model = _ShapeBranching(Pop.Params(), N_ITEMS, 4, 12)
    model.counts.copy_(torch.arange(N_ITEMS + 1, dtype=torch.float32))
    scorer = serving_scorer(model, True, False, CPU)
    assert scorer.kind == "eager" and scorer.reason != "traced"
    for length in (3, 7):  # both branches, as the model itself takes them
        histories = _histories(1, 2, length)
        with torch.inference_mode():
            assert torch.equal(scorer(histories), model.score_all(histories))
