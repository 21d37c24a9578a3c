"""When retraining is due: enough new accepted data since the champion's data version, or
drift past its threshold. Pure decisions; ``flows.events`` sends the event."""

from __future__ import annotations

from components.monitoring.config import MonitoringConfig
from components.monitoring.drift import DriftReport
from components.registry.store import ModelRegistry
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace


def new_events_since_champion(ws: Workspace, versioning_cfg: VersioningConfig) -> int | None:
    """Accepted events added since the champion's data version (None: no champion or no
    data; every accepted event counts when the champion's version is unknown here)."""
    store = DatasetStore(ws, versioning_cfg)
    current = store.current()
    if current is None:
        return None
    champion = ModelRegistry(ws).champion()
    if champion is None:
        return None
    try:
        trained_on = store.show(champion.record.data_version or "").n_rows
    except Exception:  # a version from elsewhere (another workspace, a test): count all
        trained_on = 0
    return max(0, current.n_rows - trained_on)


def retrain_reason(
    new_events: int | None, drift: DriftReport | None, cfg: MonitoringConfig
) -> str | None:
    """Why retraining is due now, or None."""
    if new_events is not None and new_events > cfg.retrain_after_events:
        return f"{new_events} new accepted events since the champion's data (> {cfg.retrain_after_events})"
    if cfg.retrain_on_drift and drift is not None and drift.drifted:
        return "drift: " + "; ".join(drift.reasons)
    return None
