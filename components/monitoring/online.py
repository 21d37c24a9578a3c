"""Online metrics per model version from the serving log and the feedback that followed.

Inputs are the Arrow tables of ``components.monitoring.servelog`` (served lists, feedback
events); everything is columnar (a million served lists of ten items is ten million
flattened (list, item) pairs in Arrow, filtered to the users who gave feedback before any
pandas join).

hit-rate@k: the share of *closed* served lists whose first ``k`` items the user then
interacted with within ``window`` (a list is closed when ``window`` has passed by
``as_of``; open lists are counted apart, not as misses). A feedback event joins a list
when it names the list's ``request_id``, or when it comes from the list's user within the
window after it was served. Each share carries a Wilson score interval, so two versions
can be compared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import norm


@dataclass(frozen=True)
class Share:
    """A proportion with its Wilson score interval."""

    hits: int
    n: int
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class VersionMetrics:
    """What one model version served and how users responded."""

    model_version: str
    requests: int
    cold_start_share: float
    unknown_item_share: float  # unknown history items / history items
    requests_with_unknown_items: int
    coverage: float | None  # distinct items served / catalogue size
    distinct_items_served: int
    hit_rate: Share
    open_lists: int  # joinable lists whose window has not closed yet

    def as_dict(self) -> dict:
        return asdict(self)


def wilson(hits: int, n: int, confidence: float = 0.95) -> Share:
    """Wilson score interval for ``hits`` successes out of ``n``."""
    if n == 0:
        return Share(hits, n, None, None, None)
    z = float(norm.ppf(0.5 + confidence / 2))
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Share(hits, n, p, max(0.0, centre - half), min(1.0, centre + half))


def _us(value: datetime) -> int:
    return int(pd.Timestamp(value).timestamp() * 1_000_000)


def _top_pairs(lists: pa.Table, k: int, columns: list[str]) -> pa.Table:
    """One row per (served list, top-k item): ``columns`` of the list plus ``item_id``."""
    top = pc.list_slice(lists["items"], 0, k)
    parents = pc.list_parent_indices(top)
    data = {c: pc.take(lists[c], parents) for c in columns}
    data["item_id"] = pc.list_flatten(top)
    return pa.table(data)


def _explicit_hits(served: pa.Table, feedback: pa.Table, k: int) -> pa.Array:
    """Request ids whose top-k contains an item of a feedback event naming that request."""
    named = feedback.filter(pc.is_valid(feedback["request_id"]))
    if named.num_rows == 0:
        return pa.array([], pa.string())
    lists = served.filter(pc.is_in(served["request_id"], named["request_id"].unique()))
    if lists.num_rows == 0:
        return pa.array([], pa.string())
    pairs = _top_pairs(lists, k, ["request_id"])
    joined = pairs.join(
        named.select(["request_id", "item_id"]), ["request_id", "item_id"], join_type="inner"
    )
    return pc.unique(joined["request_id"].combine_chunks())


def explicit_hit_ids(served: pa.Table, feedback: pa.Table, k: int) -> pa.Array:
    """Request ids of ``served`` lists whose top-k holds an item that a feedback event
    naming the same request id is about."""
    return _explicit_hits(served, feedback, k)


def _window_hits(served: pa.Table, feedback: pa.Table, k: int, window_us: int) -> pa.Array:
    """Request ids whose user interacted with a top-k item within the window after serving.

    Joined in Arrow (Acero's hash join), not pandas: ten million (list, item) pairs stay
    columnar strings instead of Python objects."""
    users = feedback["user_id"].unique()
    lists = served.filter(
        pc.and_(pc.is_valid(served["user_id"]), pc.is_in(served["user_id"], users))
    )
    if lists.num_rows == 0:
        return pa.array([], pa.string())
    pairs = _top_pairs(
        lists.set_column(lists.schema.get_field_index("ts"), "ts", _ts_col_us(lists)),
        k,
        ["request_id", "user_id", "ts"],
    )
    events = pa.table(
        {
            "user_id": feedback["user_id"],
            "item_id": feedback["item_id"],
            "event_us": pc.cast(feedback["timestamp"], pa.int64()),
        }
    )
    joined = pairs.join(events, ["user_id", "item_id"], join_type="inner")
    after = pc.subtract(joined["event_us"], joined["ts"])
    inside = pc.and_(pc.greater(after, 0), pc.less_equal(after, window_us))
    return pc.unique(joined.filter(inside)["request_id"].combine_chunks())


def unknown_request_ids(served: pa.Table, feedback: pa.Table) -> int:
    """Feedback events naming a request id the serving log does not hold (kept, counted)."""
    named = feedback.filter(pc.is_valid(feedback["request_id"]))
    if named.num_rows == 0:
        return 0
    known = pc.is_in(named["request_id"], served["request_id"])
    return int(named.num_rows - (pc.sum(known).as_py() or 0))


def version_metrics(
    served: pa.Table,
    feedback: pa.Table,
    *,
    k: int,
    window: timedelta,
    as_of: datetime,
    catalogue_size: int | None,
    confidence: float = 0.95,
) -> VersionMetrics:
    """Metrics of the lists one version served (``served`` holds only that version)."""
    n = served.num_rows
    window_us = int(window.total_seconds() * 1_000_000)
    cold = int(pc.sum(pc.equal(served["source"], "cold_start")).as_py() or 0)
    hist = int(pc.sum(served["history_len"]).as_py() or 0)
    unknown = int(pc.sum(served["unknown_items"]).as_py() or 0)
    with_unknown = int(pc.sum(pc.greater(served["unknown_items"], 0)).as_py() or 0)
    distinct = len(pc.unique(pc.list_flatten(pc.list_slice(served["items"], 0, k))))
    hits = pa.concat_arrays(
        [_explicit_hits(served, feedback, k), _window_hits(served, feedback, k, window_us)]
    )
    named = set(feedback["request_id"].drop_null().to_pylist()) if feedback.num_rows else set()
    joinable = pc.or_(
        pc.is_valid(served["user_id"]),
        pc.is_in(served["request_id"], pa.array(list(named), pa.string())),
    )
    closed = pc.less_equal(_ts_col_us(served), _us(as_of) - window_us)
    is_hit = _bools(pc.is_in(served["request_id"], hits))
    joinable_np, closed_np = _bools(joinable), _bools(closed)
    counted = joinable_np & closed_np
    version = served["model_version"][0].as_py() if n else ""
    return VersionMetrics(
        model_version=version,
        requests=n,
        cold_start_share=cold / n if n else 0.0,
        unknown_item_share=unknown / hist if hist else 0.0,
        requests_with_unknown_items=with_unknown,
        coverage=distinct / catalogue_size if catalogue_size else None,
        distinct_items_served=distinct,
        hit_rate=wilson(int((is_hit & counted).sum()), int(counted.sum()), confidence),
        open_lists=int((joinable_np & ~closed_np).sum()),
    )


def _bools(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _ts_col_us(served: pa.Table) -> pa.ChunkedArray:
    return pc.cast(served["ts"], pa.int64())


def metrics_by_version(
    served: pa.Table,
    feedback: pa.Table,
    *,
    k: int,
    window: timedelta,
    as_of: datetime,
    catalogue_sizes: dict[str, int],
    confidence: float = 0.95,
) -> list[VersionMetrics]:
    """:func:`version_metrics` for every model version in ``served``, by version name."""
    out = []
    for version in sorted(pc.unique(served["model_version"]).to_pylist()):
        mine = served.filter(pc.equal(served["model_version"], version))
        out.append(
            version_metrics(
                mine,
                feedback,
                k=k,
                window=window,
                as_of=as_of,
                catalogue_size=catalogue_sizes.get(version),
                confidence=confidence,
            )
        )
    return out
