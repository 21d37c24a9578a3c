"""Loaders: real event formats -> the event contract (:mod:`components.data.schema`).

Formats (``fmt``):

- ``csv`` / ``parquet``: generic tables; contract columns found by a :class:`ColumnMapping`.
- ``recbole``: RecBole atomic ``.inter`` (``user_id:token item_id:token rating:float
  timestamp:float``), with ``.item``/``.user`` side files beside it (:func:`load_side_tables`).
- ``seq``: one user per line, ``user i1 i2 ...`` in time order (e.g. Amazon Beauty).
- ``pairs``: one ``user item`` per line, in time order (the SASRec format).
- ``movielens``: ``ratings.dat`` (ml-1m, ``::``) or ``ratings.csv`` (ml-20m/25m).
- ``auto``: guessed from the file name and its first line.

``seq`` and ``pairs`` carry no time: they get **ordinal timestamps** (one second apart,
from 2020-01-01 UTC) that preserve each user's order; the frame's ``attrs["ordinal_time"]`` is
True and a warning is logged. Reading is done by pyarrow/polars, never by Python loops over
rows. Every failure raises :class:`DataError` naming the file (and line/column when known).
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from components.data.config import ColumnMapping, InputFormat
from components.data.schema import ITEM, TIME, USER, normalize_events
from components.errors import DataError

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "parquet", "recbole", "seq", "pairs", "movielens")
_SNIFF_BYTES = 64 * 1024
ORDINAL_EPOCH = pd.Timestamp("2020-01-01", tz="UTC")


@dataclass(frozen=True)
class SideTables:
    """Optional side information: one row per item / per user, keyed by raw id."""

    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")


def _head(path: Path, n_bytes: int = _SNIFF_BYTES) -> str:
    with path.open("rb") as fh:
        return fh.read(n_bytes).decode("utf-8", errors="replace")


def _first_lines(path: Path, n: int = 20) -> list[str]:
    return [line for line in _head(path).splitlines()[:n] if line.strip()]


def detect_format(path: str | Path) -> InputFormat:
    """Guess the input format from the file name and its first lines."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")) or (path.is_dir() and any(path.rglob("*.parquet"))):
        return "parquet"
    if name.endswith(".inter"):
        return "recbole"
    if name == "ratings.dat" or (name.endswith(".dat") and "::" in _head(path, 4096)):
        return "movielens"
    _check_file(path)
    lines = _first_lines(path)
    if not lines:
        raise DataError(f"{path}: file is empty")
    if name.endswith(".csv"):
        header = lines[0].lower()
        return "movielens" if header.startswith("userid,movieid") else "csv"
    if ":token" in lines[0]:
        return "recbole"
    widths = {len(line.split()) for line in lines}
    if widths == {2} and all(re.fullmatch(r"\S+\s+\S+", ln.strip()) for ln in lines):
        return "pairs"
    if all(re.fullmatch(r"[\w.\-]+(\s+[\w.\-]+)+", ln.strip()) for ln in lines) and not any(
        c in lines[0] for c in ",;|"
    ):
        return "seq"
    return "csv"


def _sniff_delimiter(path: Path) -> str:
    lines = _first_lines(path, 50)
    sample = "\n".join(lines)
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",\t;|")
        delim = dialect.delimiter
    except csv.Error:
        delim = ","
    counts = {line.count(delim) for line in lines}
    if len(counts) > 1:
        bad = next(i for i, line in enumerate(lines) if line.count(delim) != lines[0].count(delim))
        raise DataError(
            f"{path}: line {bad + 1} has a different number of {delim!r}-separated fields "
            f"than the header (mixed delimiters?): {lines[bad][:80]!r}"
        )
    return delim


def _read_csv_table(path: Path, delimiter: str, **kwargs) -> pa.Table:
    try:
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False, **kwargs),
        )
    except pa.ArrowInvalid as exc:
        message = str(exc).splitlines()[0]
        raise DataError(
            f"{path}: cannot parse as {delimiter!r}-separated text: {message}"
        ) from None


def _finish(frame: pd.DataFrame, path: Path, mapping: dict[str, str | None], **kw) -> pd.DataFrame:
    if len(frame) == 0:
        raise DataError(f"{path}: file has a header but no events")
    return normalize_events(frame, source=str(path), columns=mapping, **kw)


def _mapping(columns: ColumnMapping | None) -> dict[str, str | None]:
    return (columns or ColumnMapping()).model_dump()


def load_csv(path: Path, columns: ColumnMapping | None, default_event_type: str) -> pd.DataFrame:
    """Generic delimited text with a header row; delimiter sniffed (, tab ; |)."""
    _check_file(path)
    delim = _sniff_delimiter(path)
    mapping = _mapping(columns)
    text_cols = [c for c in (mapping["user_id"], mapping["item_id"]) if c]
    table = _read_csv_table(path, delim, column_types={c: pa.string() for c in text_cols})
    return _finish(table.to_pandas(), path, mapping, default_event_type=default_event_type)


def load_parquet(
    path: Path, columns: ColumnMapping | None, default_event_type: str
) -> pd.DataFrame:
    """Parquet file or dataset directory."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        from components.data.stream import list_event_files

        list_event_files(path)  # a corrupt part is named with its batch row, not just the folder
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(
            f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}"
        ) from None
    return _finish(
        table.to_pandas(), path, _mapping(columns), default_event_type=default_event_type
    )


def _read_atomic(path: Path) -> pd.DataFrame:
    """A RecBole atomic file with ``name:type`` headers; types stripped from the names."""
    _check_file(path)
    header = _first_lines(path, 1)[0].split("\t")
    names = [h.split(":")[0] for h in header]
    types = {h.split(":")[0]: (h.split(":")[1] if ":" in h else "token") for h in header}
    column_types = {n: (pa.float64() if t == "float" else pa.string()) for n, t in types.items()}
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types=column_types),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: not a RecBole atomic file: {str(exc).splitlines()[0]}") from None
    return table.to_pandas()


def load_recbole(path: Path, default_event_type: str) -> pd.DataFrame:
    """RecBole ``.inter`` file; ``rating`` becomes ``value`` with event type ``rating``."""
    frame = _read_atomic(path)
    has_rating = "rating" in frame.columns
    if "timestamp" not in frame.columns:
        raise DataError(f"{path}: missing required column 'timestamp:float'")
    mapping = {
        "user_id": "user_id",
        "item_id": "item_id",
        "timestamp": "timestamp",
        "event_type": None,
        "value": "rating" if has_rating else None,
    }
    return _finish(
        frame, path, mapping, default_event_type="rating" if has_rating else default_event_type
    )


def _ordinal(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Give time-less events one-second-apart timestamps in each user's order."""
    ordinal = frame.groupby(USER, sort=False).cumcount().to_numpy()
    frame["timestamp"] = ORDINAL_EPOCH + pd.to_timedelta(ordinal, unit="s")
    log.warning("%s has no timestamps: using ordinal times that preserve each user's order", path)
    return frame


def load_seq(path: Path, default_event_type: str) -> pd.DataFrame:
    """One user per line: ``user item1 item2 ...`` (items in time order)."""
    _check_file(path)
    try:
        lines = pl.read_csv(
            path,
            has_header=False,
            separator="\x1f",
            new_columns=["line"],
            quote_char=None,
            schema_overrides={"line": pl.String},
        )
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: cannot read as one-sequence-per-line text: {exc}") from None
    tokens = lines.with_row_index("line_no", offset=1).with_columns(
        pl.col("line").str.strip_chars().str.split(" ")
    )
    short = tokens.filter(pl.col("line").list.len() < 2)
    if len(short):
        raise DataError(
            f"{path}: line {short['line_no'][0]} has a user but no items (expected 'user i1 i2 ...')"
        )
    exploded = (
        tokens.select(
            pl.col("line").list.first().alias(USER),
            pl.col("line").list.slice(1).alias(ITEM),
        )
        .explode(ITEM)
        .filter(pl.col(ITEM) != "")
    )
    frame = exploded.to_pandas()
    frame = _ordinal(frame, path)
    out = normalize_events(frame, source=str(path), default_event_type=default_event_type)
    out.attrs["ordinal_time"] = True
    return out


def load_pairs(path: Path, default_event_type: str) -> pd.DataFrame:
    """One ``user item`` pair per line, in time order (SASRec's data format)."""
    _check_file(path)
    delim = "\t" if "\t" in _first_lines(path, 1)[0] else " "
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=[USER, ITEM]),
            parse_options=pacsv.ParseOptions(delimiter=delim),
            convert_options=pacsv.ConvertOptions(
                column_types={USER: pa.string(), ITEM: pa.string()}
            ),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(
            f"{path}: expected 'user item' per line: {str(exc).splitlines()[0]}"
        ) from None
    frame = _ordinal(table.to_pandas(), path)
    out = normalize_events(frame, source=str(path), default_event_type=default_event_type)
    out.attrs["ordinal_time"] = True
    return out


def load_movielens(path: Path) -> pd.DataFrame:
    """``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) or ``ratings.csv``."""
    _check_file(path)
    names = ["user_id", "item_id", "rating", "timestamp"]
    if path.suffix == ".dat":
        text = pl.read_csv(
            path,
            has_header=False,
            separator="\x1f",
            new_columns=["line"],
            quote_char=None,
            schema_overrides={"line": pl.String},
        )
        parts = text.select(pl.col("line").str.split("::"))
        bad = parts.with_row_index("n", offset=1).filter(pl.col("line").list.len() != 4)
        if len(bad):
            raise DataError(f"{path}: line {bad['n'][0]} does not have 4 '::'-separated fields")
        frame = parts.select(pl.col("line").list.to_struct(fields=names)).unnest("line").to_pandas()
    else:
        table = _read_csv_table(
            path, ",", column_types={"userId": pa.string(), "movieId": pa.string()}
        )
        frame = table.to_pandas().rename(columns={"userId": "user_id", "movieId": "item_id"})
    mapping = {
        "user_id": "user_id",
        "item_id": "item_id",
        "timestamp": "timestamp",
        "event_type": None,
        "value": "rating",
    }
    return _finish(frame, path, mapping, default_event_type="rating")


def load_events(
    path: str | Path,
    fmt: InputFormat | str = "auto",
    *,
    columns: ColumnMapping | None = None,
    default_event_type: str = "interaction",
) -> pd.DataFrame:
    """Load ``path`` in format ``fmt`` (or a guessed one) into the event contract."""
    path = Path(path)
    chosen = detect_format(path) if fmt == "auto" else fmt
    if chosen not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(('auto',) + FORMATS)}")
    if chosen == "csv":
        events = load_csv(path, columns, default_event_type)
    elif chosen == "parquet":
        events = load_parquet(path, columns, default_event_type)
    elif chosen == "recbole":
        events = load_recbole(path, default_event_type)
    elif chosen == "seq":
        events = load_seq(path, default_event_type)
    elif chosen == "pairs":
        events = load_pairs(path, default_event_type)
    else:
        events = load_movielens(path)
    events.attrs["format"] = chosen
    events.attrs["source"] = str(path)
    log.info("loaded %d events from %s (format %s)", len(events), path, chosen)
    return events


def load_side_tables(path: str | Path) -> SideTables:
    """Side tables beside a RecBole ``.inter`` file (``.item``, ``.user``), when present.

    Item tables get ``title`` and ``genres`` columns where the file has them (ml-100k:
    ``movie_title`` and ``class``); ids stay raw string tokens.
    """
    path = Path(path)
    stem = path.with_suffix("")
    items = users = None
    item_file, user_file = stem.with_suffix(".item"), stem.with_suffix(".user")
    if item_file.exists():
        items = _read_atomic(item_file).rename(columns={"movie_title": "title", "class": "genres"})
    if user_file.exists():
        users = _read_atomic(user_file)
    return SideTables(items=items, users=users)


def describe(events: pd.DataFrame) -> dict[str, float | int | str]:
    """Events, users, items, time span and sequence-length quantiles of a contract frame."""
    lengths = events.groupby(USER, sort=False).size().to_numpy()
    q = np.quantile(lengths, [0.5, 0.9, 0.99]) if len(lengths) else np.zeros(3)
    return {
        "events": int(len(events)),
        "users": int(events[USER].nunique()),
        "items": int(events[ITEM].nunique()),
        "time_start": str(events[TIME].min()) if len(events) else "",
        "time_end": str(events[TIME].max()) if len(events) else "",
        "ordinal_time": bool(events.attrs.get("ordinal_time", False)),
        "seq_len_min": int(lengths.min()) if len(lengths) else 0,
        "seq_len_p50": float(q[0]),
        "seq_len_p90": float(q[1]),
        "seq_len_p99": float(q[2]),
        "seq_len_max": int(lengths.max()) if len(lengths) else 0,
    }
