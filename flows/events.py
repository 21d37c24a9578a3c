"""Prefect events recops emits, and the one that starts retraining.

The decision (enough new accepted data, or drift past its threshold) is made by pure
code in ``components.monitoring.triggers``; this module only sends the event. The retrain
deployment's automation (``flows.schedules.triggers_for``) runs inside the Prefect server
and starts a flow run when the event arrives: no polling loop of ours.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from components.workspace import Workspace

log = logging.getLogger(__name__)

RETRAIN_REQUESTED = "recops.retrain.requested"
EMIT_TIMEOUT_S = 30.0


def workspace_resource_id(workspace: Workspace) -> str:
    """A stable Prefect resource id for a workspace (a hash of its absolute root)."""
    digest = hashlib.sha1(str(workspace.root).encode()).hexdigest()[:16]
    return f"recops.workspace.{digest}"


def emit_retrain_request(workspace: Workspace, reason: str, payload: dict[str, Any]) -> bool:
    """Send ``recops.retrain.requested`` to the Prefect server this workspace uses.

    Returns False (and logs why) when there is no server to send it to: with Prefect's
    temporary server no automation could react, so nothing pretends it will.
    """
    from flows.server import api_url, using_api

    url = api_url(workspace)
    if url is None:
        log.warning(
            "retraining is due (%s) but no Prefect server runs: start one with "
            "`recops server start` and `recops schedule`, or run `recops run`",
            reason,
        )
        return False
    with using_api(url):
        from prefect.events import emit_event
        from prefect.events.worker import EventsWorker

        emit_event(
            event=RETRAIN_REQUESTED,
            resource={
                "prefect.resource.id": workspace_resource_id(workspace),
                "prefect.resource.name": str(workspace.root),
            },
            payload={"reason": reason, **payload},
        )
        EventsWorker.drain_all(timeout=EMIT_TIMEOUT_S)
    log.info("sent %s (%s) to %s", RETRAIN_REQUESTED, reason, url)
    return True
