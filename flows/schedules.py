"""Schedules: the retrain / materialize flows as Prefect deployments with a cron.

Two ways, same flows:

- :func:`serve_on_schedule` — ``flow.serve``: one long-running process on this machine
  creates the deployment and executes its scheduled runs (no work pool needed; with no
  ``PREFECT_API_URL`` Prefect starts a local server for it).
- :func:`deploy_to_work_pool` — a deployment on a Prefect server whose runs are picked up
  by workers of a work pool (``prefect worker start --pool NAME``) on any machine that has
  this repo installed; see ``prefect.yaml`` and ``infra/README.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from components.errors import ConfigError

FlowName = Literal["retrain", "materialize"]
REPO_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINTS: dict[str, str] = {
    "retrain": "flows/retrain.py:retrain_flow",
    "materialize": "flows/materialize.py:materialize_flow",
}


def flow_object(name: FlowName):
    """The Prefect flow for ``name``."""
    if name == "retrain":
        from flows.retrain import retrain_flow

        return retrain_flow
    if name == "materialize":
        from flows.materialize import materialize_flow

        return materialize_flow
    raise ConfigError(f"unknown flow {name!r}; choose retrain or materialize")


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


def serve_on_schedule(name: FlowName, cron: str, parameters: dict[str, Any]) -> None:
    """Create the deployment and run its schedule in this process until interrupted.

    ``pause_on_shutdown=False`` keeps the schedule active on the server when this process
    stops, so a restarted process (or a worker) picks it up again.
    """
    flow_object(name).serve(
        name=deployment_name(name),
        cron=validate_cron(cron),
        parameters=parameters,
        pause_on_shutdown=False,
        tags=["recops", name],
    )


def deploy_to_work_pool(
    name: FlowName, cron: str, parameters: dict[str, Any], work_pool: str, source: Path = REPO_ROOT
) -> str:
    """Register a scheduled deployment for ``work_pool`` on the configured Prefect server.

    Returns the deployment id. The code is loaded from ``source`` by the worker (a path
    every worker can read, or a git URL in ``prefect.yaml`` for remote workers).
    """
    from prefect import flow as prefect_flow

    validate_cron(cron)
    remote = prefect_flow.from_source(source=str(source), entrypoint=ENTRYPOINTS[name])
    # RunnerDeployment.apply registers without flow.deploy()'s worker lookup, whose
    # null limit/offset this Prefect client sends and FastAPI >= 0.150 rejects.
    deployment = remote.to_deployment(
        name=deployment_name(name),
        work_pool_name=work_pool,
        cron=cron,
        parameters=parameters,
        tags=["recops", name],
    )
    return str(deployment.apply(work_pool_name=work_pool))
