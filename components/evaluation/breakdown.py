"""Metrics by user history length, by target-item popularity and by the target event's
type (view, cart, purchase, ...; when the data has event types), from per-user values.

Both tables group the rows of one evaluation set (one row per test user) and average the
per-user metrics of :func:`~components.evaluation.metrics.evaluate` inside each group, so
the groups' means weighted by their user counts give back the overall metric. History
lengths are counted in the evaluated (cropped) history, so the last bucket reads
"at least max_len"; popularity is the target item's number of training events, bucketed
by the item's rank among all items (head = the most popular 10 % of items).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from components.data.sequences import PAD
from components.data.splits import EvalSet

#: history-length bucket lower edges (events); each bucket runs to the next edge - 1
LENGTH_EDGES = (1, 3, 5, 10, 20, 50)
#: popularity buckets: (label, share of items from the most popular down)
POPULARITY_SHARES = (("head (top 10% items)", 0.10), ("torso (10-40%)", 0.40), ("tail", 1.0))
SHOWN = ("hr@10", "ndcg@10", "mrr")


class BucketRow(BaseModel):
    """One group of test users and its mean metrics."""

    model_config = ConfigDict(extra="forbid")

    bucket: str
    n_users: int
    metrics: dict[str, float]


def history_lengths(eval_set: EvalSet) -> np.ndarray:
    """Non-padding items per evaluated history (capped by the split's max_len)."""
    return (eval_set.histories != PAD).sum(dim=1).numpy()


def length_labels(lengths: np.ndarray, max_len: int) -> tuple[np.ndarray, list[str]]:
    """A bucket label per row and the labels in order (empty buckets dropped later)."""
    edges = [e for e in LENGTH_EDGES if e < max_len] + [max_len]
    names = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        names.append(f"{lo}" if hi - 1 == lo else f"{lo}-{hi - 1}")
    names.append(f">={max_len} (cropped)")
    index = np.searchsorted(np.asarray(edges), lengths, side="right") - 1
    index = np.clip(index, 0, len(names) - 1)
    labels = np.asarray(names, dtype=object)[index]
    labels[lengths < 1] = "0"
    return labels, ["0", *names]


def popularity_labels(targets: np.ndarray, item_counts: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Label each target by its item's popularity rank (``item_counts[i]`` = training events).

    Index 0 of ``item_counts`` is padding and is never ranked.
    """
    counts = np.asarray(item_counts, dtype=np.float64)[1:]
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    share = (rank + 1) / max(len(order), 1)
    names = [name for name, _ in POPULARITY_SHARES]
    bucket = np.searchsorted(np.asarray([s for _, s in POPULARITY_SHARES]), share, side="left")
    item_label = np.asarray(names, dtype=object)[np.clip(bucket, 0, len(names) - 1)]
    valid = (targets >= 1) & (targets <= len(counts))
    labels = np.full(len(targets), "unknown item", dtype=object)
    labels[valid] = item_label[targets[valid] - 1]
    return labels, [*names, "unknown item"]


def event_type_labels(
    eval_set: EvalSet, event_types: Sequence[str]
) -> tuple[np.ndarray, list[str]] | None:
    """Label each row by its target event's type (None without event types)."""
    if eval_set.target_events is None or not event_types:
        return None
    names = np.asarray(["unknown type", *event_types], dtype=object)
    index = np.asarray(eval_set.target_events, dtype=np.int64)
    labels = names[np.clip(index, 0, len(names) - 1)]
    return labels, [*event_types, "unknown type"]


def event_type_rows(
    eval_set: EvalSet, per_user: dict[str, np.ndarray], event_types: Sequence[str]
) -> list[BucketRow]:
    """Mean metrics per target event type ([] when the data has none)."""
    by_type = event_type_labels(eval_set, event_types)
    return [] if by_type is None else group_means(per_user, *by_type)


def group_means(
    per_user: dict[str, np.ndarray],
    labels: np.ndarray,
    order: Sequence[str],
    metrics: Sequence[str] = SHOWN,
) -> list[BucketRow]:
    """Mean of each metric per label, in ``order``; labels with no rows are left out."""
    rows = []
    for name in order:
        mask = labels == name
        n = int(mask.sum())
        if n == 0:
            continue
        values = {
            m: float(np.asarray(per_user[m], dtype=np.float64)[mask].mean())
            for m in metrics
            if m in per_user
        }
        rows.append(BucketRow(bucket=name, n_users=n, metrics=values))
    return rows


def breakdowns(
    eval_set: EvalSet,
    per_user: dict[str, np.ndarray],
    item_counts: np.ndarray,
    max_len: int,
    event_types: Sequence[str] = (),
) -> dict[str, list[BucketRow]]:
    """``{"history_length": [...], "item_popularity": [...]}`` for one evaluated set, plus
    ``"event_type"`` (by the target event's type) when it has event types."""
    n = len(eval_set)
    sizes = {len(v) for v in per_user.values()}
    if sizes and sizes != {n}:
        raise ValueError(f"per-user metrics have {sizes} rows, the evaluation set {n}")
    length, length_order = length_labels(history_lengths(eval_set), max_len)
    targets = eval_set.targets.numpy()
    popularity, popularity_order = popularity_labels(targets, item_counts)
    tables = {
        "history_length": group_means(per_user, length, length_order),
        "item_popularity": group_means(per_user, popularity, popularity_order),
    }
    if by_type := event_type_rows(eval_set, per_user, event_types):
        tables["event_type"] = by_type
    return tables
