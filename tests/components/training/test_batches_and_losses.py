"""Training batches are built right and every loss trains."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.data.sequences import Sequences
from components.models.base import TrainingPairs
from components.training.datamodules import BucketBatchSampler, training_dataset
from components.training.losses import compute_loss, gbce_beta


def _seqs(rows: list[list[int]]) -> Sequences:
    values = np.array([i for r in rows for i in r], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return Sequences(values, offsets)


def test_causal_batches_shift_by_one_and_never_target_the_first_item() -> None:
    data, lengths = training_dataset("causal", _seqs([[1, 2, 3], [4, 5], [6]]), max_len=4)
    assert lengths.tolist() == [2, 1]  # the 1-item sequence has nothing to predict
    batch = data[[0, 1]]
    assert batch["inputs"].tolist() == [[1, 2], [0, 4]]  # leading all-padding columns trimmed
    assert batch["targets"].tolist() == [[2, 3], [0, 5]]


def test_prefix_batches_cover_every_prefix() -> None:
    data, _ = training_dataset("session_graph", _seqs([[1, 2, 3], [4, 5]]), max_len=2)
    batch = data[list(range(len(data)))]
    pairs = sorted(zip(batch["inputs"].tolist(), batch["targets"].tolist(), strict=True))
    assert pairs == [([0, 1], 2), ([0, 4], 5), ([1, 2], 3)]


def test_interaction_batches_are_user_item_pairs() -> None:
    data, _ = training_dataset("interaction_graph", _seqs([[1, 2], [3]]), max_len=4)
    batch = data[[0, 1, 2]]
    assert batch["users"].tolist() == [0, 0, 1] and batch["targets"].tolist() == [1, 2, 3]


def test_bucket_sampler_yields_each_example_once_and_shards_ranks() -> None:
    lengths = np.random.default_rng(0).integers(1, 50, 1000)
    seen = [i for batch in BucketBatchSampler(lengths, 64, True, seed=1) for i in batch]
    assert sorted(seen) == list(range(1000))
    shards = [
        {i for b in BucketBatchSampler(lengths, 64, True, seed=1, rank=r, world_size=2) for i in b}
        for r in (0, 1)
    ]
    assert not shards[0] & shards[1]
    epoch0 = list(BucketBatchSampler(lengths, 64, True, seed=1))
    sampler = BucketBatchSampler(lengths, 64, True, seed=1)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0


@pytest.mark.parametrize("loss", ["ce", "sampled_softmax", "bce", "gbce"])
def test_every_loss_learns_to_rank_the_target_first(loss: str) -> None:
    torch.manual_seed(0)
    items = torch.nn.Parameter(torch.randn(51, 8) * 0.1)
    hidden = torch.nn.Parameter(torch.randn(20, 8) * 0.1)
    targets = torch.arange(1, 21)
    optimiser = torch.optim.Adam([items, hidden], lr=0.05)
    for _ in range(150):
        value = compute_loss(TrainingPairs(hidden, targets, items), loss, num_negatives=10)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
    scores = hidden @ items.T
    scores[:, 0] = float("-inf")
    assert (scores.argmax(dim=1) == targets).float().mean() >= 0.9


def test_unknown_loss_is_rejected() -> None:
    pairs = TrainingPairs(torch.zeros(1, 2), torch.ones(1, dtype=torch.long), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="unknown loss"):
        compute_loss(pairs, "hinge", 5)


def test_gbce_matches_a_hand_computed_value() -> None:
    # 5 items; row 0 scores its target (item 1) at logit 2 and every other item at 0
    hidden = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    pairs = TrainingPairs(hidden, torch.tensor([1]), items)
    torch.manual_seed(3)
    negatives = torch.randint(1, 6, (2,))
    assert 1 not in negatives.tolist()  # no accidental hit with this seed
    # alpha = 2 / (5 - 1) = 0.5; beta = 0.5 * (0.5 * (1 - 2) + 2) = 0.75 for t = 0.5
    assert gbce_beta(2, 5, 0.5) == pytest.approx(0.75)
    expected = (-0.75 * math.log(1 / (1 + math.exp(-2.0))) + 2 * math.log(2.0)) / 3
    torch.manual_seed(3)
    assert compute_loss(pairs, "gbce", 2, gbce_t=0.5).item() == pytest.approx(expected, rel=1e-6)
    # t = 0 is plain BCE: beta = 1
    assert gbce_beta(2, 5, 0.0) == pytest.approx(1.0)
    # t = 1 gives beta = alpha: a weaker push on the positive (calibrated to the softmax)
    assert gbce_beta(2, 5, 1.0) == pytest.approx(0.5)


def test_sharded_data_module_takes_all_its_own_batches() -> None:
    from components.data.splits import leave_one_out
    from components.training.datamodules import RecDataModule

    rows = [[1 + (u + i) % 9 for i in range(5 + u % 4)] for u in range(300)]
    split = leave_one_out(_seqs(rows), n_items=9, max_len=6)
    per_rank = RecDataModule("causal", split.train, split.valid, 6, 32, 32, 0, sharded=True)
    everyone = RecDataModule("causal", split.train, split.valid, 6, 32, 32, 0)
    # no trainer (one process): a sharded module's data is all its own, like world size 1
    mine = [i for batch in per_rank.train_dataloader().sampler for i in batch]
    assert sorted(mine) == list(range(per_rank.n_train_examples))
    assert len(per_rank.train_dataloader()) == len(everyone.train_dataloader())
    # the cap DDP sets to the fewest batches any rank has
    capped = BucketBatchSampler(np.ones(1000), 64, True, seed=1, limit=5)
    assert len(list(capped)) == len(capped) == 5
