"""The online step of the retrain flow: a challenger that passed the offline gate serves
beside the champion (``deploy.mode: shadow | canary``), the flow pauses, and the online
decision promotes or retires it.

The pause is Prefect's own (:func:`prefect.flow_runs.pause_flow_run` with
``wait_for_input``): the run shows as *Paused* with a form asking for a
:class:`OnlineDecisionInput`. It is resumed either by a person or an automation
(``prefect flow-run resume`` / :func:`prefect.flow_runs.resume_flow_run` with
``{"decision": "auto" | "promote" | "retire"}``) or, after ``observe_s`` seconds, by this
flow itself through the same resume call with ``{"decision": "auto", "by": "timeout"}``.
After a timeout an undecided comparison retires the challenger (it did not prove itself
within the window); a person's ``auto`` on an undecided comparison fails the run with
the one-line reason and leaves the challenger attached.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import PrefectException
from prefect.flow_runs import pause_flow_run, resume_flow_run
from pydantic import BaseModel

from components.config import RecopsConfig, config_from_mapping
from components.deploy.targets import ChallengerMode, Deployed
from components.lifecycle.deploy import target_for
from components.lifecycle.online import Concluded, conclude, start
from components.workspace import Workspace

PAUSE_KEY = "online-decision"
PAUSE_MARGIN_S = 120  # Prefect's own pause timeout, beyond ours: ours always fires first


class OnlineDecisionInput(BaseModel):
    """What resumes the paused run."""

    decision: Literal["auto", "promote", "retire"] = "auto"
    by: Literal["person", "timeout"] = "person"


@task(name="start-challenger", retries=0, cache_policy=NO_CACHE, timeout_seconds=900)
def start_challenger(cfg: RecopsConfig, ws: Workspace, version: str, actor: str) -> Deployed:
    """Serve ``version`` beside the champion in ``deploy.mode`` (lifecycle.online.start)."""
    mode: ChallengerMode = "canary" if cfg.deploy.mode == "canary" else "shadow"
    target = target_for(cfg.deploy, cfg.serve, cfg.features)
    done = start(ws, target, version, mode, actor=actor)
    get_run_logger().info("%s %s attached beside %s", mode, version, done.previous_version)
    return done


@task(name="conclude-online", retries=0, cache_policy=NO_CACHE, timeout_seconds=900)
def conclude_online(
    cfg: RecopsConfig, ws: Workspace, answer: OnlineDecisionInput, actor: str
) -> Concluded:
    """Promote or retire the attached challenger (lifecycle.online.conclude)."""
    target = target_for(cfg.deploy, cfg.serve, cfg.features)
    done = conclude(
        ws,
        target,
        cfg.deploy.challenger,
        actor=actor,
        force=answer.decision,
        undecided="retire" if answer.by == "timeout" else "refuse",
    )
    get_run_logger().info("online decision: %s\n%s", done.decision, done.comparison.table())
    return done


def _resume_after(run_id: UUID, seconds: float) -> threading.Timer:
    """Resume ``run_id`` with the timeout's input after ``seconds`` (unless resumed before)."""

    def resume() -> None:
        # resumed by someone else first, or the run already ended: nothing to do
        with contextlib.suppress(PrefectException, RuntimeError, ValueError):
            resume_flow_run(run_id, run_input=OnlineDecisionInput(by="timeout").model_dump())

    timer = threading.Timer(seconds, resume)
    timer.daemon = True
    timer.start()
    return timer


def await_decision(observe_s: float, poll_s: int) -> OnlineDecisionInput:
    """Pause the current flow run until a decision or ``observe_s`` seconds."""
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    timer = _resume_after(context.flow_run.id, observe_s)
    try:
        answer = pause_flow_run(
            wait_for_input=OnlineDecisionInput,
            timeout=int(observe_s) + PAUSE_MARGIN_S,
            poll_interval=poll_s,
            key=PAUSE_KEY,
        )
    finally:
        timer.cancel()
    return answer if isinstance(answer, OnlineDecisionInput) else OnlineDecisionInput()


@flow(name="recops-online-decision", description="Pause while a challenger serves; decide.")
def online_decision_flow(
    config: dict[str, Any] | None = None,
    actor: str = "retrain-flow",
) -> Concluded:
    """Wait (paused) for the online decision on the attached challenger, then act on it."""
    cfg = config_from_mapping(config or {})
    ws = Workspace.at(cfg.workspace).activate()
    online = cfg.deploy.challenger
    answer = await_decision(online.observe_s, online.poll_s)
    get_run_logger().info("resumed by %s: %s", answer.by, answer.decision)
    return conclude_online(cfg, ws, answer, actor)
