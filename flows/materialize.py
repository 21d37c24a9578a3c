"""The materialize flow: refresh Feast features of the current dataset version alone.

For frequent schedules (the online store's recent-items feature goes stale between
retrains). Cached per dataset version, like the retrain flow's feature step.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from components.errors import VersioningError
from components.workspace import Workspace
from flows.results import MaterializeRun
from flows.retrain import resolve_config
from flows.tasks import materialize_features


@flow(name="recops-materialize", description="Materialize features of the current dataset version.")
def materialize_flow(config: dict[str, Any] | None = None) -> MaterializeRun:
    """Materialize the current accepted dataset version's features into the online store."""
    from components.versioning.dvc_store import DatasetStore

    cfg = resolve_config(config)
    ws = Workspace.at(cfg.workspace).activate()
    current = DatasetStore(ws, cfg.versioning).current()
    if current is None:
        raise VersioningError(
            "no accepted dataset yet", hint="run `recops data add PATH` or `recops run` first"
        )
    result = materialize_features(cfg, ws, current.version)
    get_run_logger().info("materialized features for %s", current.version)
    return MaterializeRun(data_version=current.version, materialized=result)
