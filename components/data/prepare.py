"""From contract events to what training needs: vocabulary, sequences, split."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from components.data.config import DataConfig
from components.data.sequences import Sequences, Vocabulary, build_sequences
from components.data.splits import Split, leave_one_out, temporal
from components.errors import DataError


@dataclass(frozen=True)
class PreparedData:
    """A dataset ready for training and evaluation."""

    vocab: Vocabulary
    sequences: Sequences
    split: Split


def prepare(events: pd.DataFrame, cfg: DataConfig) -> PreparedData:
    """Build the vocabulary, per-user sequences and the configured split of ``events``."""
    if len(events) == 0:
        raise DataError("the dataset has no events")
    vocab = Vocabulary.from_events(events)
    seqs = build_sequences(events, vocab)
    if cfg.split == "leave_one_out":
        split = leave_one_out(seqs, vocab.n_items, cfg.max_len, cfg.min_user_events)
    else:
        split = temporal(seqs, vocab.n_items, cfg.max_len, cfg.temporal_test_fraction)
    return PreparedData(vocab, seqs, split)
