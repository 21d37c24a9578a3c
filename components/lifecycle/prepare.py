"""Prepare: events (a file, the synthetic generator, or an accepted dataset version) ->
vocabulary, per-user sequences and the configured split.

``data.default_event_type`` and the column mapping are applied here for every file
path, so ``recops stage prepare``, ``recops train`` and the flow read files alike.
"""

from __future__ import annotations

import pandas as pd

from components.data.config import DataConfig
from components.data.prepare import PreparedData, prepare
from components.features.config import FeaturesConfig
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace


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


def prepare_dataset(
    data_cfg: DataConfig, features_cfg: FeaturesConfig | None = None
) -> PreparedData:
    """:func:`load_dataset` with its item catalogue (when there is one), prepared and split."""
    from components.data.catalogue import catalogue_from_config
    from components.training.trainer import text_settings

    catalogue = catalogue_from_config(data_cfg)
    return prepare(load_dataset(data_cfg), data_cfg, catalogue, text_settings(features_cfg))


def load_version(ws: Workspace, versioning_cfg: VersioningConfig, version: str) -> pd.DataFrame:
    """The events of an accepted dataset version."""
    return DatasetStore(ws, versioning_cfg).load_events(version)


def prepare_version(
    ws: Workspace, data_cfg: DataConfig, versioning_cfg: VersioningConfig, version: str
) -> PreparedData:
    """An accepted dataset version, prepared and split."""
    return prepare(load_version(ws, versioning_cfg, version), data_cfg)
