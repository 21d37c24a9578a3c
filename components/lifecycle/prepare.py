"""Prepare: events (a file, the synthetic generator, or an accepted dataset version) ->
vocabulary, per-user sequences and the configured split.

``data.default_event_type`` and the column mapping are applied here for every file
path, so ``recops stage prepare``, ``recops train`` and the flow read files alike.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from components.config import RecopsConfig
from components.data.config import DataConfig
from components.data.prepare import PreparedData, prepare
from components.data.schema import ITEM, USER
from components.errors import ConfigError
from components.features.config import FeaturesConfig
from components.features.tables import EVENT_TS
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace

if TYPE_CHECKING:
    from components.data.stream import Shard
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


@dataclass(frozen=True)
class RankRead:
    """One data-parallel rank's read (``train.shard_data``): its share of the users and
    the folder of this data's buckets, written once for every rank."""

    shard: Shard
    folder: Path

    def discard(self) -> None:
        """Remove the buckets (rank 0, once training is over: every rank read its own
        before the ranks could start training together)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        Path(f"{self.folder}.lock").unlink(missing_ok=True)


def rank_read(cfg: RecopsConfig, ws: Workspace) -> RankRead | None:
    """This process's :class:`RankRead` when ``train.shard_data`` is on and the run is
    data-parallel (:func:`components.training.ranks.data_shard`), else None.

    The buckets go to ``data.bucket_dir`` (else ``<workspace>/buckets``), in a folder
    named by a digest of the files (paths, sizes, times), the data settings and the
    number of ranks: ranks started apart (torchrun) agree on it, and a changed file gets
    a new one. Raises :class:`ConfigError` for what cannot be sharded: the memory engine
    or the synthetic generator (no files to bucket) and a model with state from the
    whole training data."""
    from components.data.stream import list_event_files
    from components.training.ranks import data_shard
    from components.training.shards import require_rank_local_state

    if not cfg.train.shard_data:
        return None
    if cfg.data.engine == "memory" or not cfg.data.path:
        raise ConfigError(
            "train.shard_data reads each rank's users from data.path's Parquet files with "
            f"data.engine=stream or spark (data.engine={cfg.data.engine}, "
            f"data.path={cfg.data.path or 'unset'})",
            hint="set data.engine=stream and data.path, or train.shard_data=false",
        )
    require_rank_local_state(cfg.model)
    shard = data_shard(cfg.train)
    if shard is None:
        return None
    files = list_event_files(cfg.data.path)
    digest = hashlib.sha256(cfg.data.model_dump_json().encode())
    for path in files.paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(f"world={shard.world}".encode())
    root = Path(cfg.data.bucket_dir) if cfg.data.bucket_dir else ws.root / "buckets"
    return RankRead(shard, root / f"{cfg.data.engine}-{digest.hexdigest()[:16]}")


def require_whole_data(cfg: RecopsConfig, where: str) -> None:
    """Refuse ``train.shard_data`` in ``where``, which prepares every user in one process
    (the retrain flow's gate, reports and training features read them all)."""
    if cfg.train.shard_data:
        raise ConfigError(
            f"train.shard_data applies to `recops train`; {where} prepares every user",
            hint="set train.shard_data=false here",
        )


def prepare_dataset(data_cfg: DataConfig, read: RankRead | None = None) -> PreparedData:
    """:func:`load_dataset` with its item catalogue (when there is one), prepared and split;
    with ``read`` (:func:`rank_read`) only that rank's users."""
    from components.data.catalogue import catalogue_from_config

    catalogue = catalogue_from_config(data_cfg)
    shard = read.shard if read else None
    bucket_dir = read.folder if read else None
    if data_cfg.path and data_cfg.engine == "stream":
        from components.data.stream import stream_prepare

        return stream_prepare(
            data_cfg.path, data_cfg, catalogue, shard=shard, bucket_dir=bucket_dir
        )
    if data_cfg.path and data_cfg.engine == "spark":
        from components.data.spark import spark_prepare

        return spark_prepare(data_cfg.path, data_cfg, catalogue, shard=shard, bucket_dir=bucket_dir)
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
