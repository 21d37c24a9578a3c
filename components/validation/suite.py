"""The event-contract expectation suite, kept in code.

Two GX suites:

- ``recops_events`` runs on the rows of a batch (chunk by chunk for large batches). It sees
  the contract columns plus three derived columns added by :func:`with_derived_columns`:
  ``timestamp_utc`` (the timestamp parsed to UTC, null when unparseable), ``is_duplicate``
  (the row repeats an earlier (user, item, timestamp, event_type) of the same batch) and,
  when a catalogue is given, ``item_in_catalogue``.
- ``recops_batch_drift`` runs on a one-row summary of the batch (volume and active-user
  ratios against the previous accepted batch).

Every expectation carries ``meta.check``: the stable name reports and messages use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from components.data.schema import EVENT, ITEM, TIME, USER, VALUE
from components.validation.config import ValidationConfig

EVENTS_SUITE = "recops_events"
DRIFT_SUITE = "recops_batch_drift"
TS_UTC = "timestamp_utc"
IS_DUP = "is_duplicate"
IN_CATALOGUE = "item_in_catalogue"
VOLUME_RATIO = "volume_ratio"
USER_RATIO = "active_user_ratio"
REQUIRED = (USER, ITEM, TIME, EVENT)
#: the id type of chunks read from Parquet by polars: ids (and event types) reach GX as
#: pandas categoricals. GX fingerprints every pandas batch under 1 GB by hashing all of
#: it, and hashing Arrow-backed strings cost ~0.8 s per million rows and column (over
#: half of the suite's time); a categorical hashes its categories once and then integer
#: codes. The ids are strings by construction there (the scan casts them to String);
#: the check then confirms the encoding.
ENCODED_IDS = "CategoricalDtypeType"
DUPLICATE_KEY = (USER, ITEM, TIME, EVENT)
#: the id, time and value types of a Spark frame (Spark SQL type names), in the order of
#: ``event_expectations``' ``id_type``, ``time_type`` and ``value_type``
SPARK_TYPES = ("StringType", "TimestampType", "DoubleType")


@dataclass(frozen=True)
class CheckSpec:
    """How to merge one row-level expectation over chunks.

    ``kind``: ``map`` (per-row; merged by summing unexpected counts, then ``mostly``),
    ``rows`` (table row count; merged by summing), ``schema`` (column presence or dtype;
    merged by requiring every chunk to succeed).
    """

    check: str
    kind: str
    mostly: float | None = None
    min_value: float | None = None


def future_bound(cfg: ValidationConfig, now: datetime | None = None) -> pd.Timestamp:
    """Latest acceptable event time: now plus the configured tolerance (UTC)."""
    now = now or datetime.now(timezone.utc)
    return pd.Timestamp(now + timedelta(hours=cfg.future_tolerance_hours)).tz_convert("UTC")


def event_expectations(
    cfg: ValidationConfig,
    *,
    with_catalogue: bool,
    with_value: bool = True,
    now: datetime | None = None,
    id_type: str = "str",
    time_type: str = "Timestamp",
    value_type: str = "float64",
) -> list:
    """The row-level expectations (GX objects) of the event contract.

    ``id_type`` is the pandas type the id columns reach GX as: ``str``, or
    ``CategoricalDtypeType`` for the file path's dictionary-encoded chunks
    (:data:`ENCODED_IDS`). On GX's Spark datasource the types are Spark's
    (:data:`SPARK_TYPES`)."""
    import great_expectations.expectations as gxe

    def meta(check: str) -> dict[str, str]:
        return {"check": check}

    exps: list = [gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows, meta=meta("min_rows"))]
    for col in REQUIRED:
        exps.append(gxe.ExpectColumnToExist(column=col, meta=meta(f"column_present_{col}")))
    exps += [
        gxe.ExpectColumnValuesToBeOfType(
            column=USER, type_=id_type, meta=meta("user_id_is_string")
        ),
        gxe.ExpectColumnValuesToBeOfType(
            column=ITEM, type_=id_type, meta=meta("item_id_is_string")
        ),
        gxe.ExpectColumnValuesToBeOfType(
            column=TIME, type_=time_type, meta=meta("timestamp_is_utc_datetime")
        ),
        gxe.ExpectColumnValuesToNotBeNull(column=USER, meta=meta("user_id_not_null")),
        gxe.ExpectColumnValuesToNotBeNull(column=ITEM, meta=meta("item_id_not_null")),
        gxe.ExpectColumnValuesToNotBeNull(column=TS_UTC, meta=meta("timestamp_parseable")),
        gxe.ExpectColumnValuesToBeBetween(
            column=TS_UTC, max_value=future_bound(cfg, now), meta=meta("timestamp_not_in_future")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column=TS_UTC,
            min_value=pd.Timestamp(cfg.timestamp_floor).tz_convert("UTC"),
            meta=meta("timestamp_after_floor"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=EVENT, value_set=list(cfg.event_types), meta=meta("event_type_known")
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=IS_DUP,
            value_set=[False],
            mostly=1.0 - cfg.max_duplicate_share,
            meta=meta("duplicate_share_below_threshold"),
        ),
    ]
    if with_value:
        exps.append(
            gxe.ExpectColumnValuesToBeOfType(
                column=VALUE, type_=value_type, meta=meta("value_is_float")
            )
        )
    if with_catalogue:
        exps.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=IN_CATALOGUE,
                value_set=[True],
                mostly=1.0 - cfg.max_unknown_item_share,
                meta=meta("unknown_item_share_below_threshold"),
            )
        )
    return exps


def drift_expectations(cfg: ValidationConfig) -> list:
    """Summary-row expectations: volume and active users within a factor of the last batch."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    severity = (
        FailureSeverity.WARNING if cfg.drift_severity == "warning" else FailureSeverity.CRITICAL
    )
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column=VOLUME_RATIO,
            min_value=1.0 / cfg.max_volume_change,
            max_value=cfg.max_volume_change,
            severity=severity,
            meta={"check": "volume_change_within_bounds"},
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column=USER_RATIO,
            min_value=1.0 / cfg.max_active_user_change,
            max_value=cfg.max_active_user_change,
            severity=severity,
            meta={"check": "active_user_change_within_bounds"},
        ),
    ]


def check_spec(config) -> CheckSpec:
    """The merge rule of one row-level expectation, from its GX ``ExpectationConfiguration``."""
    check = config.meta["check"]
    if check == "min_rows":
        return CheckSpec(check, "rows", min_value=config.kwargs.get("min_value"))
    if config.type in ("expect_column_to_exist", "expect_column_values_to_be_of_type"):
        return CheckSpec(check, "schema")
    return CheckSpec(check, "map", mostly=config.kwargs.get("mostly"))


def duplicate_flags(events: pd.DataFrame) -> np.ndarray | None:
    """True for each row that repeats an earlier (user, item, timestamp, event_type) row.

    Rows are compared through a 64-bit hash of the key (8 bytes a row, so a 10M-row
    batch costs ~80 MB); None when a key column is missing.
    """
    if any(col not in events.columns for col in DUPLICATE_KEY):
        return None
    hashes = pd.util.hash_pandas_object(events[list(DUPLICATE_KEY)], index=False)
    return hashes.duplicated(keep="first").to_numpy()


def parse_utc(series: pd.Series) -> pd.Series:
    """Timestamps as ``datetime64[ns, UTC]``; NaT where a value cannot be parsed."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.dt.tz_localize("UTC")
    if pd.api.types.is_numeric_dtype(series):
        return pd.to_datetime(series.astype("float64"), unit="s", utc=True, errors="coerce")
    return pd.to_datetime(series.astype(object), utc=True, errors="coerce", format="mixed")


def with_derived_columns(
    chunk: pd.DataFrame,
    duplicates: np.ndarray | None,
    catalogue: set[str] | None,
) -> pd.DataFrame:
    """``chunk`` plus the derived columns the events suite checks (a shallow copy)."""
    out = chunk.copy(deep=False)
    if TIME in chunk.columns:
        out[TS_UTC] = parse_utc(chunk[TIME])
    if duplicates is not None:
        out[IS_DUP] = duplicates
    if catalogue is not None and ITEM in chunk.columns:
        out[IN_CATALOGUE] = chunk[ITEM].isin(catalogue).to_numpy()
    return out


CATALOGUE_SUITE = "recops_catalogue"
HAS_TEXT = "has_text"
HAS_CATEGORY = "has_category"
IN_EVENTS = "item_in_events"


def catalogue_expectations(cfg: ValidationConfig, *, with_events: bool) -> list:
    """Expectations of the item catalogue contract (derived columns from
    :func:`catalogue_with_derived_columns`)."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    def meta(check: str) -> dict[str, str]:
        return {"check": check}

    exps: list = [
        gxe.ExpectColumnToExist(column=ITEM, meta=meta("catalogue_column_present_item_id")),
        gxe.ExpectColumnValuesToNotBeNull(column=ITEM, meta=meta("catalogue_item_id_not_null")),
        gxe.ExpectColumnValuesToBeUnique(
            column=ITEM,
            mostly=1.0 - cfg.max_catalogue_duplicate_share,
            meta=meta("catalogue_item_id_unique"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=HAS_TEXT,
            value_set=[True],
            mostly=cfg.min_catalogue_text_share,
            meta=meta("catalogue_text_share_above_minimum"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=HAS_CATEGORY,
            value_set=[True],
            severity=FailureSeverity.WARNING,
            meta=meta("catalogue_items_have_category"),
        ),
    ]
    if with_events:
        exps.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=IN_EVENTS,
                value_set=[True],
                severity=FailureSeverity.WARNING,
                meta=meta("catalogue_items_in_events"),
            )
        )
    return exps


def catalogue_with_derived_columns(
    catalogue: pd.DataFrame, event_items: set[str] | None
) -> pd.DataFrame:
    """The catalogue plus ``has_text``, ``has_category`` and (with events) ``item_in_events``."""
    out = catalogue.copy(deep=False)
    out[HAS_TEXT] = catalogue["text"].astype(str).str.strip().ne("").to_numpy()
    out[HAS_CATEGORY] = catalogue["category"].astype(str).str.strip().ne("").to_numpy()
    if event_items is not None:
        out[IN_EVENTS] = catalogue[ITEM].astype(str).isin(event_items).to_numpy()
    return out
