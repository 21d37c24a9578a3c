"""From contract events to what training needs: vocabulary, sequences, split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.data.catalogue import CatalogueReport, check_catalogue
from components.data.config import DataConfig
from components.data.schema import ITEM
from components.data.sequences import Sequences, Vocabulary, build_sequences
from components.data.splits import Split, leave_one_out, temporal
from components.errors import DataError


@dataclass(frozen=True)
class PreparedData:
    """A dataset ready for training and evaluation.

    With a catalogue, the vocabulary holds every catalogue item too (items no event
    mentions are cold items: scorable through their content, never trained as ids)."""

    vocab: Vocabulary
    sequences: Sequences
    split: Split
    catalogue: pd.DataFrame | None = None  # the accepted catalogue (catalogue contract)
    catalogue_report: CatalogueReport | None = None
    # True: sequences and split hold one data-parallel rank's users only (the vocabulary
    # is still global; ``components.data.stream.stream_prepare(shard=...)``)
    sharded: bool = False


def vocabulary_with_catalogue(events: pd.DataFrame, catalogue: pd.DataFrame | None) -> Vocabulary:
    """The events' vocabulary, plus catalogue items no event mentions (sorted tokens)."""
    return vocabulary_with_items(Vocabulary.from_events(events), catalogue)


def vocabulary_with_items(vocab: Vocabulary, catalogue: pd.DataFrame | None) -> Vocabulary:
    """``vocab`` plus the catalogue's items (sorted tokens)."""
    if catalogue is None:
        return vocab
    items = np.union1d(
        np.asarray(vocab.items, dtype=object).astype(str), catalogue[ITEM].astype(str).to_numpy()
    )
    return Vocabulary(vocab.users, tuple(items.tolist()), vocab.event_types)


def checked_catalogue(
    vocab: Vocabulary, catalogue: pd.DataFrame | None
) -> tuple[Vocabulary, pd.DataFrame | None, CatalogueReport | None]:
    """For engines that never hold the events as a frame: the catalogue checked against
    the events' items (``vocab.items``), and the vocabulary with its items added."""
    if catalogue is None:
        return vocab, None, None
    accepted, report = check_catalogue(catalogue, np.asarray(vocab.items, dtype=object))
    return vocabulary_with_items(vocab, accepted), accepted, report


def prepare(
    events: pd.DataFrame,
    cfg: DataConfig,
    catalogue: pd.DataFrame | None = None,
) -> PreparedData:
    """Build the vocabulary, per-user sequences and the configured split of ``events``.

    ``catalogue`` (catalogue contract) is checked against the events and its items join
    the vocabulary (their content reaches models through Feast: lifecycle.train)."""
    if len(events) == 0:
        raise DataError("the dataset has no events")
    report = None
    if catalogue is not None:
        catalogue, report = check_catalogue(catalogue, events[ITEM])
    vocab = vocabulary_with_catalogue(events, catalogue)
    seqs = build_sequences(events, vocab)
    if cfg.split == "leave_one_out":
        split = leave_one_out(seqs, vocab.n_items, cfg.max_len, cfg.min_user_events)
    else:
        split = temporal(seqs, vocab.n_items, cfg.max_len, cfg.temporal_test_fraction)
    return PreparedData(vocab, seqs, split, catalogue, report)
