"""Item content aligned with a model vocabulary: text vectors and category ids.

:class:`ItemContent` is what a model's :class:`~components.models.layers.ItemInput` is
filled with: row ``i`` describes vocabulary item ``i`` (row 0 = padding, zeros). The text
vectors come from :mod:`components.features.text_encoder` (cached by text hash); they are
held once (the model buffer shares the array's memory).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.catalogue import CATEGORY, TEXT
from components.data.schema import ITEM
from components.data.sequences import Vocabulary
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


def aligned_catalogue(catalogue: pd.DataFrame | None, vocab: Vocabulary) -> pd.DataFrame:
    """``[n_items + 1]`` rows of (text, category) in vocabulary order; "" where unknown."""
    rows = pd.DataFrame({ITEM: ["", *vocab.items]})
    if catalogue is None:
        return rows.assign(**{TEXT: "", CATEGORY: ""})
    side = catalogue[[ITEM, TEXT, CATEGORY]].astype(str).drop_duplicates(ITEM, keep="last")
    merged = rows.merge(side, on=ITEM, how="left").fillna("")
    merged.loc[0, [TEXT, CATEGORY]] = ""
    return merged


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


def item_content(
    catalogue: pd.DataFrame | None,
    vocab: Vocabulary,
    text: TextSettings | None,
) -> ItemContent:
    """Text vectors (when ``text`` names an encoder) and category ids for ``vocab``'s items."""
    rows = aligned_catalogue(catalogue, vocab)
    categories, names = category_ids(rows[CATEGORY])
    vectors = None
    if text is not None and text.encoder != "none":
        vectors, _ = encode_texts(
            rows[TEXT].tolist(), text.encoder, text.cache_dir, text.batch_size
        )
    return ItemContent(vectors, categories, names)
