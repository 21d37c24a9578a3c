"""The event contract: the one table shape every recops stage speaks.

Columns (in this order, side columns after):

============  ==========================  ==========================================
column        dtype                        meaning
============  ==========================  ==========================================
user_id       string (pyarrow)            raw user token, never null
item_id       string (pyarrow)            raw item token, never null
timestamp     datetime64[ns, UTC]         when the event happened (UTC)
event_type    string (pyarrow)            view / click / cart / purchase / rating / ...
value         float64 (nullable)          rating, price, dwell time...; NaN when absent
============  ==========================  ==========================================

Loaders produce it (:func:`normalize_events`), GX checks it, everything downstream
consumes only it. Order inside a user is (timestamp, original row order): a stable sort.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from components.errors import DataError

USER = "user_id"
ITEM = "item_id"
TIME = "timestamp"
EVENT = "event_type"
VALUE = "value"
CONTRACT_COLUMNS: tuple[str, ...] = (USER, ITEM, TIME, EVENT, VALUE)
REQUIRED_COLUMNS: tuple[str, ...] = (USER, ITEM, TIME)

STRING_DTYPE = pd.ArrowDtype(__import__("pyarrow").string())


def _as_string(series: pd.Series, column: str, source: str) -> pd.Series:
    missing = series.isna()
    numeric = pd.api.types.is_numeric_dtype(series)
    text = None if numeric else series.astype(str)
    if text is not None:  # numbers cannot be blank: their text is made once, below
        missing |= text.str.strip() == ""
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise DataError(f"{source}: column {column!r} is empty at data row {row + 1}")
    if text is None:
        whole = pd.api.types.is_float_dtype(series) and bool((series % 1 == 0).all())
        text = (series.astype("int64") if whole else series).astype(str)
    return text.astype(STRING_DTYPE)


def parse_timestamps(series: pd.Series, source: str, unit: str | None = None) -> pd.Series:
    """Parse numbers (unix seconds unless ``unit``) or ISO strings into UTC datetimes.

    Raises :class:`DataError` naming the first row that cannot be parsed.
    """
    if pd.api.types.is_datetime64_any_dtype(series):
        parsed = pd.to_datetime(series, utc=True)
    elif pd.api.types.is_numeric_dtype(series):
        if series.isna().any():
            row = int(np.flatnonzero(series.isna().to_numpy())[0])
            raise DataError(f"{source}: column 'timestamp' is empty at data row {row + 1}")
        parsed = _from_numbers(series.astype("float64"), unit or "s")
        _raise_on_missing(parsed, series, source)
    else:
        numeric = pd.to_numeric(series, errors="coerce")
        if numeric.notna().all():
            return parse_timestamps(numeric, source, unit)
        text = series.where(numeric.isna())
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
        parsed = parsed.fillna(_from_numbers(numeric, unit or "s"))
        _raise_on_missing(parsed, series, source)
    return parsed.astype("datetime64[ns, UTC]")


def _from_numbers(numbers: pd.Series, unit: str) -> pd.Series:
    """UTC datetimes from numbers in ``unit``; NaN and numbers outside the datetime range
    (year 1677..2262, e.g. milliseconds read as seconds) become NaT. pandas raises
    OutOfBoundsDatetime or, under its own overflow check, FloatingPointError for those."""
    limit = np.iinfo(np.int64).max / pd.Timedelta(1, unit=unit).value
    in_range = (numbers.abs() < limit).to_numpy()  # NaN compares False
    parsed = pd.Series(pd.NaT, index=numbers.index, dtype="datetime64[ns, UTC]")
    if in_range.any():
        # Only finite numbers reach pandas: with NaN among them pandas 2.x rounds an
        # uninitialised buffer and may raise FloatingPointError at random (pandas #58419).
        parsed[in_range] = pd.to_datetime(numbers[in_range], unit=unit, utc=True)
    return parsed


def _raise_on_missing(parsed: pd.Series, series: pd.Series, source: str) -> None:
    """A DataError naming the first row whose time could not be parsed (or is out of range)."""
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: column 'timestamp' has a value that is not a time (or is outside "
            f"1677..2262) at data row {row + 1}: {series.iloc[row]!r}"
        )


def normalize_events(
    frame: pd.DataFrame,
    *,
    source: str,
    columns: Mapping[str, str | None] | None = None,
    default_event_type: str = "interaction",
    timestamp_unit: str | None = None,
) -> pd.DataFrame:
    """Rename, type and order ``frame`` into the event contract.

    ``columns`` maps contract names to the input's names (``None`` = absent). Missing
    required columns raise :class:`DataError` naming the file and the column. Extra
    columns are kept as side columns after the contract columns.
    """
    mapping: dict[str, str | None] = {name: name for name in CONTRACT_COLUMNS}
    if columns:
        mapping.update(columns)
    missing = [
        f"{name!r} (looked for {mapping[name]!r})"
        for name in REQUIRED_COLUMNS
        if mapping.get(name) is None or mapping[name] not in frame.columns
    ]
    if missing:
        raise DataError(
            f"{source}: missing required column {', '.join(missing)}; "
            f"found columns {list(frame.columns)}",
            hint="map your column names with --set data.columns.user_id=YourName (and item_id, timestamp, ...)",
        )
    used = {mapping[n] for n in CONTRACT_COLUMNS if mapping.get(n) in frame.columns}
    out = pd.DataFrame(
        {
            USER: _as_string(frame[mapping[USER]], USER, source),
            ITEM: _as_string(frame[mapping[ITEM]], ITEM, source),
            TIME: parse_timestamps(frame[mapping[TIME]], source, timestamp_unit),
        }
    )
    event_col = mapping.get(EVENT)
    if event_col and event_col in frame.columns:
        out[EVENT] = frame[event_col].fillna(default_event_type).astype(str).str.lower()
        out[EVENT] = out[EVENT].astype(STRING_DTYPE)
    else:
        out[EVENT] = pd.Series([default_event_type] * len(frame), dtype=STRING_DTYPE)
    value_col = mapping.get(VALUE)
    if value_col and value_col in frame.columns:
        values = pd.to_numeric(frame[value_col], errors="coerce")
        bad = values.isna() & frame[value_col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{source}: column {value_col!r} is not numeric at data row {row + 1}: "
                f"{frame[value_col].iloc[row]!r}"
            )
        out[VALUE] = values.astype("float64")
    else:
        out[VALUE] = np.nan
    for extra in frame.columns:
        if extra not in used and extra not in out.columns:
            out[extra] = frame[extra].to_numpy()
    return out.reset_index(drop=True)


def sort_events(events: pd.DataFrame) -> pd.DataFrame:
    """Events ordered by (user, timestamp), stable so same-time events keep input order."""
    return events.sort_values([USER, TIME], kind="stable").reset_index(drop=True)


def empty_events() -> pd.DataFrame:
    """A zero-row frame with the contract's columns and dtypes."""
    return pd.DataFrame(
        {
            USER: pd.Series([], dtype=STRING_DTYPE),
            ITEM: pd.Series([], dtype=STRING_DTYPE),
            TIME: pd.Series([], dtype="datetime64[ns, UTC]"),
            EVENT: pd.Series([], dtype=STRING_DTYPE),
            VALUE: pd.Series([], dtype="float64"),
        }
    )
