"""Train / validation / test splits over per-user sequences.

``leave_one_out`` (the standard protocol): a user's last item is the test target, the
second-to-last the validation target, the rest is training history. Test histories are
``seq[:-1]`` and validation histories ``seq[:-2]``; training never sees either target.
Users with fewer than ``min_user_events`` events (default 3) are kept for training only
and counted in :attr:`Split.train_only_users` — never silently dropped.

``temporal``: one global cut time per boundary. Events after the test cut are held out; a
user's first held-out event is their test target with everything before it as history.
The validation cut works the same way inside the training period.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from components.data.sequences import Sequences, pad_window
from components.errors import DataError


@dataclass(frozen=True)
class EvalSet:
    """Evaluation examples: left-padded histories, one target per user; with event types,
    each history event's type (aligned with ``histories``) and the target event's type."""

    users: np.ndarray  # user indices, int64 [n]
    histories: torch.Tensor  # LongTensor [n, max_len], left padded
    targets: torch.Tensor  # LongTensor [n], item indices (1-based)
    events: torch.Tensor | None = None  # LongTensor [n, max_len], event-type indices
    target_events: np.ndarray | None = None  # int64 [n], the target event's type index
    # index of each target event inside its user's full sequence (None: not from one)
    positions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)

    def take(self, rows: np.ndarray) -> EvalSet:
        """The examples at ``rows`` (in that order)."""
        index = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return EvalSet(
            np.asarray(self.users)[rows],
            self.histories[index],
            self.targets[index],
            None if self.events is None else self.events[index],
            None if self.target_events is None else self.target_events[rows],
            None if self.positions is None else self.positions[rows],
        )


def concat_eval_sets(parts: list[EvalSet]) -> EvalSet:
    """The examples of ``parts`` one after the other (e.g. every data-parallel rank's)."""

    def joined(values: list[np.ndarray | None]) -> np.ndarray | None:
        return None if any(v is None for v in values) else np.concatenate(values)  # type: ignore[arg-type]

    def stacked(values: list[torch.Tensor | None]) -> torch.Tensor | None:
        return None if any(v is None for v in values) else torch.cat(values)  # type: ignore[arg-type]

    return EvalSet(
        np.concatenate([np.asarray(p.users) for p in parts]),
        torch.cat([p.histories for p in parts]),
        torch.cat([p.targets for p in parts]),
        stacked([p.events for p in parts]),
        joined([p.target_events for p in parts]),
        joined([p.positions for p in parts]),
    )


def eval_set_of(
    chosen: Sequences,
    history: Sequences,
    rows: np.ndarray,
    targets: np.ndarray,
    at: np.ndarray,
    max_len: int,
) -> EvalSet:
    """An :class:`EvalSet` of users ``rows``: ``history`` padded, ``targets`` and (with
    event types) the target events at positions ``at`` of ``chosen.values``."""
    target_events = None if chosen.events is None else chosen.events[at]
    return EvalSet(
        rows,
        history.padded(max_len),
        torch.from_numpy(targets),
        history.padded_events(max_len),
        target_events,
        at - chosen.offsets[:-1],
    )


@dataclass(frozen=True)
class Split:
    """What a model trains on and is evaluated against."""

    train: Sequences  # training sequences for every user (may be empty)
    valid: EvalSet
    test: EvalSet
    n_items: int
    max_len: int
    strategy: str
    train_only_users: int  # users too short to evaluate; still trained on

    def summary(self) -> dict[str, int | str]:
        return {
            "strategy": self.strategy,
            "train_users": int((self.train.lengths > 0).sum()),
            "train_events": int(self.train.lengths.sum()),
            "valid_users": len(self.valid),
            "test_users": len(self.test),
            "train_only_users": self.train_only_users,
            "n_items": self.n_items,
            "max_len": self.max_len,
        }


def _eval_sets(seqs: Sequences, rows: np.ndarray, max_len: int) -> tuple[EvalSet, EvalSet]:
    """Validation and test examples of users ``rows`` (targets: the second-to-last and
    the last item). The validation history is the test history shifted by one, so both
    are views of one ``[n, max_len + 1]`` window padded straight from ``seqs``: the
    tensors are stored once and no copy of the chosen sequences is made (at 100M events
    those copies were gigabytes). Views: never modify them in place."""
    starts = seqs.offsets[rows]
    test_at = seqs.offsets[rows + 1] - 1
    window = torch.from_numpy(pad_window(seqs.values, starts, test_at, max_len + 1))
    kinds = None
    if seqs.events is not None:
        kinds = torch.from_numpy(pad_window(seqs.events, starts, test_at, max_len + 1))

    def examples(at: np.ndarray, columns: slice) -> EvalSet:
        return EvalSet(
            rows,
            window[:, columns],
            torch.from_numpy(seqs.values[at]),
            None if kinds is None else kinds[:, columns],
            None if seqs.events is None else seqs.events[at],
            at - starts,
        )

    return examples(test_at - 1, slice(0, max_len)), examples(test_at, slice(1, max_len + 1))


def leave_one_out(seqs: Sequences, n_items: int, max_len: int, min_user_events: int = 3) -> Split:
    """Last item -> test, second-to-last -> validation, the rest -> train."""
    if min_user_events < 3:
        raise DataError("leave-one-out needs min_user_events >= 3 (train, valid, test)")
    lengths = seqs.lengths
    evaluable = np.flatnonzero(lengths >= min_user_events)
    if len(evaluable) == 0:
        raise DataError(f"no user has at least {min_user_events} events; cannot build a test split")
    drop = np.where(lengths >= min_user_events, 2, 0)
    # nothing reads training timestamps: leaving them out saves 8 bytes a training event
    train = replace(seqs, timestamps=None).take_prefix(lengths - drop)
    valid, test = _eval_sets(seqs, evaluable, max_len)
    return Split(
        train=train,
        valid=valid,
        test=test,
        n_items=n_items,
        max_len=max_len,
        strategy="leave_one_out",
        train_only_users=int(len(lengths) - len(evaluable)),
    )


def _first_after(seqs: Sequences, cut: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user: number of events at or before ``cut`` and whether one comes after."""
    assert seqs.timestamps is not None
    before = np.add.reduceat(
        (seqs.timestamps <= cut).astype(np.int64), seqs.offsets[:-1].clip(max=len(seqs.values) - 1)
    )
    before = np.where(seqs.lengths > 0, before, 0)
    before = np.minimum(before, seqs.lengths)
    return before, seqs.lengths > before


def temporal(seqs: Sequences, n_items: int, max_len: int, test_fraction: float = 0.1) -> Split:
    """Global time cuts: last ``test_fraction`` of events -> test, the fraction before -> valid."""
    if seqs.timestamps is None or len(seqs.values) == 0:
        raise DataError("temporal split needs timestamps")
    ts = np.sort(seqs.timestamps)

    def cut_at(share_before: float) -> int:
        index = min(max(round(len(ts) * share_before) - 1, 0), len(ts) - 1)
        return int(ts[index])

    test_cut = cut_at(1 - test_fraction)
    valid_cut = cut_at(1 - 2 * test_fraction)
    n_test_hist, has_test = _first_after(seqs, test_cut)
    n_valid_hist, has_valid = _first_after(seqs, valid_cut)
    has_valid &= n_valid_hist > 0
    has_test &= n_test_hist > 0
    test_rows = np.flatnonzero(has_test)
    valid_rows = np.flatnonzero(has_valid)
    if len(test_rows) == 0:
        raise DataError("temporal split: no user has history before and an event after the cut")

    def at(rows: np.ndarray, n_hist: np.ndarray) -> EvalSet:
        chosen = seqs.select(rows)
        hist = chosen.take_prefix(n_hist[rows])
        at_ = chosen.offsets[:-1] + n_hist[rows]
        return eval_set_of(chosen, hist, rows, chosen.values[at_], at_, max_len)

    return Split(
        train=seqs.take_prefix(n_valid_hist),
        valid=at(valid_rows, n_valid_hist),
        test=at(test_rows, n_test_hist),
        n_items=n_items,
        max_len=max_len,
        strategy="temporal",
        train_only_users=int(len(seqs) - len(test_rows)),
    )


def cold_item_split(split: Split, share: float = 0.1, seed: int = 0) -> tuple[Split, np.ndarray]:
    """The cold-item protocol: a seeded ``share`` of all items is removed from every
    training sequence; the test set keeps only users whose test target is such an item
    (their histories unchanged: cold items there are read through their content).

    Validation is the normal one (model selection never looks at the cold test targets).
    Returns ``(split, cold item indices)``; raises :class:`DataError` when no test target
    is cold."""
    if not 0 < share < 1:
        raise DataError(f"cold-item share must be in (0, 1), got {share}")
    rng = np.random.default_rng(seed)
    n_cold = max(1, round(share * split.n_items))
    cold = np.sort(rng.choice(np.arange(1, split.n_items + 1), size=n_cold, replace=False))
    is_cold = np.zeros(split.n_items + 1, dtype=bool)
    is_cold[cold] = True
    rows = np.flatnonzero(is_cold[split.test.targets.numpy()])
    if len(rows) == 0:
        raise DataError("cold-item protocol: no test target is one of the held-out items")
    test = split.test.take(rows)
    cold_split = Split(
        train=split.train.without_items(is_cold),
        valid=split.valid,
        test=test,
        n_items=split.n_items,
        max_len=split.max_len,
        strategy=f"{split.strategy}+cold_items",
        train_only_users=split.train_only_users,
    )
    return cold_split, cold
