"""Per-user item sequences and the id vocabulary.

Raw ids become contiguous integer indices: users 0..U-1, items 1..I with **0 reserved for
padding**; event types (view, cart, ...) 1..E, 0 = none/padding, carried beside the items
(:attr:`Sequences.events`) so a model with ``event_types: true`` reads what each event was. Sequences are kept as CSR arrays (``values`` + ``offsets``), never as Python
lists of lists, and turn into left-padded ``[N, max_len]`` tensors in one vectorised step
(most recent item in the last column).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from components.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

# pandas (and components.data.schema, which needs it) is imported where a table is read,
# not here: the serving worker imports this module for PAD and Vocabulary, and pandas
# would be ~0.3 s of its start-up (the switch-over) for nothing it calls

PAD = 0
#: :meth:`Vocabulary.user_index` of a user the vocabulary does not hold
UNKNOWN_USER = -1


@dataclass(frozen=True)
class Vocabulary:
    """Raw token <-> index maps. Items and event types are indexed from 1 (0 is padding)."""

    users: tuple[str, ...]
    items: tuple[str, ...]
    event_types: tuple[str, ...] = ()

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Number of real items (the score tensor has ``n_items + 1`` columns)."""
        return len(self.items)

    @classmethod
    def from_events(cls, events: pd.DataFrame) -> Vocabulary:
        """Vocabulary of the users and items in ``events`` (sorted tokens, deterministic)."""
        from components.data.schema import EVENT, ITEM, USER

        users = np.sort(events[USER].astype(str).unique())
        items = np.sort(events[ITEM].astype(str).unique())
        kinds: list[str] = []
        if EVENT in events.columns:
            kinds = np.sort(events[EVENT].astype(str).unique()).tolist()
        return cls(tuple(users.tolist()), tuple(items.tolist()), tuple(kinds))

    @property
    def n_event_types(self) -> int:
        return len(self.event_types)

    def event_index(self, tokens: Iterable[str]) -> np.ndarray:
        """Index per event-type token (1-based); 0 for unknown types (no event embedding)."""
        return _lookup(self.event_types, tokens, offset=1, missing=PAD)

    def user_index(self, tokens: Iterable[str]) -> np.ndarray:
        """Index per user token; -1 for unknown users."""
        return _lookup(self.users, tokens, offset=0, missing=UNKNOWN_USER)

    def item_index(self, tokens: Iterable[str]) -> np.ndarray:
        """Index per item token (1-based); 0 (padding) for unknown items."""
        return _lookup(self.items, tokens, offset=1, missing=PAD)

    def item_tokens(self, indices: Iterable[int]) -> list[str]:
        """Raw item tokens for 1-based indices."""
        return [self.items[int(i) - 1] for i in indices]

    def save(self, path: str | Path) -> None:
        raw = {"users": self.users, "items": self.items, "event_types": self.event_types}
        Path(path).write_text(json.dumps(raw))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read :meth:`save`'s file (files written before event types have none)."""
        raw = json.loads(Path(path).read_text())
        return cls(tuple(raw["users"]), tuple(raw["items"]), tuple(raw.get("event_types", ())))


def _lookup(
    vocab: Sequence[str], tokens: Iterable[str], *, offset: int, missing: int
) -> np.ndarray:
    import pandas as pd

    keys = pd.Index(vocab)
    positions = keys.get_indexer(pd.Index([str(t) for t in tokens]))
    return np.where(positions >= 0, positions + offset, missing).astype(np.int64)


@dataclass(frozen=True)
class Sequences:
    """CSR-packed item sequences: user ``u`` has ``values[offsets[u]:offsets[u+1]]``.

    ``timestamps`` and ``events`` (event-type indices, :meth:`Vocabulary.event_index`) are
    aligned with ``values`` and follow every selection."""

    values: np.ndarray  # int64 item indices (1-based)
    offsets: np.ndarray  # int64, length n + 1
    timestamps: np.ndarray | None = None  # int64 ns since epoch, aligned with values
    events: np.ndarray | None = None  # int64 event-type indices (1-based), aligned with values

    def _aligned(self, where: np.ndarray) -> dict[str, np.ndarray | None]:
        """``timestamps`` and ``events`` at ``where`` (a mask or gather over values)."""
        return {
            "timestamps": None if self.timestamps is None else self.timestamps[where],
            "events": None if self.events is None else self.events[where],
        }

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def truncate_tail(self, drop: int) -> Sequences:
        """Drop the last ``drop`` items of every sequence (never below zero length)."""
        lengths = np.maximum(self.lengths - drop, 0)
        return self.take_prefix(lengths)

    def take_prefix(self, lengths: np.ndarray) -> Sequences:
        """Keep the first ``lengths[u]`` items of each sequence ``u``."""
        lengths = np.minimum(lengths.astype(np.int64), self.lengths)
        return self._gathered(self.offsets[:-1], lengths)

    def select(self, rows: np.ndarray) -> Sequences:
        """Sub-collection of the sequences at ``rows`` (in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return self._gathered(self.offsets[rows], self.lengths[rows])

    def _gathered(self, starts: np.ndarray, lengths: np.ndarray) -> Sequences:
        """The runs ``[starts[i], starts[i] + lengths[i])`` as new sequences (chunked
        gathers: the memory beyond the result stays small at 100M events)."""
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        aligned = {
            name: None if column is None else gather_runs(column, starts, lengths)
            for name, column in (("timestamps", self.timestamps), ("events", self.events))
        }
        return Sequences(gather_runs(self.values, starts, lengths), offsets, **aligned)

    def without_items(self, drop: np.ndarray) -> Sequences:
        """The same sequences with every item whose ``drop[item]`` is True removed."""
        keep = ~np.asarray(drop, dtype=bool)[self.values]
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        kept_per_row = kept_before[self.offsets[1:]] - kept_before[self.offsets[:-1]]
        offsets = np.concatenate([[0], np.cumsum(kept_per_row)]).astype(np.int64)
        return Sequences(self.values[keep], offsets, **self._aligned(keep))

    def last(self, n: int = 1, *, events: bool = False) -> np.ndarray:
        """The item (with ``events``: the event type) ``n`` positions from the end of each
        sequence (0 where too short or without event types)."""
        source = self.events if events else self.values
        pos = self.offsets[1:] - n
        ok = pos >= self.offsets[:-1]
        out = np.zeros(len(self), dtype=np.int64)
        if source is not None:
            out[ok] = source[pos[ok]]
        return out

    def padded(self, max_len: int) -> torch.Tensor:
        """Left-padded ``[n, max_len]`` LongTensor of the last ``max_len`` items."""
        return torch.from_numpy(pad_left(self.values, self.offsets, max_len))

    def padded_events(self, max_len: int) -> torch.Tensor | None:
        """The event types aligned with :meth:`padded` (None without event types)."""
        if self.events is None:
            return None
        return torch.from_numpy(pad_left(self.events, self.offsets, max_len))


# rows per chunk of the vectorised gathers: their index temporaries are a few times
# (rows x run length) int64s, so a chunk costs tens of MB whatever the data size
CHUNK_ROWS = 1 << 16


def _chunks(n: int) -> range:
    return range(0, n, CHUNK_ROWS)


def gather_runs(source: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``source[starts[i] : starts[i] + lengths[i]]`` for every ``i``, concatenated."""
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.empty(int(lengths.sum()), dtype=source.dtype)
    at = 0
    for lo in _chunks(len(lengths)):
        first, count = starts[lo : lo + CHUNK_ROWS], lengths[lo : lo + CHUNK_ROWS]
        total = int(count.sum())
        index = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(total)
        out[at : at + total] = source[index]
        at += total
    return out


def pad_left(values: np.ndarray, offsets: np.ndarray, max_len: int) -> np.ndarray:
    """Vectorised left padding: row ``u`` ends with the last ``max_len`` items of ``u``."""
    return pad_window(values, offsets[:-1], offsets[1:], max_len)


def pad_window(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int
) -> np.ndarray:
    """``[n, max_len]`` int64: row ``i`` holds the last ``max_len`` of
    ``values[starts[i]:ends[i]]``, left-padded with 0 (chunked over rows)."""
    out = np.zeros((len(starts), max_len), dtype=np.int64)
    for lo in _chunks(len(starts)):
        end = ends[lo : lo + CHUNK_ROWS]
        lengths = np.clip(end - starts[lo : lo + CHUNK_ROWS], 0, max_len).astype(np.int64)
        total = int(lengths.sum())
        if total == 0:
            continue
        rows = np.repeat(np.arange(lo, lo + len(lengths)), lengths)
        # position inside the kept window, counted from its start
        within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        src = np.repeat(end - lengths, lengths) + within
        cols = max_len - np.repeat(lengths, lengths) + within
        out[rows, cols] = values[src]
    return out


def build_sequences(events: pd.DataFrame, vocab: Vocabulary) -> Sequences:
    """One sequence per vocabulary user, items in (timestamp, input order) order.

    Users in ``vocab`` without events get empty sequences; events whose user or item is
    not in ``vocab`` raise :class:`DataError` (callers filter unknowns explicitly).
    """
    from components.data.schema import EVENT, ITEM, TIME, USER, sort_events

    ordered = sort_events(events)
    users = vocab.user_index(ordered[USER].astype(str))
    items = vocab.item_index(ordered[ITEM].astype(str))
    if (users < 0).any() or (items == PAD).any():
        raise DataError("events contain users or items outside the vocabulary")
    order = np.argsort(users, kind="stable")
    counts = np.bincount(users, minlength=vocab.n_users)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    ts = ordered[TIME].astype("int64").to_numpy()
    kinds = None
    if vocab.event_types and EVENT in ordered.columns:
        kinds = vocab.event_index(ordered[EVENT].astype(str))[order]
    return Sequences(items[order], offsets, ts[order], kinds)
