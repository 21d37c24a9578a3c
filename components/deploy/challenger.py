"""A challenger beside the local champion: shadow (mirrored, never answers a client) or
canary (answers a sticky share of users), through the proxy's splitter
(:mod:`components.deploy.split`).

Attaching builds the challenger's bento, starts it on its own loopback port, waits until
it is ready and answers a smoke test, then records it in ``local.json`` and the proxy's
target file (the champion keeps serving throughout; a failure stops the new process and
changes nothing). Detaching stops it and points the proxy back at the champion alone.
Both are recorded in the registry history (``shadow``/``canary``/``challenger_stop``,
with the online evidence so far). A canary the proxy *tripped* (error rate above
``deploy.challenger.max_error_rate``) is detached by :func:`stop_if_tripped`, which the
supervisor calls on every pass.

Deploy commands that change the challenger wait at most ``deploy.lock_wait_s`` for the
deploy lock (:func:`components.deploy.local.deploy_lock`): a second command started while
one runs gets a one-line :class:`DeployFailed` naming the holder.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from components.deploy import local
from components.deploy.bento import build_bento
from components.deploy.config import BentoBuildConfig, LocalDeployConfig, ServeConfig
from components.deploy.proxy import STATS_FILE
from components.errors import DeployFailed
from components.features.config import FeaturesConfig
from components.registry.store import ModelRegistry
from components.workspace import Workspace

log = logging.getLogger(__name__)

LOCK_WAIT_S = 5.0
Mode = Literal["shadow", "canary"]


@dataclass(frozen=True)
class Attached:
    """A challenger now serving beside the champion."""

    mode: Mode
    version: str
    champion: str
    bento_tag: str
    port: int
    url: str


def proxy_settings(mode: Mode, cfg: BentoBuildConfig) -> dict[str, Any]:
    """The knobs the proxy reads for ``mode`` (see components/deploy/split.py)."""
    c = cfg.challenger
    share = c.share if mode == "canary" else c.mirror_share
    return {
        "share": share,
        "timeout_s": c.timeout_s,
        "queue": c.queue,
        "max_error_rate": c.max_error_rate,
        "min_requests": c.min_requests,
        "max_live": c.mirror_max_live if mode == "shadow" else None,
    }


def attach(
    workspace: Workspace,
    version: str,
    mode: Mode,
    serve_cfg: ServeConfig,
    deploy_cfg: LocalDeployConfig,
    features_cfg: FeaturesConfig,
    *,
    actor: str,
) -> Attached:
    """Serve ``version`` as a ``mode`` challenger beside the running champion."""
    what = f"recops deploy --mode {mode} {version}"
    with local.deploy_lock(workspace, what, deploy_cfg.lock_wait_s):
        return _attach_locked(workspace, version, mode, serve_cfg, deploy_cfg, features_cfg, actor)


def _serving_state(workspace: Workspace) -> local.LocalState:
    state = local.read_state(workspace)
    alive = state is not None and state.backend is not None and state.backend.alive()
    if not alive or state is None or state.proxy is None or not state.proxy.alive():
        raise DeployFailed(
            "no local deployment is serving a champion to put a challenger beside",
            hint="deploy the champion first: `recops deploy`",
        )
    return state


def _attach_locked(
    workspace: Workspace,
    version: str,
    mode: Mode,
    serve_cfg: ServeConfig,
    deploy_cfg: LocalDeployConfig,
    features_cfg: FeaturesConfig,
    actor: str,
) -> Attached:
    state = _serving_state(workspace)
    if state.challenger is not None:
        raise DeployFailed(
            f"{state.challenger.version} is already attached as a {state.challenger.mode}",
            hint="`recops deploy conclude` or `recops deploy detach` first",
        )
    if version == state.version:
        raise DeployFailed(f"{version} is the version serving as champion")
    local.reap_strays(workspace, state)
    bento = build_bento(
        workspace, version, serve_cfg, deploy_cfg, features_cfg, state.auth_required
    )
    cpu_priority = deploy_cfg.challenger.shadow_priority if mode == "shadow" else "normal"
    backend = local.start_backend(workspace, bento.tag, state.host)
    try:
        local.wait_ready(backend, state.host, deploy_cfg.readiness_timeout_s)
        local.smoke_test(f"http://{state.host}:{backend.port}", bento.version, serve_cfg)
        # lowered before the proxy sends it anything (components/deploy/priority.py)
        if cpu_priority != "normal" and not local.set_cpu_priority(backend, cpu_priority):
            raise DeployFailed(f"could not lower the shadow's CPU priority to {cpu_priority}")
        state.challenger = local.ChallengerState(
            mode=mode,
            version=bento.version,
            bento_tag=bento.tag,
            backend=backend,
            generation=uuid.uuid4().hex[:12],
            started_at=datetime.now(timezone.utc),
            settings=proxy_settings(mode, deploy_cfg),
            cpu_priority=cpu_priority,
        )
        local.save_state(workspace, state)
        local.point_target(workspace, state)
    except BaseException:
        local.stop_process(backend)
        raise
    ModelRegistry(workspace).record_mode(
        mode,
        bento.version,
        actor=actor,
        reason=f"{mode} beside champion {state.version} ({_describe(state.challenger)})",
        metrics={"settings": state.challenger.settings, "cpu_priority": cpu_priority},
    )
    log.info("%s %s attached beside %s (port %d)", mode, version, state.version, backend.port)
    return Attached(
        mode,
        bento.version,
        state.version or "",
        bento.tag,
        backend.port,
        f"http://{state.host}:{state.public_port}",
    )


def _describe(ch: local.ChallengerState) -> str:
    share = ch.settings.get("share", 1.0)
    if ch.mode == "canary":
        return f"{share:.0%} of users"
    return f"{share:.0%} of requests mirrored, CPU priority {ch.cpu_priority}"


def split_stats(workspace: Workspace) -> dict[str, Any]:
    """The proxy's counters for the attached challenger ({} before its first request)."""
    try:
        stats = json.loads((workspace.deploy_dir / STATS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    state = local.read_state(workspace)
    current = state.challenger.generation if state and state.challenger else None
    return stats if isinstance(stats, dict) and stats.get("generation") == current else {}


def detach(
    workspace: Workspace, reason: str, wait_s: float = LOCK_WAIT_S
) -> local.ChallengerState | None:
    """Stop the attached challenger (None when there was none) and record why."""
    with local.deploy_lock(workspace, "recops deploy detach", wait_s):
        state = local.read_state(workspace)
        if state is None or state.challenger is None:
            return None
        return detach_locked(workspace, state, reason)


def detach_locked(
    workspace: Workspace,
    state: local.LocalState,
    reason: str,
    actor: str = "recops",
    *,
    stop_backend: bool = True,
) -> local.ChallengerState:
    """Under the deploy lock: point the proxy at the champion alone, stop the challenger
    (unless a promotion takes its process over: ``stop_backend=False``), record
    ``challenger_stop`` with the proxy's counters; ``state`` is updated in place."""
    challenger = state.challenger
    assert challenger is not None
    evidence = split_stats(workspace)
    state.challenger = None
    local.save_state(workspace, state)
    local.point_target(workspace, state)
    if stop_backend:
        local.stop_process(challenger.backend)
    ModelRegistry(workspace).record_mode(
        "challenger_stop",
        challenger.version,
        actor=actor,
        reason=reason,
        metrics={"mode": challenger.mode, "proxy": evidence},
    )
    log.info("%s %s detached: %s", challenger.mode, challenger.version, reason)
    return challenger


def stop_if_tripped(workspace: Workspace, state: local.LocalState) -> bool:
    """Under the deploy lock (the supervisor's pass): detach a canary the proxy tripped,
    recorded as an automatic stop; True when it did."""
    if state.challenger is None:
        return False
    tripped = split_stats(workspace).get("tripped")
    if not tripped:
        return False
    detach_locked(
        workspace,
        state,
        f"{state.challenger.mode} stopped automatically: {tripped}",
        actor="supervisor",
    )
    return True
