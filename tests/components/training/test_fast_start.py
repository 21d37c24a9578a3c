"""Time-to-accuracy levers: the sampled losses' seen-item offsets for shared negatives,
the item-transition warm start of the id table, and the size-aware training recipe."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.data.config import DataConfig
from components.data.prepare import prepare
from components.data.sequences import Sequences
from components.evaluation.config import EvalConfig
from components.models.base import distinct_seen, seen_offset_at, seen_offset_shared
from components.models.config import ModelConfig
from components.models.warm_start import spectral_item_embeddings, transition_counts
from components.training.config import TrainConfig
from components.training.datamodules import prefix_cost, resolved_samples, training_dataset
from components.training.trainer import train_model


def _sequences(rows: list[list[int]]) -> Sequences:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Sequences(np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]), offsets)


@pytest.mark.parametrize("with_table", [False, True])
def test_shared_candidate_offsets_equal_the_dense_comparison(with_table: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    seen = torch.randint(0, 30, (40, 12), generator=generator)
    seen[:5, :4] = 0  # padding
    kinds = torch.randint(0, 3, (40, 12), generator=generator) if with_table else seen * 0
    buckets = torch.randint(0, 4, (40, 12), generator=generator) if with_table else seen * 0
    base = torch.tensor(-2.0, requires_grad=True)
    table = torch.randn(3, 4, generator=generator, requires_grad=True) if with_table else None
    items = distinct_seen(seen, kinds, buckets, base, table)
    candidates = torch.randint(0, 30, (60,), generator=generator)  # repeats and padding too
    assert len(candidates.unique()) < len(candidates)
    dense = seen_offset_at(items, candidates[None, :])
    shared = seen_offset_shared(items, candidates, 30)
    torch.testing.assert_close(shared, dense, rtol=0, atol=1e-5)
    assert (dense != 0).any()
    weights = torch.randn(dense.shape, generator=generator)
    parameters = [base] if table is None else [base, table]
    expected = torch.autograd.grad((dense * weights).sum(), parameters, retain_graph=True)
    got = torch.autograd.grad((shared * weights).sum(), parameters)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_transition_counts_are_symmetric_and_per_sequence() -> None:
    train = _sequences([[1, 2, 3], [3, 1], [4]])
    counts = transition_counts(train, 5).toarray()
    expected = np.zeros((6, 6))
    for a, b in [(1, 2), (2, 3), (3, 1)]:  # no pair across sequences (3 -> 3, 1 -> 4)
        expected[a, b] += 1
        expected[b, a] += 1
    np.testing.assert_array_equal(counts, expected)


def test_warm_start_puts_items_that_follow_each_other_together() -> None:
    rng = np.random.default_rng(0)
    # 20 communities of 4 items (1-80); sequences walk inside one community; item 81 and
    # 82 never occur
    rows = []
    for _ in range(600):
        group = rng.integers(0, 20)
        rows.append(list(1 + 4 * group + rng.integers(0, 4, size=6)))
    table, connected = spectral_item_embeddings(_sequences(rows), 82, dim=24, std=0.02)
    assert table.shape == (83, 24)
    assert connected[1:81].all() and not connected[[0, 81, 82]].any()
    assert np.all(table[[0, 81, 82]] == 0)
    assert abs(table[1:81].std() - 0.02) < 1e-3
    unit = table[1:81] / np.linalg.norm(table[1:81], axis=1, keepdims=True)
    cosine = unit @ unit.T
    same = np.equal.outer(np.arange(80) // 4, np.arange(80) // 4)
    off_diagonal = ~np.eye(80, dtype=bool)
    assert cosine[same & off_diagonal].mean() > 0.8
    assert abs(cosine[~same].mean()) < 0.1
    again, _ = spectral_item_embeddings(_sequences(rows), 82, dim=24, std=0.02)
    np.testing.assert_array_equal(table, again)  # a fixed seed: the same start every time


def test_prefix_cost_and_the_size_aware_recipe() -> None:
    # lengths 3 and 6 with max_len 4: positions read 2 + 4 inputs; prefixes 1+2 and
    # 1+2+3+4+4 tokens
    train = _sequences([[1, 2, 3], [1, 2, 3, 4, 5, 6], [7]])
    assert prefix_cost(train, max_len=4) == pytest.approx((3 + 14) / 6)
    assert resolved_samples("auto", "causal", train, 4, cost_limit=3.0) == "prefixes"
    assert resolved_samples("auto", "causal", train, 4, cost_limit=2.5) == "positions"
    assert resolved_samples("auto", "masked", train, 4, cost_limit=100.0) == "positions"
    assert resolved_samples("positions", "causal", train, 4, cost_limit=100.0) == "positions"
    assert resolved_samples("prefixes", "causal", train, 4, cost_limit=0.1) == "prefixes"


def test_warm_start_and_auto_curriculum_train_through_lightning(
    tiny_events: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``samples: auto`` picks prefixes here (a limit above the data's cost); with
    ``positions_first_epochs: 1`` epoch 1 takes one step per 256 sequences, epoch 2 one
    per 256 prefixes."""
    prepared = prepare(tiny_events, DataConfig(max_len=20))
    cfg = TrainConfig(
        max_epochs=2,
        batch_size=256,
        progress_bar=False,
        seed=0,
        val_every_steps=None,
        samples="auto",
        prefix_cost_limit=1e6,
        positions_first_epochs=1,
        loss="sampled_softmax",
        num_negatives=32,
    )
    params = {"hidden_size": 16, "num_layers": 1, "item_init": "transitions"}
    with caplog.at_level(logging.INFO, logger="components.training.trainer"):
        result = train_model(
            prepared, ModelConfig(name="sasrec", params=params), cfg, EvalConfig(), tmp_path
        )
    assert "train.samples=auto: prefixes" in caplog.text
    sequences = len(training_dataset("causal", prepared.split.train, 20)[0])
    prefixes = len(training_dataset("session_graph", prepared.split.train, 20)[0])
    assert prefixes > 2 * sequences
    steps = [int(entry["step"]) for entry in result.history]
    assert steps == [-(-sequences // 256), -(-sequences // 256) + -(-prefixes // 256)]
    assert result.history[-1]["ndcg@10"] > 0
