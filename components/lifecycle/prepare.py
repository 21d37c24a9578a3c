"""Prepare: events (a file, the synthetic generator, or an accepted dataset version) ->
vocabulary, per-user sequences and the configured split.

``data.default_event_type`` and the column mapping are applied here for every file
path, so ``recops stage prepare``, ``recops train`` and the flow read files alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from components.data.config import DataConfig
from components.data.prepare import PreparedData, prepare
from components.data.schema import ITEM, USER
from components.features.config import FeaturesConfig
from components.features.tables import EVENT_TS
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace

if TYPE_CHECKING:
    from components.features.store import TrainingSet


def load_dataset(data_cfg: DataConfig) -> pd.DataFrame:
    """Contract events from ``data.path`` (with its format, columns and default event
    type), else from the synthetic generator."""
    from components.data.loaders import load_events
    from components.data.synthetic import generate_events

    if not data_cfg.path:
        return generate_events(data_cfg.synthetic)
    return load_events(
        data_cfg.path,
        data_cfg.format,
        columns=data_cfg.columns,
        default_event_type=data_cfg.default_event_type,
    )


def prepare_dataset(data_cfg: DataConfig) -> PreparedData:
    """:func:`load_dataset` with its item catalogue (when there is one), prepared and split."""
    from components.data.catalogue import catalogue_from_config

    catalogue = catalogue_from_config(data_cfg)
    if data_cfg.path and data_cfg.engine == "stream":
        from components.data.stream import stream_prepare

        return stream_prepare(data_cfg.path, data_cfg, catalogue)
    if data_cfg.path and data_cfg.engine == "spark":
        from components.data.spark import spark_prepare

        return spark_prepare(data_cfg.path, data_cfg, catalogue)
    return prepare(load_dataset(data_cfg), data_cfg, catalogue)


def load_version(ws: Workspace, versioning_cfg: VersioningConfig, version: str) -> pd.DataFrame:
    """The events of an accepted dataset version."""
    return DatasetStore(ws, versioning_cfg).load_events(version)


def prepare_version(
    ws: Workspace,
    data_cfg: DataConfig,
    versioning_cfg: VersioningConfig,
    version: str,
) -> PreparedData:
    """An accepted dataset version with its item catalogue, prepared and split.

    The catalogue is the version's own (accepted with it, see
    :func:`components.lifecycle.ingest.ingest_catalogue`), else ``data.items`` when set,
    else none. With ``data.engine=spark`` Spark reads the version's files (the other
    engines read the version as one frame)."""
    from components.data.catalogue import load_catalogue

    store = DatasetStore(ws, versioning_cfg)
    catalogue = store.load_catalogue(version)
    if catalogue is None and data_cfg.items:
        catalogue = load_catalogue(data_cfg.items, data_cfg.item_columns)
    if data_cfg.engine == "spark":
        from components.data.spark import spark_prepare

        return spark_prepare(store.event_files(version), data_cfg, catalogue)
    events = store.load_events(version)
    return prepare(events, data_cfg, catalogue)


# --- point-in-time training features (Feast offline store) -----------------------------
LABEL_SPLIT = "split"


def label_rows(prepared: PreparedData) -> pd.DataFrame:
    """One row per held-out label: ``user_id``, ``item_id``, ``event_timestamp`` (the label
    event's time, the split's cut-off for that user) and ``split`` (valid/test).

    Any split whose evaluation sets know where their targets sit in the users' sequences
    (leave-one-out: each user's last two events; temporal: each user's first event after
    the global cut)."""
    seqs = prepared.sequences
    frames = []
    for name, eval_set in (("valid", prepared.split.valid), ("test", prepared.split.test)):
        if eval_set.positions is None or seqs.timestamps is None:
            continue
        rows = np.asarray(eval_set.users)
        positions = seqs.offsets[rows] + eval_set.positions
        frames.append(
            pd.DataFrame(
                {
                    USER: np.asarray(prepared.vocab.users, dtype=object)[rows],
                    ITEM: np.asarray(prepared.vocab.items, dtype=object)[
                        seqs.values[positions] - 1
                    ],
                    EVENT_TS: pd.to_datetime(seqs.timestamps[positions], utc=True),
                    LABEL_SPLIT: name,
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=[USER, ITEM, EVENT_TS, LABEL_SPLIT])
    return pd.concat(frames, ignore_index=True)


def training_features(
    ws: Workspace,
    features_cfg: FeaturesConfig,
    prepared: PreparedData,
    data_version: str | None = None,
) -> TrainingSet:
    """The labels of ``prepared``'s split with the user and item features Feast's offline
    store held strictly before each label's time (point-in-time joins over every feature
    the training feature service declares: new item features arrive without code here).

    Cached per (data version, feature repo digest, sources as written, label rows): a
    re-run over the same version reads the frame back instead of joining again."""
    from components.features.store import TrainingSet, training_set

    rows = label_rows(prepared)
    if rows.empty:
        return TrainingSet(rows, ws.features_dir / "training_sets" / "empty.parquet", False)
    return training_set(ws, features_cfg, rows, data_version)
