"""Offline feature tables computed from an event-contract frame (vectorised numpy/pyarrow).

Both tables hold one row per *snapshot*: an (entity, event timestamp) pair at which the
entity had at least one event. A snapshot stamped ``t`` describes the entity *after* all
of its events at ``t`` (window counts cover ``(t - w, t]``). Feast's point-in-time join
picks, for an entity row at time ``T``, the newest snapshot with timestamp ``<= T``; the
training-frame helper in :mod:`components.features.store` asks for ``T - 1µs`` so a
label event never sees itself in its features.

Window arithmetic is done at whole-second resolution (timestamps truncated to seconds).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from components.data.schema import EVENT, ITEM, TIME, USER

log = logging.getLogger(__name__)

EVENT_TS = "event_timestamp"
CATEGORY = "category"
TITLE = "title"
# Side-table column names we accept for an item's category and title, first match wins.
CATEGORY_ALIASES = ("category", "class", "genre", "genres")
TITLE_ALIASES = ("title", "movie_title", "name")
#: Both table builders (this module's numpy one and the Spark one in
#: :mod:`components.features.spark_tables`) share these definitions: the column names
#: and order, the windows' unit (whole seconds: a window of ``w`` days counts the events
#: with ``second > t_second - w * DAY_S`` up to the snapshot), the first snapshot's gap
#: and the trend's floor.
DAY_S = 86_400
SECOND_NS = 1_000_000_000
#: ``seconds_since_prev`` of an entity's first snapshot
FIRST_GAP_S = -1.0
#: the trend's denominator floor (the rate over the longest window)
TREND_FLOOR = 1e-12
RECENT_ITEMS = "recent_items"
RECENT_TYPES = "recent_event_types"
N_EVENTS = "n_events"


def user_window_column(days: int) -> str:
    """Name of the user's event count over the last ``days`` days."""
    return f"events_{days}d"


def item_window_column(days: int) -> str:
    """Name of the item's popularity (event count) over the last ``days`` days."""
    return f"pop_{days}d"


def user_columns(windows_days: list[int]) -> list[str]:
    """The user table's columns, in order."""
    windows = [user_window_column(days) for days in windows_days]
    head = [USER, EVENT_TS, RECENT_ITEMS, RECENT_TYPES, N_EVENTS]
    return [*head, *windows, "distinct_items", "last_event_unix", "seconds_since_prev"]


def item_columns(windows_days: list[int]) -> list[str]:
    """The item table's columns, in order."""
    windows = [item_window_column(days) for days in windows_days]
    return [ITEM, EVENT_TS, N_EVENTS, *windows, "trend", "first_seen_unix", CATEGORY, TITLE]


class _Snapshots:
    """Events sorted by (entity, time) plus the index of each snapshot's last event."""

    def __init__(self, events: pd.DataFrame, entity: str) -> None:
        columns = [USER, ITEM, TIME, *([EVENT] if EVENT in events.columns else [])]
        ordered = events[columns].sort_values([entity, TIME], kind="stable")
        self.frame = ordered.reset_index(drop=True)
        self.codes, self.entities = pd.factorize(self.frame[entity], sort=False)
        ts = pd.to_datetime(self.frame[TIME], utc=True)
        self.ts_ns = ts.to_numpy(dtype="datetime64[ns]").view("int64")
        self.ts_s = self.ts_ns // SECOND_NS
        n = len(self.frame)
        boundary = np.ones(n, dtype=bool)
        if n:
            boundary[:-1] = (self.codes[1:] != self.codes[:-1]) | (
                self.ts_ns[1:] != self.ts_ns[:-1]
            )
        #: positions of the last event of every (entity, timestamp) group
        self.last = np.flatnonzero(boundary)
        new_entity = np.ones(n, dtype=bool)
        if n:
            new_entity[1:] = self.codes[1:] != self.codes[:-1]
        starts = np.flatnonzero(new_entity)
        #: for every event, the position of its entity's first event
        self.entity_start = starts[np.cumsum(new_entity) - 1] if n else np.zeros(0, np.int64)

    def window_counts(self, windows_days: list[int]) -> dict[int, np.ndarray]:
        """Per snapshot: events of the same entity with time in ``(t - w, t]``."""
        if not len(self.frame):
            return {w: np.zeros(0, dtype=np.int64) for w in windows_days}
        span = int(self.ts_s.max() - self.ts_s.min())
        stride = span + max(windows_days, default=0) * DAY_S + 2
        # one sortable int64 key per event: entity block, then seconds inside the block
        key = self.codes.astype(np.int64) * stride + (self.ts_s - self.ts_s.min())
        at = key[self.last]
        return {
            w: self.last - np.searchsorted(key, at - w * DAY_S, side="right") + 1
            for w in windows_days
        }

    def event_ts(self) -> pd.Series:
        return pd.Series(self.ts_ns[self.last].astype("datetime64[ns]")).dt.tz_localize("UTC")


def _recent_lists(items: pa.Array, item_codes: np.ndarray, snaps: _Snapshots, n: int) -> pa.Array:
    """ListArray: per snapshot, the last ``n`` values (``items[item_codes]``: item ids or
    event types) up to and including it (old -> new)."""
    last = snaps.last
    lengths = np.minimum(n, last - snaps.entity_start[last] + 1).astype(np.int64)
    offsets = np.zeros(len(last) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    first = last - lengths + 1
    # position of every list element in the sorted event arrays
    idx = np.repeat(first - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    values = items.take(pa.array(item_codes[idx].astype(np.int32)))
    return pa.LargeListArray.from_arrays(pa.array(offsets), values).cast(pa.list_(pa.string()))


def _recent_column(values: pd.Series | None, snaps: _Snapshots, history_length: int) -> pd.Series:
    """Per snapshot, the last ``history_length`` of ``values`` (aligned with
    ``snaps.frame``); empty lists when ``values`` is None."""
    if values is None:
        lists = pa.array([[]] * len(snaps.last), type=pa.list_(pa.string()))
    else:
        codes, uniques = pd.factorize(values, sort=False)
        tokens = pa.array(np.asarray(uniques, dtype=object), type=pa.string())
        lists = _recent_lists(tokens, codes, snaps, history_length)
    return pd.Series(lists, dtype=pd.ArrowDtype(pa.list_(pa.string())))


def user_feature_table(
    events: pd.DataFrame, history_length: int, windows_days: list[int]
) -> pd.DataFrame:
    """One row per (user_id, event_timestamp) snapshot of a user's history.

    Columns: ``user_id`` (string), ``event_timestamp`` (UTC), ``recent_items``
    (list[str]: the last ``history_length`` raw item ids, oldest -> newest, ties in input
    order), ``recent_event_types`` (list[str]: those events' types, aligned with
    ``recent_items``; empty when the events carry no type), ``n_events`` (all events so
    far), ``events_{w}d`` for each window,
    ``distinct_items`` (so far), ``last_event_unix`` (seconds; recency at serving time is
    ``now - last_event_unix``) and ``seconds_since_prev`` (gap to the previous snapshot,
    ``-1.0`` for the first).
    """
    snaps = _Snapshots(events, USER)
    frame, last = snaps.frame, snaps.last
    first_pair = ~frame.duplicated([USER, ITEM]).to_numpy()
    cum_first = np.cumsum(first_pair)
    start = snaps.entity_start[last]
    distinct = cum_first[last] - cum_first[start] + first_pair[start]
    prev_gap = np.full(len(last), FIRST_GAP_S)
    same_user = np.zeros(len(last), dtype=bool)
    if len(last) > 1:
        same_user[1:] = snaps.codes[last[1:]] == snaps.codes[last[:-1]]
        gaps = (snaps.ts_ns[last[1:]] - snaps.ts_ns[last[:-1]]) / SECOND_NS
        prev_gap[1:] = np.where(same_user[1:], gaps, FIRST_GAP_S)
    table = pd.DataFrame(
        {
            USER: pd.Series(np.asarray(snaps.entities, dtype=object)[snaps.codes[last]]),
            EVENT_TS: snaps.event_ts(),
            RECENT_ITEMS: _recent_column(frame[ITEM], snaps, history_length),
            RECENT_TYPES: _recent_column(
                frame[EVENT].fillna("") if EVENT in frame.columns else None, snaps, history_length
            ),
            N_EVENTS: (last - start + 1).astype(np.int64),
        }
    )
    table[USER] = table[USER].astype(pd.ArrowDtype(pa.string()))
    for days, counts in snaps.window_counts(windows_days).items():
        table[user_window_column(days)] = counts.astype(np.int64)
    table["distinct_items"] = distinct.astype(np.int64)
    table["last_event_unix"] = snaps.ts_s[last].astype(np.int64)
    table["seconds_since_prev"] = prev_gap
    return table


def _side_column(side: pd.DataFrame, aliases: tuple[str, ...]) -> str | None:
    return next((name for name in aliases if name in side.columns), None)


def _item_side(events: pd.DataFrame, item_side: pd.DataFrame | None) -> pd.DataFrame:
    """item_id -> category, title (strings, "" where unknown) from a side table or events."""
    source = item_side
    if source is None:
        found = [c for c in CATEGORY_ALIASES + TITLE_ALIASES if c in events.columns]
        source = events[[ITEM, *found]].drop_duplicates(ITEM, keep="last") if found else None
    if source is None or ITEM not in source.columns:
        return pd.DataFrame(columns=[ITEM, CATEGORY, TITLE])
    out = pd.DataFrame({ITEM: source[ITEM].astype(str)})
    for target, aliases in ((CATEGORY, CATEGORY_ALIASES), (TITLE, TITLE_ALIASES)):
        column = _side_column(source, aliases)
        values = source[column] if column else pd.Series("", index=source.index)
        out[target] = values.map(_as_text).to_numpy()
    return out.drop_duplicates(ITEM, keep="last")


def item_side_table(item_side: pd.DataFrame) -> pd.DataFrame:
    """``item_side`` as the item table reads it: ``item_id``, ``category``, ``title``
    (strings, one row per item)."""
    return _item_side(pd.DataFrame(columns=[ITEM]), item_side)


def _as_text(value: object) -> str:
    """Side values as one string: lists (RecBole token_seq) are space-joined, nulls ""."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return " ".join(str(v) for v in value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def item_feature_table(
    events: pd.DataFrame, windows_days: list[int], item_side: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per (item_id, event_timestamp) snapshot of an item's popularity.

    Columns: ``item_id``, ``event_timestamp`` (UTC), ``n_events`` (so far), ``pop_{w}d``
    per window, ``trend`` (event rate over the shortest window divided by the rate over
    the longest; > 1 means rising), ``first_seen_unix`` (seconds), ``category`` and
    ``title`` (strings, "" where the dataset has none). Category/title come from
    ``item_side`` (columns ``category``/``class``/``genre(s)``, ``title``/``movie_title``)
    or, when it is absent, from the same-named side columns of ``events``.
    """
    snaps = _Snapshots(events, ITEM)
    last = snaps.last
    start = snaps.entity_start[last]
    table = pd.DataFrame(
        {
            ITEM: pd.Series(np.asarray(snaps.entities, dtype=object)[snaps.codes[last]]),
            EVENT_TS: snaps.event_ts(),
            N_EVENTS: (last - start + 1).astype(np.int64),
        }
    )
    counts = snaps.window_counts(windows_days)
    for days, values in counts.items():
        table[item_window_column(days)] = values.astype(np.int64)
    if windows_days:
        short, long = min(windows_days), max(windows_days)
        rate_short = counts[short] / short
        rate_long = counts[long] / long
        table["trend"] = np.where(
            rate_long > 0, rate_short / np.maximum(rate_long, TREND_FLOOR), 0.0
        )
    else:
        table["trend"] = 0.0
    table["first_seen_unix"] = snaps.ts_s[start].astype(np.int64)
    side = _item_side(events, item_side)
    joined = table[[ITEM]].astype(str).merge(side, on=ITEM, how="left")
    table[CATEGORY] = joined[CATEGORY].fillna("").to_numpy()
    table[TITLE] = joined[TITLE].fillna("").to_numpy()
    for column in (ITEM, CATEGORY, TITLE):
        table[column] = table[column].astype(pd.ArrowDtype(pa.string()))
    return table
