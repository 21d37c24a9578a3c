"""The item catalogue contract: what an item *is*, beside the events that say who used it.

Columns (strings, never null; ``""`` where the source has nothing):

============  =================================================================
item_id       raw item token, the same tokens the events use
text          a short title/description a language model can read
category      space-separated category tokens (ml-100k genres; one token usually)
============  =================================================================

Sources: a RecBole ``.item`` file (found beside a ``.inter`` file, or given), a csv or
Parquet file with columns mapped like events (:class:`CatalogueColumns`), or the synthetic
world (:func:`components.data.synthetic.synthetic_catalogue`). A catalogue may hold items
no event mentions yet (cold items): they are kept, counted and scored through their text.

:func:`check_catalogue` applies the catalogue rules (duplicate ids, empty texts, items
the events never mention) and returns the accepted catalogue and a report; nothing is
dropped without being counted in that report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from components.data.config import CatalogueColumns
from components.data.schema import ITEM, STRING_DTYPE
from components.errors import DataError

if TYPE_CHECKING:
    from components.data.config import DataConfig

log = logging.getLogger(__name__)

TEXT = "text"
CATEGORY = "category"
CATALOGUE_COLUMNS: tuple[str, ...] = (ITEM, TEXT, CATEGORY)
# RecBole .item columns that make up an item's text and category (first found wins)
RECBOLE_TEXT = ("movie_title", "title", "name", "description")
RECBOLE_CATEGORY = ("class", "genre", "genres", "categories", "category")


@dataclass(frozen=True)
class CatalogueReport:
    """What :func:`check_catalogue` found and what it did about it."""

    items: int
    duplicate_ids: int  # rows whose id repeats an earlier row (the last row of an id is kept)
    empty_text: int  # accepted items without text (scored by id/category only)
    without_events: int  # accepted items no event mentions (cold items)
    events_without_item: int  # distinct event items the catalogue lacks
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def text_share(self) -> float:
        return 1.0 - self.empty_text / self.items if self.items else 0.0

    def summary(self) -> dict[str, float | int]:
        return {
            "items": self.items,
            "duplicate_ids": self.duplicate_ids,
            "empty_text": self.empty_text,
            "text_share": round(self.text_share, 4),
            "without_events": self.without_events,
            "events_without_item": self.events_without_item,
        }


def _text_series(values: pd.Series) -> pd.Series:
    """Side values as stripped strings: lists joined by spaces, nulls ""."""

    def one(value: object) -> str:
        if isinstance(value, (list, tuple, np.ndarray)):
            return " ".join(str(v) for v in value)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        return str(value)

    return values.map(one).astype(str).str.strip()


def make_catalogue(
    ids: pd.Series | np.ndarray | list[str],
    text: pd.Series | np.ndarray | list[str],
    category: pd.Series | np.ndarray | list[str] | None = None,
) -> pd.DataFrame:
    """A catalogue-contract frame from aligned id/text/category values."""
    ids = pd.Series(np.asarray(ids, dtype=object))
    frame = pd.DataFrame(
        {
            ITEM: ids.astype(str).to_numpy(),
            TEXT: _text_series(pd.Series(np.asarray(text, dtype=object))).to_numpy(),
            CATEGORY: _text_series(
                pd.Series(np.asarray(category if category is not None else [""] * len(ids)))
            ).to_numpy(),
        }
    )
    return frame.astype({c: STRING_DTYPE for c in CATALOGUE_COLUMNS})


def _first(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in frame.columns), None)


def load_recbole_items(path: Path) -> pd.DataFrame:
    """A RecBole ``.item`` file: text = title (plus release year), category = genres."""
    from components.data.loaders import _read_atomic

    raw = _read_atomic(path)
    if ITEM not in raw.columns:
        raise DataError(f"{path}: missing required column 'item_id:token'")
    title = _first(raw, RECBOLE_TEXT)
    text = _text_series(raw[title]) if title else pd.Series([""] * len(raw))
    if "release_year" in raw.columns:
        year = _text_series(raw["release_year"])
        text = text.where(year == "", text + " (" + year + ")").str.strip()
    genre = _first(raw, RECBOLE_CATEGORY)
    category = raw[genre] if genre else None
    return make_catalogue(raw[ITEM], text, category)


def load_table_items(path: Path, columns: CatalogueColumns) -> pd.DataFrame:
    """A csv (delimiter sniffed) or Parquet item file with mapped columns."""
    from components.data.loaders import _read_csv_table, _sniff_delimiter

    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        raw = pq.read_table(path).to_pandas()
    else:
        table = _read_csv_table(path, _sniff_delimiter(path))
        raw = table.to_pandas()
    wanted = [columns.item_id, *columns.text] + ([columns.category] if columns.category else [])
    missing = [c for c in wanted if c not in raw.columns]
    if missing:
        raise DataError(
            f"{path}: catalogue is missing column(s) {missing}; found {list(raw.columns)}",
            hint="map them with --set data.item_columns.item_id=... (text, category)",
        )
    parts = [_text_series(raw[c]) for c in columns.text]
    text = parts[0]
    for part in parts[1:]:
        text = (text + ". " + part).where(part != "", text).where(text != "", part)
    category = raw[columns.category] if columns.category else None
    return make_catalogue(raw[columns.item_id], text, category)


def load_catalogue(path: str | Path, columns: CatalogueColumns | None = None) -> pd.DataFrame:
    """Read a catalogue file (RecBole ``.item``, csv or Parquet) into the contract.

    Duplicates and empty texts are kept here: :func:`check_catalogue` decides about them.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such catalogue file")
    if path.suffix == ".item":
        frame = load_recbole_items(path)
    else:
        frame = load_table_items(path, columns or CatalogueColumns())
    if frame[ITEM].str.strip().eq("").any():
        row = int(np.flatnonzero(frame[ITEM].str.strip().eq("").to_numpy())[0])
        raise DataError(f"{path}: empty item id at data row {row + 1}")
    log.info("loaded a catalogue of %d items from %s", len(frame), path)
    return frame


def catalogue_beside(events_path: str | Path) -> Path | None:
    """The RecBole ``.item`` file beside a ``.inter`` file, when there is one."""
    candidate = Path(events_path).with_suffix(".item")
    return candidate if candidate.exists() else None


def check_catalogue(
    catalogue: pd.DataFrame, event_items: pd.Series | np.ndarray | None = None
) -> tuple[pd.DataFrame, CatalogueReport]:
    """Apply the catalogue rules; returns ``(accepted catalogue, report)``.

    - duplicate ids: the last row of each id wins; every earlier row is counted;
    - empty text: accepted (the item is scored by id/category) and counted;
    - items no event mentions: accepted as cold items and counted;
    - event items the catalogue lacks: counted (they keep their id embedding, no text).
    """
    dup = catalogue.duplicated(ITEM, keep="last").to_numpy()
    accepted = catalogue.loc[~dup].reset_index(drop=True)
    empty = accepted[TEXT].eq("").to_numpy()
    examples = {
        "duplicate_ids": catalogue.loc[dup, ITEM].astype(str).head(5).tolist(),
        "empty_text": accepted.loc[empty, ITEM].astype(str).head(5).tolist(),
    }
    without_events = events_without_item = 0
    if event_items is not None:
        seen = pd.Index(pd.unique(np.asarray(event_items, dtype=object).astype(str)))
        in_events = accepted[ITEM].astype(str).isin(seen).to_numpy()
        without_events = int((~in_events).sum())
        lacking = seen.difference(pd.Index(accepted[ITEM].astype(str)))
        events_without_item = len(lacking)
        examples["without_events"] = accepted.loc[~in_events, ITEM].astype(str).head(5).tolist()
        examples["events_without_item"] = [str(x) for x in lacking[:5]]
    report = CatalogueReport(
        items=len(accepted),
        duplicate_ids=int(dup.sum()),
        empty_text=int(empty.sum()),
        without_events=without_events,
        events_without_item=events_without_item,
        examples=examples,
    )
    if report.duplicate_ids:
        log.warning(
            "catalogue: %d duplicate item id row(s), last row kept (e.g. %s)",
            report.duplicate_ids,
            ", ".join(examples["duplicate_ids"]),
        )
    return accepted, report


def catalogue_from_config(cfg: DataConfig) -> pd.DataFrame | None:
    """The catalogue a data config points at: ``items``, else the ``.item`` beside a
    RecBole ``.inter``, else (no events path) the synthetic world's; None when there is none."""
    if cfg.items:
        return load_catalogue(cfg.items, cfg.item_columns)
    if cfg.path:
        beside = catalogue_beside(cfg.path)
        return load_catalogue(beside) if beside is not None else None
    from components.data.synthetic import synthetic_catalogue

    return synthetic_catalogue(cfg.synthetic)
