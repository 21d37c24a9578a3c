"""Integrated gradients: completeness on real models, None where it does not apply."""

from __future__ import annotations

import pytest
import torch

from components.data.prepare import PreparedData
from components.explain.gradients import integrated_gradients
from tests.components.models.test_contract import _bundle


def _score_with_zero_embeddings(model, row: torch.Tensor, target: int) -> float:
    """f(baseline): the history's item embeddings replaced by zeros."""

    done: list[bool] = []

    def zero(module, inputs, output):
        ids = inputs[0] if inputs else None
        if done or not isinstance(ids, torch.Tensor) or ids.shape != row.shape:
            return None
        if isinstance(output, torch.Tensor) and output.dim() == 3 and torch.equal(ids, row):
            done.append(True)
            return torch.zeros_like(output)
        return None

    hooks = [m.register_forward_hook(zero) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            return float(model.score_all(row)[0, target])
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "srgnn"])
def test_attributions_add_up_to_the_score_change_from_the_baseline(
    name: str, tiny_prepared: PreparedData
) -> None:
    bundle = _bundle(name, tiny_prepared)
    history = tiny_prepared.split.test.histories[2]
    history = history[history != 0]
    target = 5
    attributions = integrated_gradients(bundle.model, history, target, bundle.max_len, steps=256)
    assert attributions is not None and attributions.shape == history.shape
    row = torch.zeros(1, bundle.max_len, dtype=torch.long)
    row[0, bundle.max_len - len(history) :] = history
    with torch.no_grad():
        full = float(bundle.model.score_all(row)[0, target])
    change = full - _score_with_zero_embeddings(bundle.model, row, target)
    assert float(attributions.sum()) == pytest.approx(change, rel=0.05, abs=1e-3)


@pytest.mark.parametrize("name", ["itemknn", "pop", "lightgcn"])
def test_models_without_a_history_embedding_get_none(
    name: str, tiny_prepared: PreparedData
) -> None:
    bundle = _bundle(name, tiny_prepared)
    history = torch.tensor([1, 2, 3])
    assert integrated_gradients(bundle.model, history, 4, bundle.max_len) is None
