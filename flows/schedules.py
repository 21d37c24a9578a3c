"""Schedules: the retrain / materialize / monitor flows as Prefect deployments with a cron.

The monitor flow on a schedule is what makes drift start retraining by itself: each run
checks the champion's live traffic and sends the retrain event when drift (or new data)
crosses its threshold.

Two ways, same flows:

- :func:`serve_on_schedule` — ``flow.serve``: one long-running process on this machine
  creates the deployment and executes its scheduled runs (no work pool needed). It needs
  a real Prefect server: ``$PREFECT_API_URL``, else the workspace's own
  (``flows.server``; ``recops schedule`` starts it), never Prefect's temporary one, whose
  schedules never fire.
- :func:`deploy_to_work_pool` — a deployment on a Prefect server whose runs are picked up
  by workers of a work pool (``prefect worker start --pool NAME``) on any machine that has
  this repo installed; see ``prefect.yaml`` and ``infra/README.md``.

Either way the retrain deployment also carries an event trigger (a Prefect automation
that runs inside the server): a ``recops.retrain.requested`` event about this workspace
(``flows.events``: new accepted data or drift past its threshold) starts a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

from components.errors import ConfigError
from components.workspace import Workspace

FlowName = Literal["retrain", "materialize", "monitor"]
REPO_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINTS: dict[str, str] = {
    "retrain": "flows/retrain.py:retrain_flow",
    "materialize": "flows/materialize.py:materialize_flow",
    "monitor": "flows/monitor.py:monitor_flow",
}


def flow_object(name: FlowName):
    """The Prefect flow for ``name``."""
    if name == "retrain":
        from flows.retrain import retrain_flow

        return retrain_flow
    if name == "materialize":
        from flows.materialize import materialize_flow

        return materialize_flow
    if name == "monitor":
        from flows.monitor import monitor_flow

        return monitor_flow
    raise ConfigError(f"unknown flow {name!r}; {flow_choices()}")


def flow_choices() -> str:
    """``choose retrain, materialize or monitor`` (from :data:`ENTRYPOINTS`)."""
    *rest, last = ENTRYPOINTS
    return f"choose {', '.join(rest)} or {last}"


def deployment_name(name: FlowName) -> str:
    return f"recops-{name}-scheduled"


def validate_cron(cron: str) -> str:
    """Reject a malformed cron string before Prefect sees it."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ConfigError(f"not a valid cron expression: {cron!r} (e.g. '0 3 * * *')") from None
    return cron


def triggers_for(name: FlowName, workspace: Workspace) -> list:
    """The retrain deployment's event trigger: one ``recops.retrain.requested`` event about
    this workspace starts one run. Other flows have none."""
    if name != "retrain":
        return []
    from prefect.events import DeploymentEventTrigger

    from flows.events import RETRAIN_REQUESTED, workspace_resource_id

    return [
        DeploymentEventTrigger(
            name="recops-retrain-on-request",
            expect={RETRAIN_REQUESTED},
            match={"prefect.resource.id": workspace_resource_id(workspace)},
            posture="Reactive",
            threshold=1,
        )
    ]


def serve_on_schedule(
    name: FlowName,
    parameters: dict[str, Any],
    workspace: Workspace,
    *,
    cron: str | None = None,
    interval_s: float | None = None,
) -> None:
    """Create the deployment and run its schedule in this process until interrupted.

    Give ``cron`` or ``interval_s``. The caller points Prefect at a real server first
    (``flows.server.using_api``). ``pause_on_shutdown=False`` keeps the schedule active on
    the server when this process stops, so a restarted process (or a worker) picks it up.
    """
    if (cron is None) == (interval_s is None):
        raise ConfigError("give exactly one of --cron or --interval")
    flow_object(name).serve(
        name=deployment_name(name),
        cron=validate_cron(cron) if cron else None,
        interval=interval_s,
        parameters=parameters,
        pause_on_shutdown=False,
        tags=["recops", name],
        triggers=triggers_for(name, workspace),
    )


def deploy_to_work_pool(
    name: FlowName,
    cron: str,
    parameters: dict[str, Any],
    work_pool: str,
    workspace: Workspace,
    source: Path = REPO_ROOT,
) -> str:
    """Register a scheduled deployment for ``work_pool`` on the configured Prefect server.

    Returns the deployment id. The code is loaded from ``source`` by the worker (a path
    every worker can read, or a git URL in ``prefect.yaml`` for remote workers).
    """
    from prefect import Flow
    from prefect import flow as prefect_flow
    from prefect.deployments.runner import RunnerDeployment

    validate_cron(cron)
    # from_source/to_deployment are sync-compatible: called from sync code they return
    # their value, not a coroutine (their annotations say both)
    remote = cast(
        "Flow[..., Any]",
        prefect_flow.from_source(source=str(source), entrypoint=ENTRYPOINTS[name]),
    )
    # RunnerDeployment.apply registers without flow.deploy()'s worker lookup, whose
    # null limit/offset this Prefect client sends and FastAPI >= 0.150 rejects.
    deployment = cast(
        RunnerDeployment,
        remote.to_deployment(
            name=deployment_name(name),
            work_pool_name=work_pool,
            cron=cron,
            parameters=parameters,
            tags=["recops", name],
            triggers=triggers_for(name, workspace),
        ),
    )
    return str(deployment.apply(work_pool_name=work_pool))


def list_schedules(ws: Workspace) -> tuple[list[dict[str, Any]], str | None]:
    """recops deployments and their schedules on the Prefect server (``$PREFECT_API_URL``,
    else the workspace's ``recops server``).

    Returns ``(schedules, note)``; without a server (or when it does not answer) the list
    is empty and the note says why: schedules only exist on a running server.
    """
    from flows.server import api_url, using_api

    url = api_url(ws)
    if not url:
        return [], "no Prefect server running (`recops server start` or PREFECT_API_URL)"
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    try:
        with using_api(url), get_client(sync_client=True) as client:
            found = client.read_deployments(
                deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["recops"])),
                limit=50,
            )
    except Exception as exc:  # noqa: BLE001 - a status screen reports, it does not fail
        return [], f"Prefect server at {url} did not answer: {type(exc).__name__}"
    return [_schedule_row(d) for d in found], None


def _schedule_row(deployment: Any) -> dict[str, Any]:
    crons = [_schedule_text(s.schedule) for s in deployment.schedules or []]
    return {
        "deployment": deployment.name,
        "crons": crons,
        "active": not deployment.paused,
        "work_pool": deployment.work_pool_name,
    }


def _schedule_text(schedule: Any) -> str:
    """``0 3 * * *`` for a cron, ``every 0:10:00`` for an interval."""
    cron = getattr(schedule, "cron", None)
    if cron:
        return str(cron)
    interval = getattr(schedule, "interval", None)
    return f"every {interval}" if interval is not None else type(schedule).__name__
