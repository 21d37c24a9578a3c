"""The bounded-memory data path: partitioned Parquet in, per-user sequence tails out.

The in-memory path (:func:`components.data.loaders.load_events` then
:func:`components.data.prepare.prepare`) holds every event as one pandas frame: 10M events
peak at about 4 GB. This path never does. Files are read lazily with polars, one file at a
time for the checks, and the per-user work runs in ``passes`` passes over the files, each
pass taking the users whose id hashes to it (so a user's events are always in one pass).
The number of passes follows from ``data.memory_budget_mb`` and the row count in the
Parquet footers, so peak memory is bounded by the budget, not by the data size.

The events are written once bucketed by user hash (:func:`write_user_buckets`: one
folder of Parquet per bucket, a single streaming read of the input): every later pass
(validation, the version's digest, the per-user tails) then reads only its own buckets,
so each stage reads the data once whatever the number of passes (reading every file on
every pass made the stages grow with events x passes).

What comes out is what the sequence models need: the vocabulary of every user and item,
and each user's last ``max_len + 3`` events (enough for leave-one-out's validation and
test histories and for the training windows of ``max_len + 1`` items, so sequence models
see exactly what the in-memory path gives them). Older events are not kept: models that
read every training event (popularity counts, graph models) see only the tails.

A file the path cannot read (not Parquet, an empty id, a time that is not a time) stops
the whole batch with a :class:`DataError` naming the file and the row, before anything
downstream runs.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from components.data.config import ColumnMapping, DataConfig, SyntheticConfig
from components.data.prepare import PreparedData, checked_catalogue
from components.data.schema import EVENT, ITEM, TIME, USER, VALUE
from components.data.sequences import Sequences, Vocabulary
from components.data.splits import leave_one_out
from components.errors import DataError

log = logging.getLogger(__name__)

BUDGET_KEY = "data.memory_budget_mb"
#: bytes one event row costs inside a pass (two short strings, time, row number, the
#: sort's copy and the hash); measured on the synthetic generator's events
ROW_BYTES = 160
#: bytes one event costs while a pass is validated (polars rows, the pandas chunk, the
#: derived columns and GX's working copies); measured with ``recops bench validation``
GX_ROW_BYTES = 400
#: bytes one kept tail event costs in the result: the sequences (item, time, event type)
#: and the training sequences (item, event type), int64 each
TAIL_BYTES = 40
#: bytes per user and window position of leave-one-out's evaluation tensors (one
#: ``max_len + 1`` window of items and one of event types, int64, that the validation and
#: test histories view)
EVAL_BYTES = 16
#: bytes per vocabulary token (Python str in a tuple, plus the polars copy while building)
TOKEN_BYTES = 120
#: fixed cost of the interpreter and libraries, not available to the data
BASELINE_MB = 350
ROW = "_row"
BUCKET = "_bucket"
#: rows per user bucket (a pass takes whole buckets, so this is the finest memory step)
BUCKET_ROWS = 500_000
USER_IDX = "_user"
ITEM_IDX = "_item"
EVENT_IDX = "_event"


@dataclass(frozen=True)
class EventFiles:
    """The Parquet files of a batch, in order, with their row counts (from the footers)."""

    paths: tuple[Path, ...]
    rows: tuple[int, ...]

    @property
    def n_rows(self) -> int:
        return int(sum(self.rows))

    def first_row(self, index: int) -> int:
        """The batch-wide 1-based row number of file ``index``'s first row."""
        return int(sum(self.rows[:index])) + 1


def write_events_dataset(
    cfg: SyntheticConfig,
    directory: str | Path,
    events_per_file: int = 1_000_000,
    batch: int = 0,
) -> EventFiles:
    """Write the synthetic events of ``cfg`` as ``part-NNNNN.parquet`` files, one block
    of users per file: memory stays O(``events_per_file``) whatever ``cfg.n_events``."""
    from components.data.synthetic import iter_event_chunks

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    rows: list[int] = []
    for number, frame in enumerate(iter_event_chunks(cfg, events_per_file, batch)):
        path = directory / f"part-{number:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        paths.append(path)
        rows.append(len(frame))
        del frame
    return EventFiles(tuple(paths), tuple(rows))


def list_event_files(path: str | Path) -> EventFiles:
    """A Parquet file, or every ``*.parquet`` under a directory (sorted), with row counts.

    A file whose footer cannot be read raises :class:`DataError` naming it and the batch
    row where it would start."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    candidates = (
        sorted(p for p in path.rglob("*.parquet") if p.is_file()) if path.is_dir() else [path]
    )
    if not candidates:
        raise DataError(f"{path}: no .parquet files in the directory")
    return files_of(candidates)


def files_of(candidates: Sequence[Path]) -> EventFiles:
    """``candidates`` (Parquet files, in batch order) with their row counts; a file whose
    footer cannot be read raises :class:`DataError` naming it and its batch row."""
    rows: list[int] = []
    for index, file in enumerate(candidates):
        try:
            rows.append(pq.ParquetFile(file).metadata.num_rows)
        except (pa.ArrowInvalid, OSError) as exc:
            start = sum(rows) + 1
            raise DataError(
                f"{file}: not a readable Parquet file (file {index + 1} of {len(candidates)}, "
                f"batch row {start} onwards): {str(exc).splitlines()[0]}; "
                "the whole batch is rejected"
            ) from None
    return EventFiles(tuple(candidates), tuple(rows))


def _time_expr(dtype: pl.DataType, source: str) -> pl.Expr:
    col = pl.col(TIME)
    if isinstance(dtype, pl.Datetime):
        zoned = (
            col.dt.convert_time_zone("UTC") if dtype.time_zone else col.dt.replace_time_zone("UTC")
        )
        return zoned.dt.cast_time_unit("ns")
    if dtype.is_numeric():
        seconds = col.cast(pl.Float64)
        return (seconds * 1e9).round(0).cast(pl.Int64).cast(pl.Datetime("ns", "UTC"))
    if dtype == pl.String:
        return col.str.to_datetime(time_unit="ns", time_zone="UTC", strict=False)
    raise DataError(f"{source}: column 'timestamp' has type {dtype}, not a time or a number")


def _scan_file(
    path: Path, columns: ColumnMapping, default_event_type: str, first_row: int
) -> pl.LazyFrame:
    """One file as a lazy frame in the event contract plus ``_row`` (batch-wide, 0-based)."""
    mapping = columns.model_dump()
    names = set(pq.read_schema(path).names)
    missing = [
        f"{c!r} (looked for {mapping[c]!r})" for c in (USER, ITEM, TIME) if mapping[c] not in names
    ]
    if missing:
        raise DataError(f"{path}: missing required column {', '.join(missing)}")
    renames = {mapping[c]: c for c in (USER, ITEM, TIME, EVENT, VALUE) if mapping[c] in names}
    lazy = pl.scan_parquet(path).rename(renames).with_row_index(ROW, offset=first_row - 1)
    time_dtype = lazy.collect_schema()[TIME]
    event = (
        pl.col(EVENT).cast(pl.String).str.to_lowercase().fill_null(default_event_type)
        if EVENT in renames.values()
        else pl.lit(default_event_type)
    )
    value = pl.col(VALUE).cast(pl.Float64) if VALUE in renames.values() else pl.lit(None)
    return lazy.select(
        pl.col(USER).cast(pl.String),
        pl.col(ITEM).cast(pl.String),
        _time_expr(time_dtype, str(path)).alias(TIME),
        event.alias(EVENT),
        value.cast(pl.Float64).alias(VALUE),
        pl.col(ROW),
    )


def scan_events(
    files: EventFiles, columns: ColumnMapping | None = None, default_event_type: str = "interaction"
) -> pl.LazyFrame:
    """Every file of ``files`` as one lazy frame in the event contract (plus ``_row``, the
    0-based batch-wide row number). Nothing is read until the frame is collected."""
    columns = columns or ColumnMapping()
    frames = [
        _scan_file(path, columns, default_event_type, files.first_row(index))
        for index, path in enumerate(files.paths)
    ]
    return pl.concat(frames, how="vertical")


def _bad_rows(lazy: pl.LazyFrame) -> pl.LazyFrame:
    blank = pl.col(USER).is_null() | (pl.col(USER).str.strip_chars() == "")
    blank_item = pl.col(ITEM).is_null() | (pl.col(ITEM).str.strip_chars() == "")
    return lazy.filter(blank | blank_item | pl.col(TIME).is_null())


def check_files(
    files: EventFiles, columns: ColumnMapping | None = None, default_event_type: str = "interaction"
) -> None:
    """Read every file once (lazily, three columns at a time) and raise :class:`DataError`
    naming the first file and row whose user, item or time is empty or not a time.

    Any file failing means the whole batch is rejected: nothing is returned to go on with.
    """
    columns = columns or ColumnMapping()
    for index, path in enumerate(files.paths):
        start = files.first_row(index)
        try:
            lazy = _scan_file(path, columns, default_event_type, start)
            bad = _bad_rows(lazy).head(1).collect(engine="streaming")
        except pl.exceptions.PolarsError as exc:
            raise DataError(
                f"{path}: cannot be read (batch rows {start}..{start + files.rows[index] - 1}): "
                f"{str(exc).splitlines()[0]}; the whole batch is rejected"
            ) from None
        if len(bad):
            row = int(bad[ROW][0]) + 1
            column = next(
                c for c in (USER, ITEM, TIME) if bad[c][0] is None or str(bad[c][0]).strip() == ""
            )
            problem = "is not a time" if column == TIME else "is empty"
            raise DataError(
                f"{path}: column {column!r} {problem} at row {row - start + 1} of the file "
                f"(batch row {row}); the whole batch is rejected"
            )


@dataclass(frozen=True)
class Plan:
    """How the per-user work is split to stay inside the budget."""

    passes: int
    budget_mb: int
    fixed_mb: float  # vocabulary + the result (tails and split): held at the end
    pass_mb: float  # one pass's events


def plan_passes(
    n_rows: int, n_users: int, n_items: int, keep: int, budget_mb: int, row_bytes: int = ROW_BYTES
) -> Plan:
    """The fewest passes whose events fit in what the budget leaves beside the vocabulary.

    The passes spill their tails to disk, so what a pass holds and the result (every
    user's last ``keep`` events, the training sequences and leave-one-out's padded
    tensors, built after the last pass) are never in memory together. Raises
    :class:`DataError` naming ``data.memory_budget_mb`` when the vocabulary and the result
    (which no number of passes makes smaller) or one pass's share at the maximum of 4096
    passes does not fit."""
    mib = 2**20
    kept = min(n_rows, n_users * keep)
    vocabulary = BASELINE_MB + (n_users + n_items) * TOKEN_BYTES / mib
    result = (kept * TAIL_BYTES + n_users * max(keep - 2, 0) * EVAL_BYTES) / mib
    fixed = vocabulary + result
    free = budget_mb - vocabulary
    if fixed >= budget_mb:
        raise DataError(
            f"{BUDGET_KEY}={budget_mb} is too small: the vocabulary ({n_users:,} users, "
            f"{n_items:,} items), each user's last {keep} events and the split's tensors "
            f"need about {math.ceil(fixed)} MB",
            hint=f"raise it with --set {BUDGET_KEY}={math.ceil(fixed * 1.25)}",
        )
    passes = max(1, math.ceil(n_rows * row_bytes / mib / free))
    if passes > 4096:
        raise DataError(
            f"{BUDGET_KEY}={budget_mb} is too small for {n_rows:,} events "
            f"(would need {passes:,} passes over the files)",
            hint=f"raise it with --set {BUDGET_KEY}={math.ceil(fixed * 2)}",
        )
    return Plan(passes, budget_mb, round(fixed, 1), round(n_rows * row_bytes / mib / passes, 1))


def stream_vocabulary(lazy: pl.LazyFrame) -> Vocabulary:
    """Sorted unique user and item tokens (the same as :meth:`Vocabulary.from_events`)."""
    users = lazy.select(pl.col(USER).unique()).collect(engine="streaming")[USER].sort()
    items = lazy.select(pl.col(ITEM).unique()).collect(engine="streaming")[ITEM].sort()
    kinds = lazy.select(pl.col(EVENT).unique()).collect(engine="streaming")[EVENT].sort()
    return Vocabulary(tuple(users.to_list()), tuple(items.to_list()), tuple(kinds.to_list()))


def _index_frame(tokens: tuple[str, ...], name: str, column: str, offset: int) -> pl.LazyFrame:
    frame = pl.DataFrame({column: pl.Series(tokens, dtype=pl.String)})
    return frame.with_row_index(name, offset=offset).lazy()


CONTRACT_SCHEMA = pl.Schema(
    [
        (USER, pl.String()),
        (ITEM, pl.String()),
        (TIME, pl.Datetime("ns", "UTC")),
        (EVENT, pl.String()),
        (VALUE, pl.Float64()),
        (ROW, pl.UInt32()),
    ]
)


#: each user's newest event is rank 1 (an engine that computes the tails itself, Spark,
#: writes the rank so a reader restores each user's order without the input order)
RANK = "_rank"
#: a bucket of tails computed by an engine (:mod:`components.data.spark`): vocabulary
#: indices, time in ns and the rank
TAIL_SCHEMA = pl.Schema(
    [
        (USER_IDX, pl.Int64()),
        (ITEM_IDX, pl.Int64()),
        (TIME, pl.Int64()),
        (EVENT_IDX, pl.Int64()),
        (RANK, pl.Int32()),
    ]
)


@dataclass(frozen=True)
class UserBuckets:
    """A batch's events in contract form (plus ``_row``) written once by user hash:
    ``_bucket=<k>/*.parquet`` under ``directory``, ``files[k]`` the files of bucket ``k``
    and ``rows[k]`` its row count (from the footers). A user's events are all in one
    bucket, in input order. With ``schema`` :data:`TAIL_SCHEMA` the buckets hold tails an
    engine computed (:func:`tail_sequences`), in the same layout."""

    directory: Path
    files: tuple[tuple[Path, ...], ...]
    rows: tuple[int, ...]
    schema: pl.Schema = field(default_factory=lambda: CONTRACT_SCHEMA)

    @property
    def n_buckets(self) -> int:
        return len(self.rows)

    @property
    def n_rows(self) -> int:
        return int(sum(self.rows))

    def scan(self, buckets: Sequence[int] | None = None) -> pl.LazyFrame:
        """The events of ``buckets`` (all when None) as one lazy frame."""
        chosen = range(self.n_buckets) if buckets is None else buckets
        paths = [str(path) for k in chosen for path in self.files[k]]
        if not paths:
            return pl.LazyFrame(schema=self.schema)
        return pl.scan_parquet(paths, schema=self.schema)


def bucket_count(n_rows: int) -> int:
    """Buckets for ``n_rows`` events: about :data:`BUCKET_ROWS` each."""
    return max(1, math.ceil(n_rows / BUCKET_ROWS))


def _user_hash() -> pl.Expr:
    return pl.col(USER).hash(seed=0)


def user_buckets_of(tokens: Sequence[str], n_buckets: int) -> np.ndarray:
    """The bucket of each user token, as :func:`write_user_buckets` assigns it (for an
    engine that writes per-user output in the same layout)."""
    frame = pl.DataFrame({USER: pl.Series(tokens, dtype=pl.String)})
    return frame.select(_user_hash() % n_buckets)[USER].to_numpy().astype(np.int64)


def write_user_buckets(lazy: pl.LazyFrame, directory: str | Path, n_buckets: int) -> UserBuckets:
    """Write the contract frame ``lazy`` (from :func:`scan_events`) once, partitioned by
    ``hash(user_id) % n_buckets``, with polars' streaming partitioned sink (memory
    bounded by the sink's buffers, not by the data). ``directory`` must not exist."""
    directory = Path(directory)
    directory.mkdir(parents=True)
    key = (_user_hash() % n_buckets).cast(pl.UInt32).alias(BUCKET)
    lazy.with_columns(pl.col(ROW).cast(pl.UInt32), key).sink_parquet(
        pl.PartitionBy(str(directory), key=BUCKET, include_key=False), mkdir=True
    )
    return read_user_buckets(directory, n_buckets)


def read_user_buckets(
    directory: str | Path,
    n_buckets: int,
    only: Sequence[int] | None = None,
    schema: pl.Schema = CONTRACT_SCHEMA,
) -> UserBuckets:
    """The buckets written by :func:`write_user_buckets` in ``directory`` (``only`` those
    buckets when given: the others read as empty and their files are never opened)."""
    directory = Path(directory)
    chosen = set(range(n_buckets) if only is None else only)
    files = tuple(
        tuple(sorted((directory / f"{BUCKET}={k}").glob("*.parquet"))) if k in chosen else ()
        for k in range(n_buckets)
    )
    rows = tuple(sum(pq.ParquetFile(path).metadata.num_rows for path in bucket) for bucket in files)
    return UserBuckets(directory, files, rows, schema)


@contextmanager
def staged_buckets(
    lazy: pl.LazyFrame, n_rows: int, parent: str | Path | None = None
) -> Iterator[UserBuckets]:
    """:func:`write_user_buckets` into a private folder under ``parent`` (the system's
    temporary folder by default), removed on exit."""
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recops-buckets-", dir=parent) as tmp:
        yield write_user_buckets(lazy, Path(tmp) / "buckets", bucket_count(n_rows))


@dataclass(frozen=True)
class Shard:
    """One rank's share of the users under data-parallel training (``world`` ranks):
    the user buckets ``k`` with ``k % world == rank``, so the ranks' users are disjoint
    and together all users."""

    rank: int
    world: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise DataError(f"rank {self.rank} is not in 0..{self.world - 1}")

    def buckets(self, n_buckets: int) -> list[int]:
        return list(range(self.rank, n_buckets, self.world))


def shared_buckets(
    write: Callable[[Path, int], object],
    n_rows: int,
    directory: str | Path,
    shard: Shard,
    schema: pl.Schema = CONTRACT_SCHEMA,
) -> UserBuckets:
    """``shard``'s buckets, written into ``directory`` once for all the ranks by
    ``write(directory, n_buckets)`` (:func:`write_user_buckets` of the events, or an
    engine's tails) with a multiple of ``shard.world`` buckets, so the shares are even:
    the first rank writes under a file lock, the others wait and read what it wrote
    (``_done`` marks a complete folder). Only the shard's own bucket files are opened."""
    from filelock import FileLock

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    n_buckets = math.ceil(bucket_count(n_rows) / shard.world) * shard.world
    done = directory / "_done"
    with FileLock(str(directory) + ".lock"):
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)
            write(directory, n_buckets)
            done.write_text(str(n_buckets))
    n_buckets = int(done.read_text())
    return read_user_buckets(directory, n_buckets, shard.buckets(n_buckets), schema)


def user_passes(source: pl.LazyFrame | UserBuckets, passes: int) -> Iterator[pl.LazyFrame]:
    """``passes`` lazy frames that split the users of ``source`` (each user in exactly
    one), for work that must hold a pass in memory.

    From :class:`UserBuckets` a pass reads only its own buckets (contiguous runs of
    buckets; when there are more passes than buckets, each bucket is split further by
    the user hash). From a plain lazy frame every pass reads everything and keeps the
    users hashing to it."""
    if isinstance(source, pl.LazyFrame):
        for part in range(passes):
            yield source.filter(_user_hash() % passes == part) if passes > 1 else source
        return
    if passes <= source.n_buckets:
        for group in np.array_split(np.arange(source.n_buckets), passes):
            yield source.scan(group.tolist())
        return
    split = math.ceil(passes / source.n_buckets)
    for bucket in range(source.n_buckets):
        for sub in range(split):
            share = (_user_hash() // source.n_buckets) % split == sub
            yield source.scan([bucket]).filter(share)


def _tails_of_pass(
    chosen: pl.LazyFrame,
    vocab_frames: tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame],
    keep: int,
) -> pl.DataFrame:
    """(user index, item index, time ns) of the last ``keep`` events of every user in
    the pass ``chosen``, ordered by user then (time, input order).

    The scan and the id joins stream; the pass's integer rows are then sorted in memory
    (the join does not keep row order, so order is restored from time and row number)."""
    users, items, kinds = vocab_frames
    rows = (
        chosen.select(USER, ITEM, TIME, EVENT, ROW)
        .join(users, on=USER, how="left")
        .join(items, on=ITEM, how="left")
        .join(kinds, on=EVENT, how="left")
        .select(
            pl.col(USER_IDX).cast(pl.Int64),
            pl.col(ITEM_IDX).cast(pl.Int64),
            pl.col(EVENT_IDX).cast(pl.Int64),
            pl.col(TIME).dt.epoch("ns").alias(TIME),
            pl.col(ROW),
        )
        .collect(engine="streaming")
        .sort([USER_IDX, TIME, ROW])
    )
    user = rows[USER_IDX].to_numpy()
    ends = np.searchsorted(user, user, side="right")
    from_end = ends - 1 - np.arange(len(user))
    return rows.filter(pl.Series(from_end < keep)).drop(ROW)


def stream_sequences(
    source: pl.LazyFrame | UserBuckets, vocab: Vocabulary, keep: int, passes: int
) -> Sequences:
    """Each vocabulary user's last ``keep`` events as CSR sequences, in ``passes`` passes
    (users of the vocabulary with no event in ``source`` get empty sequences).

    Each pass's tails are spilled to a temporary folder (so no pass is in memory beside
    the result), and the result arrays are then allocated once and filled pass by pass:
    no concatenation of every pass and no global sort (each user lies in one pass, sorted
    there)."""
    frames = (
        _index_frame(vocab.users, USER_IDX, USER, 0),
        _index_frame(vocab.items, ITEM_IDX, ITEM, 1),
        _index_frame(vocab.event_types, EVENT_IDX, EVENT, 1),
    )
    tails = (_tails_of_pass(chosen, frames, keep) for chosen in user_passes(source, passes))
    return _assembled(tails, vocab)


def tail_sequences(tails: UserBuckets, vocab: Vocabulary, passes: int) -> Sequences:
    """CSR sequences from tails an engine computed and wrote in the user-bucket layout
    (:data:`TAIL_SCHEMA`), read in at most ``passes`` passes of whole buckets: each pass
    is ordered by user, oldest event first (highest rank first), then assembled as
    :func:`stream_sequences` does. Users with no tails read get empty sequences."""
    chosen = user_passes(tails, max(1, min(passes, tails.n_buckets)))
    oldest_first = (
        group.sort([USER_IDX, RANK], descending=[False, True]).collect() for group in chosen
    )
    return _assembled(oldest_first, vocab)


def _assembled(tails: Iterator[pl.DataFrame], vocab: Vocabulary) -> Sequences:
    """Per-pass tails (each ordered by user then time, every user in one pass) spilled
    to a temporary folder one pass at a time, then copied into the result."""
    with tempfile.TemporaryDirectory(prefix="recops-tails-") as spill:
        stored = [
            _spill(_tail_arrays(pass_tails), Path(spill), n) for n, pass_tails in enumerate(tails)
        ]
        return _fill_sequences(stored, vocab)


_TAIL_COLUMNS = (USER_IDX, ITEM_IDX, TIME, EVENT_IDX)


def _tail_arrays(tails: pl.DataFrame) -> dict[str, np.ndarray]:
    return {name: tails[name].to_numpy() for name in _TAIL_COLUMNS}


def _spill(arrays: dict[str, np.ndarray], folder: Path, part: int) -> dict[str, Path]:
    """Save one pass's tail arrays; their files, each mapped only while it is read
    (:func:`_mapped`), so no pass stays resident beside the result."""
    out = {}
    for name, values in arrays.items():
        out[name] = folder / f"{part}{name}.npy"
        np.save(out[name], values)
    log.debug("pass %d: %d tail events spilled", part, len(arrays[USER_IDX]))
    return out


def _mapped(part: dict[str, Path], name: str) -> np.ndarray:
    """One spilled column, memory-mapped read-only (unmapped when the array is dropped)."""
    return np.load(part[name], mmap_mode="r")


def _fill_sequences(parts: list[dict[str, Path]], vocab: Vocabulary) -> Sequences:
    """CSR sequences from per-pass tails, each sorted by user (then time), every user in
    one pass: the result arrays are allocated once and each pass is copied into place."""
    counts = np.zeros(vocab.n_users, dtype=np.int64)
    for part in parts:
        counts += np.bincount(_mapped(part, USER_IDX), minlength=vocab.n_users)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    values = np.empty(total, dtype=np.int64)
    times = np.empty(total, dtype=np.int64)
    kinds = np.empty(total, dtype=np.int64) if vocab.event_types else None
    for part in parts:
        users = _mapped(part, USER_IDX)
        at = offsets[users] + np.arange(len(users)) - np.searchsorted(users, users, side="left")
        del users
        values[at] = _mapped(part, ITEM_IDX)
        times[at] = _mapped(part, TIME)
        if kinds is not None:
            kinds[at] = _mapped(part, EVENT_IDX)
    return Sequences(values, offsets, times, kinds)


def csr_sequences(
    users: np.ndarray, items: np.ndarray, times: np.ndarray, kinds: np.ndarray, vocab: Vocabulary
) -> Sequences:
    """CSR sequences from tail events already in time order inside each user (users may
    interleave, as passes and partitions return them); ``kinds`` are event-type indices."""
    order = np.argsort(users, kind="stable")
    counts = np.bincount(users, minlength=vocab.n_users)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    events = kinds[order].astype(np.int64) if vocab.event_types else None
    return Sequences(items[order], offsets, times[order].astype(np.int64), events)


def require_leave_one_out(cfg: DataConfig, engine: str) -> None:
    """The engines without a frame of all events build leave-one-out splits only (a
    temporal split needs a global time quantile they do not compute yet)."""
    if cfg.split != "leave_one_out":
        raise DataError(
            f"data.engine={engine} supports data.split=leave_one_out only",
            hint="use data.engine=memory for a temporal split",
        )


def require_bucket_dir(shard: Shard | None, bucket_dir: str | Path | None) -> None:
    """A data-parallel rank's read (``shard``) needs the folder the ranks share."""
    if shard is not None and bucket_dir is None:
        raise DataError("a sharded read needs the folder the ranks share (bucket_dir)")


def tail_length(cfg: DataConfig) -> int:
    """Events kept per user: leave-one-out's two targets plus a training window of
    ``max_len + 1`` items."""
    return cfg.max_len + 3


def stream_prepare(
    path: str | Path,
    cfg: DataConfig,
    catalogue: pd.DataFrame | None = None,
    *,
    shard: Shard | None = None,
    bucket_dir: str | Path | None = None,
) -> PreparedData:
    """Vocabulary, per-user tails and the leave-one-out split of the Parquet file or
    directory ``path``, in memory bounded by ``data.memory_budget_mb``.

    With ``shard`` (a data-parallel rank) the vocabulary is still every user and item
    (all ranks index alike), but sequences and split hold only the shard's users, read
    from its own user buckets: the batch is bucketed once into ``bucket_dir`` (shared by
    the ranks, :func:`shared_buckets`) and each rank reads only its buckets.

    Raises :class:`DataError` for an unreadable file (naming it and the row; the whole
    batch is rejected), a budget too small (naming the config key) or a temporal split
    (which needs a global time quantile this path does not compute yet)."""
    require_leave_one_out(cfg, "stream")
    files = list_event_files(path)
    check_files(files, cfg.columns, cfg.default_event_type)
    lazy = scan_events(files, cfg.columns, cfg.default_event_type)
    vocab = stream_vocabulary(lazy)
    if vocab.n_users == 0:
        raise DataError(f"{path}: the dataset has no events")
    vocab, catalogue, report = checked_catalogue(vocab, catalogue)
    keep = tail_length(cfg)
    plan = plan_passes(files.n_rows, vocab.n_users, vocab.n_items, keep, cfg.memory_budget_mb)
    log.info(
        "%s: %d events in %d file(s), %d pass(es) within %s=%d",
        path,
        files.n_rows,
        len(files.paths),
        plan.passes,
        BUDGET_KEY,
        cfg.memory_budget_mb,
    )
    require_bucket_dir(shard, bucket_dir)
    if shard is not None and bucket_dir is not None:
        mine = shared_buckets(partial(write_user_buckets, lazy), files.n_rows, bucket_dir, shard)
        seqs = stream_sequences(mine, vocab, keep, plan.passes)
    elif plan.passes == 1:
        seqs = stream_sequences(lazy, vocab, keep, 1)
    else:
        with staged_buckets(lazy, files.n_rows, cfg.bucket_dir) as buckets:
            seqs = stream_sequences(buckets, vocab, keep, plan.passes)
    split = leave_one_out(seqs, vocab.n_items, cfg.max_len, cfg.min_user_events)
    return PreparedData(vocab, seqs, split, catalogue, report, sharded=shard is not None)
