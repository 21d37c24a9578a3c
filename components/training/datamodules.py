"""Lightning DataModules keyed by a model's input kind, over pre-tensorised sequences.

Every kind turns the training :class:`~components.data.sequences.Sequences` into a few
tensors once; a batch is one vectorised gather from them (the sampler yields whole index
batches, the dataset answers with a dict of tensors), never per-sample Python.

- ``causal``:  ``inputs [B, L]`` / ``targets [B, L]``: each sequence's last ``L + 1`` items,
  shifted by one, so every position is a training example (next-item prediction);
  ``input_events [B, L]``: each input event's type, when the sequences carry types.
- ``masked``:  ``sequences [B, L]``: the model applies its own Cloze masking (``events``
  aligned with it when the sequences carry types).
- ``session_graph``: ``inputs [B, L]`` / ``targets [B]``: every prefix of every sequence
  (also a causal model's examples with ``train.samples: prefixes``, see :func:`training_kind`).
- ``interaction_graph``: ``users [B]`` / ``targets [B]``: every training (user, item) pair.

Batches are formed from similar-length sequences (shuffled within and across buckets) and
leading all-padding columns are trimmed, which on short-sequence data like Beauty cuts
the work per epoch several-fold without changing any result (models ignore padding).
Validation batches carry ``histories``, ``targets`` and ``users`` of an :class:`EvalSet`
(and ``events``, its history event types, when it has them).
Under DDP each rank takes every ``world_size``-th batch (``use_distributed_sampler=False``),
unless the data module holds only its rank's users (``sharded``, from
:func:`components.data.stream.stream_prepare` with a shard): then each rank takes all
of its own batches, as many on every rank (the fewest any rank has).
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from components.data.sequences import Sequences
from components.data.splits import EvalSet
from components.errors import TrainingError
from components.evaluation.metrics import by_history_length
from components.models.base import InputKind, trim_left_padding

BUCKET_BATCHES = 32  # batches per length-sorted bucket


class BucketBatchSampler(Sampler[list[int]]):
    """Yields index batches of similar length; reshuffled every epoch; sharded by rank."""

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        limit: int | None = None,
    ) -> None:
        self.limit = limit
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            return [np.arange(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(n)
        bucket = self.batch_size * BUCKET_BATCHES
        batches: list[np.ndarray] = []
        for start in range(0, n, bucket):
            chunk = order[start : start + bucket]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(np.array_split(chunk, max(1, -(-len(chunk) // self.batch_size))))
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        if self.world_size > 1:
            if self.shuffle:  # DDP needs the same number of training steps on every rank
                batches = batches[
                    : max(self.world_size, len(batches) - len(batches) % self.world_size)
                ]
            batches = batches[self.rank :: self.world_size]
        if self.limit is not None:
            batches = batches[: self.limit]
        if self.shuffle:
            self.epoch += 1  # fresh order next time even if nobody calls set_epoch
        return iter([b.tolist() for b in batches])

    def __len__(self) -> int:
        n_batches = -(-len(self.lengths) // self.batch_size)
        n = max(1, n_batches // self.world_size) if self.world_size > 1 else n_batches
        return n if self.limit is None else min(n, self.limit)


class TensorBatches(Dataset):
    """``dataset[list_of_indices]`` -> dict of tensors gathered in one step."""

    def __init__(self, tensors: dict[str, Tensor], trim: tuple[str, ...] = ()) -> None:
        self.tensors = tensors
        self.trim = trim
        self.size = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, indices: list[int]) -> dict[str, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = {name: t[index] for name, t in self.tensors.items()}
        if self.trim:
            trimmed = trim_left_padding(*(batch[name] for name in self.trim))
            batch.update(zip(self.trim, trimmed, strict=True))
        return batch


class PrefixBatches(TensorBatches):
    """Session-graph examples: history ``window[row, :end]`` (right-aligned) -> ``window[row, end]``."""

    def __init__(self, window: Tensor, rows: Tensor, ends: Tensor, max_len: int) -> None:
        super().__init__({"rows": rows, "ends": ends})
        self.window = window
        self.max_len = max_len

    def __getitem__(self, indices: list[int]) -> dict[str, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        rows, ends = self.tensors["rows"][index], self.tensors["ends"][index]
        cols = ends[:, None] - self.max_len + torch.arange(self.max_len)[None]
        inputs = self.window[rows[:, None], cols.clamp(min=0)].masked_fill(cols < 0, 0)
        (inputs,) = trim_left_padding(inputs)
        return {"inputs": inputs, "targets": self.window[rows, ends]}


def prefix_cost(train: Sequences, max_len: int) -> float:
    """Encoder tokens of an epoch of ``prefixes`` over those of ``positions``: every prefix
    of a sequence of ``n`` items (``n - 1`` of them, each at most ``max_len`` long) against
    the sequence read once (at most ``max_len`` inputs). About the mean history length / 2
    for short histories (Beauty: 8.6); long ones approach ``max_len`` / 2 + the items beyond
    the window (ml-100k, 104 items a user on average, max_len 50: 98)."""
    lengths = np.asarray(train.lengths, dtype=np.int64)
    lengths = lengths[lengths >= 2]
    if len(lengths) == 0:
        return 1.0
    inputs = np.minimum(lengths - 1, max_len)
    prefix_tokens = inputs * (inputs + 1) // 2 + np.maximum(lengths - 1 - max_len, 0) * max_len
    return float(prefix_tokens.sum() / inputs.sum())


def resolved_samples(
    samples: str, kind: InputKind, train: Sequences, max_len: int, cost_limit: float
) -> str:
    """``train.samples`` with ``"auto"`` decided from the data: ``"prefixes"`` for a causal
    model whose :func:`prefix_cost` is at most ``cost_limit``, else ``"positions"``."""
    if samples != "auto":
        return samples
    if kind != "causal":
        return "positions"
    return "prefixes" if prefix_cost(train, max_len) <= cost_limit else "positions"


def training_kind(kind: InputKind, samples: str) -> InputKind:
    """The training data a model of input ``kind`` gets with ``train.samples``: a causal
    model trained on ``prefixes`` gets the session-graph examples (every prefix, its next
    item as the one target); every other combination keeps its own kind."""
    if samples == "positions" or kind == "session_graph":
        return kind
    if kind != "causal":
        raise TrainingError(f"train.samples=prefixes needs a causal model; this one is {kind!r}")
    return "session_graph"


def training_dataset(
    kind: InputKind, train: Sequences, max_len: int
) -> tuple[TensorBatches, np.ndarray]:
    """The training examples of ``kind`` and each example's length (for bucketing)."""
    lengths = train.lengths
    if kind == "causal":
        rows = np.flatnonzero(lengths >= 2)
        window = train.select(rows).padded(max_len + 1)
        example_lengths = np.minimum(lengths[rows], max_len + 1) - 1
        inputs = window[:, :-1]
        targets = window[:, 1:].masked_fill(inputs == 0, 0)  # the first item has no context
        tensors = {"inputs": inputs, "targets": targets}
        events = train.select(rows).padded_events(max_len + 1)
        if events is not None:
            tensors["input_events"] = events[:, :-1]
        data = TensorBatches(tensors, trim=tuple(tensors))
        return data, example_lengths
    if kind == "masked":
        rows = np.flatnonzero(lengths >= 1)
        chosen = train.select(rows)
        tensors = {"sequences": chosen.padded(max_len)}
        events = chosen.padded_events(max_len)
        if events is not None:
            tensors["events"] = events
        data = TensorBatches(tensors, trim=tuple(tensors))
        return data, np.minimum(lengths[rows], max_len)
    if kind == "session_graph":
        seqs = train.select(np.flatnonzero(lengths >= 2))
        window = seqs.padded(max_len + 1)
        real = window != 0
        is_example = real[:, 1:] & real[:, :-1]
        example_rows, last = is_example.nonzero(as_tuple=True)
        ends = last + 1
        example_lengths = real.cumsum(dim=1)[example_rows, last].numpy()
        batches = PrefixBatches(window, example_rows, ends, max_len)
        return batches, np.minimum(example_lengths, max_len)
    if kind == "interaction_graph":
        users = torch.from_numpy(np.repeat(np.arange(len(train)), lengths))
        data = TensorBatches({"users": users, "targets": torch.from_numpy(train.values.copy())})
        return data, np.ones(len(users), dtype=np.int64)
    raise ValueError(f"input kind {kind!r} has no training data")


def eval_dataset(eval_set: EvalSet) -> TensorBatches:
    """Validation rows sorted by history length, leading padding trimmed per batch."""
    order = by_history_length(eval_set.histories)
    users = torch.as_tensor(np.asarray(eval_set.users), dtype=torch.long)
    tensors = {
        "histories": eval_set.histories[order],
        "targets": eval_set.targets[order],
        "users": users[order],
    }
    trim: tuple[str, ...] = ("histories",)
    if eval_set.events is not None:
        tensors["events"] = eval_set.events[order]
        trim = ("histories", "events")
    return TensorBatches(tensors, trim=trim)


class RecDataModule(pl.LightningDataModule):
    """Training batches of one input kind plus full-ranking validation batches."""

    def __init__(
        self,
        kind: InputKind,
        train: Sequences,
        valid: EvalSet,
        max_len: int,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        num_workers: int = 0,
        sharded: bool = False,
        first_kind: InputKind | None = None,
        first_epochs: int = 0,
    ) -> None:
        super().__init__()
        self.sharded = sharded
        self.kind = kind
        self.train_data, self.train_lengths = training_dataset(kind, train, max_len)
        # a curriculum: ``first_kind`` examples for the first ``first_epochs`` epochs (the
        # trainer then reloads the training loader every epoch)
        self.first_epochs = first_epochs if first_kind not in (None, kind) else 0
        self.first_data, self.first_lengths = self.train_data, self.train_lengths
        if self.first_epochs and first_kind is not None:
            self.first_data, self.first_lengths = training_dataset(first_kind, train, max_len)
        self.valid_data = eval_dataset(valid)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.num_workers = num_workers

    @property
    def n_train_examples(self) -> int:
        return len(self.train_data)

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, data: TensorBatches, sampler: BucketBatchSampler) -> DataLoader:
        return DataLoader(
            data,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _current(self) -> tuple[TensorBatches, np.ndarray]:
        """This epoch's training examples and lengths (see ``first_epochs``)."""
        trainer = getattr(self, "trainer", None)
        epoch = trainer.current_epoch if trainer is not None else 0
        if epoch < self.first_epochs:
            return self.first_data, self.first_lengths
        return self.train_data, self.train_lengths

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        data, lengths = self._current()
        if self.sharded:
            sampler = BucketBatchSampler(
                lengths, self.batch_size, True, self.seed, limit=self._common_steps(lengths)
            )
        else:
            sampler = BucketBatchSampler(lengths, self.batch_size, True, self.seed, rank, world)
        return self._loader(data, sampler)

    def _common_steps(self, lengths: np.ndarray) -> int | None:
        """With per-rank data: the fewest training batches any rank has (DDP must take
        the same number of steps on every rank, or the ranks wait on each other)."""
        trainer = getattr(self, "trainer", None)
        mine = -(-len(lengths) // self.batch_size)
        if trainer is None or trainer.world_size == 1:
            return None
        fewest = trainer.strategy.reduce(torch.tensor(mine), reduce_op="min")
        return int(fewest)

    def val_dataloader(self) -> DataLoader:
        rank, world = (0, 1) if self.sharded else self._rank()
        lengths = np.zeros(len(self.valid_data), dtype=np.int64)
        sampler = BucketBatchSampler(lengths, self.eval_batch_size, False, self.seed, rank, world)
        return self._loader(self.valid_data, sampler)
