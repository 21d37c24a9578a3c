"""Histories with their event types, read from event-contract frames.

Sequences (``components.data.sequences``) carry item indices only; explanations and the
influence report also name each event's type. These functions order events exactly as
:func:`~components.data.sequences.build_sequences` does (stable by user, timestamp and
input order), so position ``p`` of a user's sequence and of its event types agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel
from torch import Tensor

from components.data.schema import EVENT, ITEM, USER, sort_events
from components.data.sequences import Sequences, Vocabulary
from components.data.splits import EvalSet
from components.errors import DataError
from components.evaluation.gate import remap_history_rows


class EvalHistories(BaseModel, arbitrary_types_allowed=True):
    """Histories to explain (left-padded ``[n, width]``) and each event's type (aligned
    with the real items of each row; None when the data has no event types)."""

    histories: Tensor
    event_types: list[list[str]] | None = None


def aligned_event_types(events: pd.DataFrame, vocab: Vocabulary) -> np.ndarray:
    """Event type of every element of ``build_sequences(events, vocab).values`` (object
    array of strings, same order)."""
    ordered = sort_events(events)
    users = vocab.user_index(ordered[USER].astype(str))
    order = np.argsort(users, kind="stable")
    return ordered[EVENT].astype(str).to_numpy(dtype=object)[order]


def user_history(events: pd.DataFrame, user_id: str) -> tuple[list[str], list[str]]:
    """``(item ids, event types)`` of ``user_id``'s events, oldest first; an unknown user
    raises :class:`DataError`."""
    mine = sort_events(events[events[USER].astype(str) == str(user_id)])
    if mine.empty:
        raise DataError(f"unknown user {user_id!r}: no events in this dataset version")
    return mine[ITEM].astype(str).tolist(), mine[EVENT].astype(str).tolist()


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct row indices out of ``n`` (all when ``size >= n``), sorted."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def sampled_histories(
    eval_set: EvalSet,
    sequences: Sequences,
    event_types: np.ndarray | None,
    size: int,
    seed: int,
) -> EvalHistories:
    """A seeded sample of ``eval_set``'s histories with each event's type.

    An evaluation history is a contiguous run of its user's sequence (leave-one-out: all
    but the last event; temporal: the events before the cut), found here by matching it
    against the sequence from the end; ``event_types`` is aligned with
    ``sequences.values`` (:func:`aligned_event_types`)."""
    rows = sample_rows(len(eval_set), size, seed)
    histories = eval_set.histories[torch.from_numpy(rows)]
    if event_types is None:
        return EvalHistories(histories=histories)
    types = []
    for row, history in zip(rows, histories, strict=True):
        items = history[history != 0].numpy()
        start = _run_start(sequences.row(int(eval_set.users[row])), items)
        offset = int(sequences.offsets[int(eval_set.users[row])])
        types.append(event_types[offset + start : offset + start + len(items)].tolist())
    return EvalHistories(histories=histories, event_types=types)


def _run_start(sequence: np.ndarray, run: np.ndarray) -> int:
    """Start of the last occurrence of ``run`` inside ``sequence`` (a DataError if none)."""
    for end in range(len(sequence), len(run) - 1, -1):
        if np.array_equal(sequence[end - len(run) : end], run):
            return end - len(run)
    raise DataError("an evaluation history is not part of its user's sequence")


def remap_histories(
    data: EvalHistories, vocab: Vocabulary, target_vocab: Vocabulary, width: int
) -> EvalHistories:
    """``data`` (indices of ``vocab``) in ``target_vocab``'s indices, for a model trained
    on another vocabulary (the champion), by the evaluation's own remapping
    (:func:`~components.evaluation.gate.remap_history_rows`): unknown items are dropped
    with their event types, histories stay left padded and are cropped or padded to
    ``width``."""
    if data.event_types is None:
        (histories,) = remap_history_rows(data.histories, vocab, target_vocab, width)
        return EvalHistories(histories=histories)
    names = sorted({t for row in data.event_types for t in row})
    codes = torch.zeros_like(data.histories)
    for row, kinds in enumerate(data.event_types):
        if kinds:
            codes[row, codes.shape[1] - len(kinds) :] = torch.tensor(
                [names.index(t) + 1 for t in kinds]
            )
    histories, codes = remap_history_rows(data.histories, vocab, target_vocab, width, codes)
    types = [[names[c - 1] for c in row.tolist() if c] for row in codes]
    return EvalHistories(histories=histories, event_types=types)
