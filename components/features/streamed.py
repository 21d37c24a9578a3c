"""Feature tables in bounded memory: built in passes over the entities of a lazy event frame.

Both tables are per entity: a user's snapshots depend only on that user's events, an
item's only on that item's. So the users are split into passes (by user hash, or the
stream engine's user buckets), each pass's events are collected, its rows are computed by
the same functions as the one-frame path (:mod:`components.features.tables`, so the
values are the same) and written as day partitions, one file per pass and day
(``day=D/part-<pass>.parquet``); the items likewise by item hash. What is held is one
pass's events and rows, sized from ``data.memory_budget_mb``, never a table of all events.

Incremental like the one-frame path (:mod:`components.features.partitions`): one
streaming aggregation over the events gives a digest of each UTC day's rows (with their
batch-wide row numbers, so input order counts); the days before the first changed day
keep their files, and every pass writes only the days from it on. The passes' files are
written as pending files first and made live together at the end (renames), so a reader
never sees part of a rebuild. The pass count may differ between builds (the data grew):
the rows do not depend on it, and the materialization reads one pass's files at a time
while finding each entity's newest row over all of them
(:func:`components.features.store.latest_snapshot_chunks`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from components.data.schema import EVENT, ITEM, TIME, USER
from components.data.stream import BUDGET_KEY, ROW, UserBuckets, user_passes
from components.errors import DataError
from components.features.config import FeaturesConfig
from components.features.partitions import (
    Manifest,
    commit_passes,
    stage_pass,
    start_build,
)
from components.features.store import (
    ITEM_VIEW,
    USER_VIEW,
    check_windows,
    engine_timestamps,
    repo_digest,
    source_paths,
)
from components.features.tables import (
    CATEGORY_ALIASES,
    TITLE_ALIASES,
    item_feature_table,
    item_side_table,
    user_feature_table,
)
from components.workspace import Workspace

log = logging.getLogger(__name__)

#: bytes one event costs while its pass's user table is built: the pass's events as
#: polars then pandas, the sort, and the snapshot rows with their two lists of up to
#: ``history_length`` strings (as pandas/Arrow, then the Arrow table written); measured
#: with ``recops bench features`` at history 50 (1.6 kB at 1M-event passes; 4.3M-event
#: passes at 100M events took about 1.75 kB)
USER_ROW_BYTES = 1800
#: the same for the item table (no lists)
ITEM_ROW_BYTES = 500
#: the process before a pass: the interpreter with pandas, pyarrow, polars, Feast and the
#: pipeline's other libraries imported (0.87 GB before the stage in ``bench data`` at 1M
#: events; with the data engine's 350 MB the passes overran a 2 GB budget by half at 10M)
FEATURES_BASELINE_MB = 900
_MIB = 2**20


def feature_passes(n_rows: int, row_bytes: int, budget_mb: int) -> int:
    """The fewest passes whose share of ``n_rows`` events fits in the budget beside the
    interpreter; raises :class:`DataError` naming ``data.memory_budget_mb`` when even
    4096 passes would not."""
    free = budget_mb - FEATURES_BASELINE_MB
    need = n_rows * row_bytes / _MIB
    passes = max(1, math.ceil(need / free)) if free > 0 else 4097
    if passes > 4096:
        raise DataError(
            f"{BUDGET_KEY}={budget_mb} is too small to build the feature tables of "
            f"{n_rows:,} events (the process alone takes about {FEATURES_BASELINE_MB} MB)",
            hint=f"raise it with --set {BUDGET_KEY}="
            f"{FEATURES_BASELINE_MB + math.ceil(need / 64) + 256}",
        )
    return passes


def streamed_day_digests(lazy: pl.LazyFrame, batch_rows: int = 1_000_000) -> dict[str, str]:
    """Per UTC day of the events: a digest of that day's rows in input order (each row's
    hash weighted by its position inside its own day, so rows of other days arriving in
    between change nothing), read in batches of ``batch_rows`` in input order."""
    counts: dict[int, int] = {}
    mixed: dict[int, int] = {}
    sums: dict[int, int] = {}
    row_hash = pl.struct(USER, ITEM, TIME, EVENT).hash(seed=0).alias("h")
    day = pl.col(TIME).dt.epoch("d").alias("d")
    for batch in lazy.select(row_hash, day).collect_batches(chunk_size=batch_rows):
        days = batch["d"].to_numpy()
        order = np.argsort(days, kind="stable")
        days, hashes = days[order], batch["h"].to_numpy()[order]
        starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
        for lo, hi in zip(starts, np.r_[starts[1:], len(days)], strict=True):
            number, before = int(days[lo]), counts.get(int(days[lo]), 0)
            position = np.arange(before + 1, before + hi - lo + 1, dtype=np.uint64)
            part = hashes[lo:hi]
            mixed[number] = mixed.get(number, 0) ^ int(np.bitwise_xor.reduce(part * position))
            sums[number] = (sums.get(number, 0) + int(part.sum(dtype=np.uint64))) % 2**64
            counts[number] = before + hi - lo
    return {
        str(np.datetime64(number, "D")): f"{n}:{mixed[number]:016x}:{sums[number]:016x}"
        for number, n in sorted(counts.items())
    }


def side_columns_of(paths: Sequence[Path]) -> pd.DataFrame | None:
    """The item side columns (category, title: :data:`CATEGORY_ALIASES`,
    :data:`TITLE_ALIASES`) carried by event files, one row per item (its last value in
    file order), as the one-frame path takes them from its events; None without any."""
    if not paths:
        return None
    names = pl.scan_parquet(paths[0]).collect_schema().names()
    found = [c for c in (*CATEGORY_ALIASES, *TITLE_ALIASES) if c in names]
    if not found:
        return None
    lazy = pl.scan_parquet([str(p) for p in paths]).select(ITEM, *found)
    side = lazy.unique(ITEM, keep="last", maintain_order=True).collect(engine="streaming")
    return side.with_columns(pl.col(ITEM).cast(pl.String)).to_pandas()


def _pass_events(chosen: pl.LazyFrame) -> pd.DataFrame:
    """One pass's events as the one-frame path's contract frame, in input order."""
    frame = chosen.select(USER, ITEM, TIME, EVENT, ROW).collect(engine="streaming")
    return frame.sort(ROW).drop(ROW).to_pandas()


def _item_passes(lazy: pl.LazyFrame, passes: int) -> Iterator[pl.LazyFrame]:
    for part in range(passes):
        yield lazy.filter(pl.col(ITEM).hash(seed=0) % passes == part) if passes > 1 else lazy


def _basis(cfg: FeaturesConfig, view: str, side: pd.DataFrame | None) -> str:
    """What a view's rows depend on besides the days' events: the repo and settings, the
    timestamp unit and the item side table (the day digests differ from the one-frame
    path's, so switching paths rebuilds every day)."""
    unit = "us" if cfg.offline_store == "spark" else "ns"
    digest = hashlib.sha256(f"{view}\0{repo_digest(cfg)}\0{unit}\0in passes\0".encode())
    if side is not None:
        digest.update(pd.util.hash_pandas_object(side, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _write_view(
    root: Path,
    manifest: Manifest,
    frames: Iterator[pl.LazyFrame],
    build: Callable[[pd.DataFrame], pd.DataFrame],
    cfg: FeaturesConfig,
) -> list[str]:
    """Build ``frames`` one pass at a time into ``root``'s day partitions (the days from
    the first changed one on); returns the days now live from there on."""
    start = start_build(root, manifest, "in passes")
    if start is None:
        return []
    for part, chosen in enumerate(frames):
        events = _pass_events(chosen)
        if events.empty:
            continue
        table = build(events)
        del events
        arrow = pa.Table.from_pandas(table, preserve_index=False).replace_schema_metadata(None)
        del table
        stage_pass(engine_timestamps(arrow, cfg), root, start, part)
    return commit_passes(root, start, manifest)


def write_feature_tables_streamed(
    lazy: pl.LazyFrame,
    workspace: Workspace,
    cfg: FeaturesConfig,
    budget_mb: int,
    item_side: pd.DataFrame | None = None,
    buckets: UserBuckets | None = None,
) -> dict[str, Path]:
    """The user and item tables of ``lazy`` (the event contract plus ``_row`` in input
    order: a :func:`components.data.stream.scan_events` frame) written as day partitions
    in passes, each pass inside ``budget_mb`` (``data.memory_budget_mb``). With
    ``buckets`` (the same events by user hash) a user pass reads only its buckets.

    Same rows as :func:`components.features.store.write_feature_tables` on the same
    events. Raises :class:`DataError` naming ``data.memory_budget_mb`` when the budget
    cannot hold even a small pass."""
    check_windows(cfg)
    paths = source_paths(workspace, cfg)
    n_rows = int(lazy.select(pl.len()).collect(engine="streaming").item())
    user_passes_n = feature_passes(n_rows, USER_ROW_BYTES, budget_mb)
    item_passes_n = feature_passes(n_rows, ITEM_ROW_BYTES, budget_mb)
    days = streamed_day_digests(lazy)
    side = item_side_table(item_side) if item_side is not None else None
    log.info(
        "feature tables of %d events: %d user pass(es), %d item pass(es) within %s=%d",
        n_rows,
        user_passes_n,
        item_passes_n,
        BUDGET_KEY,
        budget_mb,
    )
    _write_view(
        paths[USER_VIEW],
        Manifest(_basis(cfg, USER_VIEW, None), days),
        user_passes(buckets or lazy, user_passes_n),
        lambda events: user_feature_table(events, cfg.history_length, cfg.windows_days),
        cfg,
    )
    _write_view(
        paths[ITEM_VIEW],
        Manifest(_basis(cfg, ITEM_VIEW, side), days),
        _item_passes(lazy, item_passes_n),
        lambda events: item_feature_table(events, cfg.windows_days, side),
        cfg,
    )
    return paths
