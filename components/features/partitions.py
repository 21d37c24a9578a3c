"""Offline feature sources as daily partitions, rewritten from the first changed day only.

A partitioned source is a folder of Hive partitions, ``<root>/day=YYYY-MM-DD/part-<k>.parquet``
(UTC day of each snapshot's ``event_timestamp``; one file per day, ``part-0``, when the
tables are built in one piece, one per pass when they are built in passes over the
entities: :mod:`components.features.streamed`), declared to Feast as the glob
``<root>/day=*/*.parquet`` (DuckDB and Dask read it natively). Rows stay one per
(entity, event time) snapshot: a point-in-time join needs the state at every label time.

Why writes can be incremental: a snapshot stamped ``t`` depends only on the entity's
events at or before ``t``. So when a new dataset version adds or changes events, the
partitions of days before the first day whose events differ hold exactly the rows they
held; only that day and later ones are rewritten. ``_days.json`` (beside the partitions)
records a digest of each day's events, in input order, plus a digest of everything else
the rows depend on (settings, item side table); comparing them finds the first changed
day. Each partition file is replaced atomically (written beside, then renamed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from components.errors import FeatureStoreError
from components.features.tables import EVENT_TS

log = logging.getLogger(__name__)

DAY = "day"
PARTITION_GLOB = f"{DAY}=*/*.parquet"
PART_FILE = "part-0.parquet"
PART_GLOB = "part-*.parquet"
#: a pass's file for a day, written beside the live ones until every pass is done
PENDING_SUFFIX = ".pending"
MANIFEST = "_days.json"
_DAY_NS = 86_400 * 1_000_000_000


def partition_root(declared: str) -> str | None:
    """The folder of a source declared as ``<root>/day=*/*.parquet``; None for a file."""
    suffix = "/" + PARTITION_GLOB
    return declared[: -len(suffix)] if declared.endswith(suffix) else None


def _day_numbers(timestamps: pd.Series | np.ndarray) -> np.ndarray:
    """UTC days since the epoch of each timestamp (int64)."""
    ns = pd.to_datetime(pd.Series(timestamps), utc=True).to_numpy("datetime64[ns]").view("int64")
    return ns // _DAY_NS


def day_keys(timestamps: pd.Series | np.ndarray) -> np.ndarray:
    """UTC day (``YYYY-MM-DD``) of each timestamp."""
    return _day_numbers(timestamps).astype("datetime64[D]").astype(str)


def day_of(moment: datetime) -> str:
    """UTC day of one moment."""
    return str(day_keys(np.asarray([pd.Timestamp(moment).value]))[0])


def event_day_digests(events: pd.DataFrame, timestamps: str) -> dict[str, str]:
    """Per UTC day of ``events[timestamps]``: a digest of that day's rows (every column)
    in input order."""
    if events.empty:
        return {}
    # strings hashed as categoricals: each distinct value once (8x faster than Arrow strings)
    coded = {
        name: column.astype("category") if _is_text(column) else column
        for name, column in events.items()
    }
    rows = pd.util.hash_pandas_object(pd.DataFrame(coded), index=False).to_numpy()
    days = _day_numbers(events[timestamps])
    order = np.argsort(days, kind="stable")
    days, rows = days[order], rows[order]
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    ends = np.r_[starts[1:], len(days)]
    # order-sensitive within the day (ties keep input order, which the tables honour):
    # each row weighted by its position inside its own day
    position = np.arange(len(rows)) - np.repeat(starts, ends - starts) + 1
    weights = position.astype(np.uint64)
    mixed = rows * weights
    return {
        str(
            np.datetime64(int(days[s]), "D")
        ): f"{e - s}:{int(np.bitwise_xor.reduce(mixed[s:e])):016x}:"
        f"{int(rows[s:e].sum(dtype=np.uint64)):016x}"
        for s, e in zip(starts, ends, strict=True)
    }


def _is_text(column: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column)


@dataclass(frozen=True)
class Manifest:
    """What the partitions under a root were written from."""

    basis: str  # digest of the settings and side inputs the rows depend on
    days: dict[str, str]  # day -> digest of that day's events

    @staticmethod
    def read(root: Path) -> Manifest | None:
        path = root / MANIFEST
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return Manifest(
            basis=str(raw["basis"]), days={str(k): str(v) for k, v in raw["days"].items()}
        )

    def write(self, root: Path) -> None:
        tmp = root / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"basis": self.basis, "days": self.days}, sort_keys=True))
        tmp.replace(root / MANIFEST)


def first_changed_day(before: Manifest | None, after: Manifest) -> str | None:
    """The earliest day whose partition must be rewritten (None: nothing changed)."""
    if before is None or before.basis != after.basis:
        return min(after.days, default=None) if after.days else _any_day(before)
    changed = [
        day
        for day in set(before.days) | set(after.days)
        if before.days.get(day) != after.days.get(day)
    ]
    return min(changed, default=None)


def _any_day(manifest: Manifest | None) -> str | None:
    return min(manifest.days, default=None) if manifest is not None else None


def written_days(root: Path) -> list[str]:
    """Days with a partition file under ``root``, oldest first."""
    if not root.is_dir():
        return []
    prefix = f"{DAY}="
    return sorted(
        p.name[len(prefix) :]
        for p in root.iterdir()
        if p.name.startswith(prefix) and any(p.glob(PART_GLOB))
    )


def day_files(root: Path, day: str) -> list[Path]:
    """The partition files of one day (``part-0`` first, then the other passes')."""
    return sorted((root / f"{DAY}={day}").glob(PART_GLOB), key=_part_number)


def _part_number(path: Path) -> int:
    digits = path.name[len("part-") : -len(".parquet")]
    return int(digits) if digits.isdigit() else -1


def _day_slices(table: pa.Table, first_day: str) -> Iterator[tuple[str, pa.Table]]:
    """(day, rows) for each UTC day of ``table``'s snapshots from ``first_day`` on, oldest
    first; the rows of a day keep their order in ``table``."""
    ns = table[EVENT_TS].cast(pa.timestamp("ns", "UTC")).to_numpy().view("int64")
    day_numbers = ns // _DAY_NS
    first = int(np.datetime64(first_day, "D").astype(np.int64))
    chosen = np.flatnonzero(day_numbers >= first)
    chosen = chosen[np.argsort(day_numbers[chosen], kind="stable")]  # rows keep their order
    ordered_days = day_numbers[chosen]
    bounds = np.flatnonzero(np.r_[True, ordered_days[1:] != ordered_days[:-1], True])
    ordered = table.take(pa.array(chosen))  # one copy in day order, then zero-copy slices
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        yield str(np.datetime64(int(ordered_days[lo]), "D")), ordered.slice(lo, hi - lo)


def write_partitions(table: pa.Table, root: Path, manifest: Manifest) -> list[str]:
    """Write ``table``'s rows (snapshots with ``event_timestamp``) as day partitions
    under ``root``, rewriting only days from :func:`first_changed_day` on (older
    partitions are kept as they are; days no longer present are removed). Returns the
    days written."""
    root.mkdir(parents=True, exist_ok=True)
    start = first_changed_day(Manifest.read(root), manifest)
    if start is None:
        log.info("%s: no day changed, partitions kept", root.name)
        return []
    written = []
    for day, rows in _day_slices(table, start):
        _replace_partition(rows, root / f"{DAY}={day}")
        written.append(day)
    _drop_days(root, start, keep=set(written))
    manifest.write(root)
    log.info("%s: %d partitions written from %s on", root.name, len(written), start)
    return written


def _drop_days(root: Path, start: str, keep: set[str]) -> None:
    """Remove the partitions of days from ``start`` on that are not in ``keep``."""
    for folder in root.glob(f"{DAY}=*"):
        day = folder.name[len(DAY) + 1 :]
        if day >= start and day not in keep:
            shutil.rmtree(folder)


def _replace_partition(rows: pa.Table, folder: Path) -> None:
    """Write one day's file beside the old one, then rename it over (readers see either);
    other passes' files of that day (an earlier build in passes) are removed."""
    folder.mkdir(exist_ok=True)
    tmp = folder / f".{PART_FILE}.{os.getpid()}.tmp"
    pq.write_table(rows, tmp)
    tmp.replace(folder / PART_FILE)
    for stale in folder.glob(PART_GLOB):
        if stale.name != PART_FILE:
            stale.unlink()


def check_partitioned(root: Path, how: str) -> None:
    """Create ``root``, the folder of a day-partitioned source; raises
    :class:`FeatureStoreError` for a source declared as one file (built ``how``)."""
    if root.suffix == ".parquet":
        raise FeatureStoreError(
            f"{root.name}: a source declared as one file cannot be built {how}",
            hint="declare it as <folder>/day=*/*.parquet in feature_repo/definitions.py",
        )
    root.mkdir(parents=True, exist_ok=True)


def discard_pending(root: Path) -> None:
    """Remove the pending files an interrupted build in passes left under ``root``."""
    for leftover in root.glob(f"{DAY}=*/*{PENDING_SUFFIX}"):
        leftover.unlink()


def start_build(root: Path, manifest: Manifest, how: str) -> str | None:
    """Begin a build of ``root``'s day partitions ``how`` (in passes, by Spark): the
    first day whose events changed since the last build (None, and nothing touched, when
    no day did), with the pending files an interrupted build left removed."""
    check_partitioned(root, how)
    start = first_changed_day(Manifest.read(root), manifest)
    if start is None:
        log.info("%s: no day changed, partitions kept", root.name)
        return None
    discard_pending(root)
    return start


def stage_pass(table: pa.Table, root: Path, start: str, part: int) -> int:
    """Write pass ``part``'s rows of the days from ``start`` on as pending files
    (``day=D/part-<part>.parquet.pending``, which Feast's glob does not read); returns the
    number of days written. :func:`commit_passes` makes them live."""
    days = 0
    for day, rows in _day_slices(table, start):
        folder = root / f"{DAY}={day}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, folder / f"part-{part}.parquet{PENDING_SUFFIX}")
        days += 1
    return days


def commit_passes(root: Path, start: str, manifest: Manifest) -> list[str]:
    """Make every pass's pending files live: each day from ``start`` on is replaced by its
    pending files (renames; stale files of that day removed, a day without pending files
    removed), then the manifest is written. Returns the days now live from ``start`` on."""
    live = []
    for folder in sorted(root.glob(f"{DAY}=*")):
        day = folder.name[len(DAY) + 1 :]
        if day < start:
            continue
        pending = sorted(folder.glob(f"*{PENDING_SUFFIX}"))
        names = {path.name[: -len(PENDING_SUFFIX)] for path in pending}
        for path in pending:
            path.replace(folder / path.name[: -len(PENDING_SUFFIX)])
        for stale in folder.glob(PART_GLOB):
            if stale.name not in names:
                stale.unlink()
        if names:
            live.append(day)
    _drop_days(root, start, keep=set(live))
    manifest.write(root)
    log.info("%s: %d partitions written from %s on, in passes", root.name, len(live), start)
    return live


def days_within(root: Path, start: datetime | None, end: datetime | None) -> list[str]:
    """Written days under ``root`` that the window [start, end] touches (bounds optional),
    oldest first. The bounds' days are computed once, not once per partition."""
    first = day_of(start) if start is not None else None
    last = day_of(end) if end is not None else None
    return [
        day
        for day in written_days(root)
        if (first is None or day >= first) and (last is None or day <= last)
    ]


def read_window(
    root: Path,
    columns: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pa.Table:
    """Rows with ``start <= event_timestamp <= end`` (either bound optional), reading only
    the partitions of the days the window touches."""
    files = [str(path) for day in days_within(root, start, end) for path in day_files(root, day)]
    if not files:
        return _empty(root, columns)
    return window_rows(ds.dataset(files, format="parquet"), columns, start, end)


def window_rows(
    dataset: ds.Dataset,
    columns: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pa.Table:
    """``dataset``'s rows with ``start <= event_timestamp <= end`` (either bound optional)."""
    ts, kind = ds.field(EVENT_TS), dataset.schema.field(EVENT_TS).type
    condition = None
    if start is not None:
        condition = ts >= pa.scalar(pd.Timestamp(start).as_unit("ns"), kind)
    if end is not None:
        upper = ts <= pa.scalar(pd.Timestamp(end).as_unit("ns"), kind)
        condition = upper if condition is None else condition & upper
    return dataset.to_table(columns=columns, filter=condition)


def _empty(root: Path, columns: list[str] | None) -> pa.Table:
    days = written_days(root)
    if not days:
        return pa.table({name: pa.array([], pa.null()) for name in columns or []})
    schema = pq.read_schema(day_files(root, days[0])[0])
    names = columns or schema.names
    return pa.table({n: pa.array([], schema.field(n).type) for n in names})


def edge_timestamp(root: Path, newest: bool) -> pd.Timestamp | None:
    """The earliest (``newest=False``) or newest snapshot time, from one partition."""
    days = written_days(root)
    if not days:
        return None
    files = [str(path) for path in day_files(root, days[-1] if newest else days[0])]
    ts = ds.dataset(files, format="parquet").to_table(columns=[EVENT_TS])[EVENT_TS]
    value = (pc.max(ts) if newest else pc.min(ts)).as_py()
    return pd.Timestamp(value) if value is not None else None


@dataclass(frozen=True)
class SourceComparison:
    """Two day-partitioned sources compared row by row (rows sorted by entity and time,
    one day at a time): which days, columns and value types each has, and per column the
    rows that differ (floats within a relative tolerance)."""

    days: tuple[int, int]  # days written in each
    same_days: bool
    same_columns: bool  # names and value types (list field names, nullability aside)
    rows: tuple[int, int]
    differing: dict[str, int]  # column -> rows that differ
    max_float_difference: float
    rel_tol: float

    @property
    def equal(self) -> bool:
        rows_match = self.rows[0] == self.rows[1]
        return (
            self.same_days and self.same_columns and rows_match and not any(self.differing.values())
        )


def compare_sources(a: Path, b: Path, key: str, rel_tol: float = 1e-9) -> SourceComparison:
    """Compare the sources under ``a`` and ``b`` (``key``: the entity column) day by day,
    holding one day of each; timestamps are compared in microseconds (the Spark offline
    store's resolution)."""
    days_a, days_b = written_days(a), written_days(b)
    differing: dict[str, int] = {}
    rows = [0, 0]
    types: list[dict[str, str]] = []
    worst = 0.0
    for day in sorted(set(days_a) & set(days_b)):
        left, right = (_day_rows(root, day, key) for root in (a, b))
        rows[0] += left.num_rows
        rows[1] += right.num_rows
        if not types:
            types = [_value_types(left), _value_types(right)]
        for name in left.column_names:
            if name not in right.column_names:
                continue
            count, gap = _differences(left[name], right[name], rel_tol)
            differing[name] = differing.get(name, 0) + count
            worst = max(worst, gap)
    return SourceComparison(
        days=(len(days_a), len(days_b)),
        same_days=days_a == days_b,
        same_columns=bool(types) and types[0] == types[1],
        rows=(rows[0], rows[1]),
        differing=differing,
        max_float_difference=worst,
        rel_tol=rel_tol,
    )


def _day_rows(root: Path, day: str, key: str) -> pa.Table:
    table = ds.dataset([str(p) for p in day_files(root, day)], format="parquet").to_table()
    stamps = table[EVENT_TS].cast(pa.timestamp("us", "UTC"), safe=False)
    table = table.set_column(table.schema.get_field_index(EVENT_TS), EVENT_TS, stamps)
    return table.sort_by([(key, "ascending"), (EVENT_TS, "ascending")])


def _value_types(table: pa.Table) -> dict[str, str]:
    def kind(value: pa.DataType) -> str:
        if pa.types.is_list(value) or pa.types.is_large_list(value):
            return f"list<{kind(value.value_type)}>"
        return str(value)

    return {field.name: kind(field.type) for field in table.schema}


def _differences(a: pa.ChunkedArray, b: pa.ChunkedArray, rel_tol: float) -> tuple[int, float]:
    """(rows that differ, largest absolute float difference) of two aligned columns."""
    if len(a) != len(b):
        return max(len(a), len(b)), 0.0
    if pa.types.is_list(a.type) or pa.types.is_large_list(a.type):
        lengths = [pc.list_value_length(x).to_numpy(zero_copy_only=False) for x in (a, b)]
        if not np.array_equal(lengths[0], lengths[1]):
            return int((lengths[0] != lengths[1]).sum()), 0.0
        values = [
            pc.list_flatten(x).cast(pa.string()).to_numpy(zero_copy_only=False) for x in (a, b)
        ]
        owner = np.repeat(np.arange(len(a)), lengths[0])
        return len(np.unique(owner[values[0] != values[1]])), 0.0
    if pa.types.is_floating(a.type):
        x, y = (col.to_numpy(zero_copy_only=False).astype(np.float64) for col in (a, b))
        gap = np.abs(x - y)
        bad = ~((x == y) | (gap <= rel_tol * np.maximum(np.abs(x), np.abs(y))))
        return int(bad.sum()), float(gap.max(initial=0.0))
    left, right = a.cast(b.type) if a.type != b.type else a, b
    same = pc.fill_null(pc.equal(left, right), False).to_numpy(zero_copy_only=False)
    return int((~same).sum()), 0.0
