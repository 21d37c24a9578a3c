"""Item content: the Feast ``item_content`` table from a catalogue, and the model-side
view of it aligned with a vocabulary.

Two halves of one path (the Feast calls live in :mod:`components.features.store`):

- :func:`content_table` turns a catalogue into the rows of the ``item_content`` feature
  view (one per catalogue item: text vector from :mod:`components.features.text_encoder`,
  cached by text hash; category tokens; text), written when features are published.
- :func:`content_from_rows` turns what Feast returns for a vocabulary into
  :class:`ItemContent`, what a model's :class:`~components.models.layers.ItemInput` is
  filled with: row ``i`` describes vocabulary item ``i`` (row 0 = padding, zeros). The
  vectors are held once (the model buffer shares the array's memory).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components.data.catalogue import CATEGORY, TEXT
from components.data.schema import ITEM
from components.data.sequences import Vocabulary
from components.features.tables import EVENT_TS
from components.features.text_encoder import encode_texts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextSettings:
    """Which encoder turns texts into vectors and where vectors are cached."""

    encoder: str = "minilm"  # "minilm", a local sentence-transformers path, or "none"
    cache_dir: Path | None = None
    batch_size: int = 64


@dataclass
class ItemContent:
    """Content rows aligned with vocabulary indices (row 0 = padding)."""

    text: np.ndarray | None  # [n_items + 1, T] float32 unit vectors, zero rows = no text
    categories: np.ndarray  # [n_items + 1, S] int64 category ids, 0 = none
    category_names: tuple[str, ...]  # id - 1 -> category token

    @property
    def text_dim(self) -> int:
        return 0 if self.text is None else int(self.text.shape[1])

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    @property
    def category_slots(self) -> int:
        return max(1, int(self.categories.shape[1]))


def category_ids(categories: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Space-separated category tokens -> ``([rows, S]`` ids from 1, sorted token names)."""
    tokens = categories.str.split()
    flat = tokens.explode().dropna()
    flat = flat[flat != ""]
    names = tuple(sorted(flat.unique().tolist()))
    slots = max(1, int(tokens.map(len).max() or 0))
    out = np.zeros((len(categories), slots), dtype=np.int64)
    if not names:
        return out, names
    codes = pd.Index(names).get_indexer(flat.to_numpy()) + 1
    row = flat.index.to_numpy()
    position = flat.groupby(level=0).cumcount().to_numpy()
    out[row, position] = codes
    return out, names


TEXT_VECTOR = "text_vector"


def content_table(
    catalogue: pd.DataFrame, text: TextSettings | None, published: datetime
) -> pd.DataFrame:
    """The ``item_content`` feature view's rows for ``catalogue`` (catalogue contract).

    Columns: ``item_id``, ``event_timestamp`` (``published`` for every row: content is
    what the catalogue says from its publication on), ``text_vector`` (list<float32>,
    unit vectors; empty when ``text`` is None/"none" or the item has no text),
    ``category`` and ``text``. The last row of a duplicated id wins.
    """
    side = catalogue[[ITEM, TEXT, CATEGORY]].astype(str).drop_duplicates(ITEM, keep="last")
    texts = side[TEXT].tolist()
    dim, values = 0, np.zeros(0, dtype=np.float32)
    if text is not None and text.encoder != "none" and len(side):
        vectors, _ = encode_texts(texts, text.encoder, text.cache_dir, text.batch_size)
        dim, values = int(vectors.shape[1]), vectors.reshape(-1)
    has_text = np.array([bool(t.strip()) for t in texts], dtype=bool) & (dim > 0)
    lengths = np.where(has_text, dim, 0)
    offsets = np.zeros(len(side) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    kept = np.repeat(has_text, dim) if dim else np.zeros(0, dtype=bool)
    vectors_column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[kept]))
    return pd.DataFrame(
        {
            ITEM: side[ITEM].to_numpy(),
            EVENT_TS: pd.Series(pd.Timestamp(published), index=range(len(side))).astype(
                "datetime64[ns, UTC]"
            ),
            TEXT_VECTOR: pd.Series(vectors_column, dtype=pd.ArrowDtype(pa.list_(pa.float32()))),
            CATEGORY: side[CATEGORY].to_numpy(),
            TEXT: side[TEXT].to_numpy(),
        }
    )


def content_from_rows(rows: pd.DataFrame, vocab: Vocabulary, with_text: bool) -> ItemContent:
    """:class:`ItemContent` for ``vocab`` from feature rows (``item_id``, ``text_vector``,
    ``category``; any order, missing items allowed: they get no text and no category).

    ``with_text=False`` leaves the vectors out (a category-only model)."""
    aligned = pd.DataFrame({ITEM: ["", *vocab.items]}).merge(
        rows.drop_duplicates(ITEM, keep="last"), on=ITEM, how="left"
    )
    aligned.loc[0, [TEXT_VECTOR, CATEGORY]] = None
    categories, names = category_ids(aligned[CATEGORY].fillna("").astype(str))
    vectors = _vector_matrix(aligned[TEXT_VECTOR].tolist()) if with_text else None
    return ItemContent(vectors, categories, names)


def _vector_matrix(values: list[object]) -> np.ndarray:
    """``[rows, dim]`` float32 from per-row vectors (one Arrow conversion, no per-row
    copies in Python); None/NaN/empty rows are zeros."""
    column = pa.array(values, type=pa.list_(pa.float32()), from_pandas=True)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    dim = int(lengths.max()) if len(lengths) else 0
    out = np.zeros((len(values), dim), dtype=np.float32)
    full = lengths == dim
    if dim and full.any():
        flat = column.filter(pa.array(full)).flatten().to_numpy(zero_copy_only=False)
        out[full] = flat.reshape(-1, dim)
    return out
