"""The supervisor of a local deployment: restarts, backoff, crash-loop rollback, reaping.

One detached process per deployment (``python -m components.deploy.supervisor``),
started by the deploy that creates the deployment and recorded in ``local.json`` like
every process recops starts. Every ``poll_s`` it takes the deploy lock *without waiting*
(a deploy or stop in progress owns the deployment; the supervisor stands back) and:

* **proxy** dead -> started again on the public port (exponential backoff between tries);
* **backend** dead (BentoML's arbiter gone) or not ready for ``unhealthy_after_s`` ->
  everything that carries its process marker is killed (an arbiter's orphaned worker
  included), and the same bento is started again on a fresh port, checked ready and
  switched to through the target file; restarts and the last exit code are recorded
  in the state that ``recops serve status`` shows;
* **crash loop**: after ``max_restarts`` restarts within ``crash_window_s`` it stops
  restarting that model and switches back to the previous serving version (recorded in
  the registry history as a ``rollback`` by ``supervisor`` when the crashing version is
  the champion);
* **strays**: processes carrying this deployment's marker that the state does not list
  (a killed deploy's new backend, a drained backend a killed deploy never stopped) are
  stopped; the proxy's target file is put back to the recorded backend.

It exits when the deployment it supervises is stopped or replaced by another supervisor.
The supervisor is itself restarted by the next ``recops serve status|start`` or deploy.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from components.deploy import local
from components.deploy.config import LocalDeployConfig, ServeConfig
from components.errors import DeployBusy, RecopsError
from components.workspace import Workspace

log = logging.getLogger("recops.supervisor")

PR_SET_CHILD_SUBREAPER = 36
HEALTH_EVERY_S = 2.0


@dataclass
class Backoff:
    """Exponential backoff between restart attempts of one process role."""

    base_s: float
    max_s: float
    failures: int = 0
    next_at: float = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.next_at

    def failed(self, now: float) -> None:
        self.failures += 1
        self.next_at = now + min(self.max_s, self.base_s * 2 ** (self.failures - 1))

    def succeeded(self) -> None:
        self.failures = 0
        self.next_at = 0.0


@dataclass
class Supervisor:
    """One deployment's supervisor (see module doc); :meth:`tick` is one pass."""

    workspace: Workspace
    proc_id: str
    deploy_cfg: LocalDeployConfig
    serve_cfg: ServeConfig
    proxy_backoff: Backoff = field(init=False)
    backend_backoff: Backoff = field(init=False)
    restarts_at: list[float] = field(default_factory=list)
    unready_since: float | None = None
    last_health: float = 0.0
    exit_codes: dict[int, int] = field(default_factory=dict)
    version: str | None = None  # the version the counters above are about

    def __post_init__(self) -> None:
        self.proxy_backoff = Backoff(self.deploy_cfg.restart_backoff_s, 30.0)
        self.backend_backoff = Backoff(self.deploy_cfg.restart_backoff_s, 30.0)

    # --- the loop --------------------------------------------------------------------
    def run(self) -> None:
        become_subreaper()
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        log.info("supervising %s (pid %d)", self.workspace.deploy_dir, os.getpid())
        while not stop["now"]:
            self._collect_children()
            try:
                with local.deploy_lock(self.workspace, "supervisor pass", wait_s=0):
                    if not self.tick(time.monotonic()):
                        break
            except DeployBusy:
                pass  # a deploy or stop owns the deployment right now
            except Exception:  # the supervisor must survive anything one pass does
                log.exception("supervisor pass failed")
            time.sleep(self.deploy_cfg.supervise_poll_s)
        log.info("supervisor exits")

    def tick(self, now: float) -> bool:
        """One pass under the deploy lock; False when this supervisor should exit."""
        state = local.read_state(self.workspace)
        if state is None or state.supervisor is None or state.supervisor.proc_id != self.proc_id:
            return False
        if state.version != self.version:  # a new deployment: its own crash history
            self.version, self.restarts_at, self.unready_since = state.version, [], None
            self.backend_backoff.succeeded()
        local.reap_strays(self.workspace, state)
        local.restore_target(self.workspace, state)
        if state.proxy is None or not state.proxy.alive():
            self._restart_proxy(state, now)
        if state.backend is not None and self._backend_down(state, now):
            self._restart_backend(state, now)
        if state.challenger is not None:
            from components.deploy.challenger import stop_if_tripped

            stop_if_tripped(self.workspace, state)  # a canary over its error limit
        return True

    # --- proxy -------------------------------------------------------------------------
    def _restart_proxy(self, state: local.LocalState, now: float) -> None:
        if not self.proxy_backoff.ready(now):
            return
        dead = state.proxy
        try:
            state.proxy = local.start_proxy(self.workspace, state.host, state.public_port)
        except RecopsError as exc:
            self.proxy_backoff.failed(now)
            log.error("proxy restart failed: %s", exc)
            return
        self.proxy_backoff.succeeded()
        state.proxy_restarts += 1
        state.last_event = self._event("proxy", dead)
        local.save_state(self.workspace, state)
        log.warning("restarted the proxy on port %d", state.public_port)

    # --- backend -----------------------------------------------------------------------
    def _backend_down(self, state: local.LocalState, now: float) -> bool:
        assert state.backend is not None
        if not state.backend.alive():
            return True
        if now - self.last_health < HEALTH_EVERY_S:
            return False
        self.last_health = now
        if local.is_ready(state.host, state.backend.port):
            self.unready_since = None
            return False
        self.unready_since = self.unready_since or now
        return now - self.unready_since >= self.deploy_cfg.unhealthy_after_s

    def _restart_backend(self, state: local.LocalState, now: float) -> None:
        if not self.backend_backoff.ready(now):
            return
        assert state.backend is not None and state.bento_tag is not None
        window = self.deploy_cfg.crash_window_s
        self.restarts_at = [t for t in self.restarts_at if now - t < window]
        if len(self.restarts_at) >= self.deploy_cfg.max_restarts:
            self._roll_back(state, now)
            return
        dead = state.backend
        local.stop_process(dead)
        self.restarts_at.append(now)
        state.restarts += 1
        state.last_event = self._event("backend", dead)
        try:
            fresh = local.start_backend(self.workspace, state.bento_tag, state.host)
            state.backend = fresh
            local.save_state(self.workspace, state)  # recorded before it is waited for
            local.wait_ready(fresh, state.host, self.deploy_cfg.readiness_timeout_s)
        except RecopsError as exc:
            self.backend_backoff.failed(now)
            log.error("restart %d of %s failed: %s", state.restarts, state.version, exc)
            local.stop_process(state.backend)
            local.save_state(self.workspace, state)
            return
        self.backend_backoff.succeeded()
        self.unready_since = None
        local.point_target(self.workspace, state)
        local.save_state(self.workspace, state)
        log.warning("restarted %s on port %d", state.version, fresh.port)

    def _roll_back(self, state: local.LocalState, now: float) -> None:
        """Crash loop: serve the previous version again (and say so in the registry)."""
        crashing, crashing_tag = state.version, state.bento_tag
        if state.previous_version is None or state.previous_bento_tag is None:
            log.error(
                "%s keeps crashing and there is no previous version to roll back to", crashing
            )
            self.backend_backoff.failed(now)
            self.restarts_at = self.restarts_at[-1:]
            return
        local.stop_process(state.backend)
        try:
            fresh = local.start_backend(self.workspace, state.previous_bento_tag, state.host)
            state.backend = fresh
            local.save_state(self.workspace, state)
            local.wait_ready(fresh, state.host, self.deploy_cfg.readiness_timeout_s)
        except RecopsError as exc:
            log.error("rollback to %s failed: %s", state.previous_version, exc)
            local.stop_process(state.backend)
            self.backend_backoff.failed(now)
            return
        reason = (
            f"crash loop: {crashing} restarted {len(self.restarts_at)} times in "
            f"{self.deploy_cfg.crash_window_s:.0f}s"
        )
        record_rollback(self.workspace, crashing, state.previous_version, reason)
        state.version, state.bento_tag = state.previous_version, state.previous_bento_tag
        state.previous_version, state.previous_bento_tag = crashing, crashing_tag
        state.rolled_back_from = crashing
        state.last_event = f"{_now()} rolled back from {crashing}: {reason}"
        local.point_target(self.workspace, state)
        local.save_state(self.workspace, state)
        self.restarts_at.clear()
        self.backend_backoff.succeeded()
        log.error("rolled back from %s to %s (%s)", crashing, state.version, reason)

    # --- bookkeeping -------------------------------------------------------------------
    def _collect_children(self) -> None:
        """Reap exited children (restarted backends, adopted orphans); keep exit codes."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exit_codes[pid] = os.waitstatus_to_exitcode(status)

    def _event(self, role: str, dead: local.ProcessInfo | None) -> str:
        code = self.exit_codes.get(dead.pid) if dead else None
        how = f"exit code {code}" if code is not None else "exit code unknown (not our child)"
        return f"{_now()} {role} pid {dead.pid if dead else '?'} died ({how}); restarted"


def record_rollback(workspace: Workspace, crashing: str | None, target: str, reason: str) -> None:
    """A ``rollback`` event by ``supervisor`` when the crashing version is the champion."""
    from components.registry.store import ModelRegistry

    registry = ModelRegistry(workspace)
    if crashing is None or registry.state().champion != crashing:
        log.warning(
            "%s is not the champion; serving %s again without a registry change", crashing, target
        )
        return
    registry.rollback(to=target, actor="supervisor", reason=reason)


def become_subreaper() -> None:
    """Adopt orphaned descendants (a killed arbiter's workers) so they can be reaped."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main() -> None:
    parser = argparse.ArgumentParser(description="recops local deployment supervisor")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--deploy-json", required=True)
    parser.add_argument("--serve-json", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe otherwise
    proc_id = os.environ.get(local.PROC_ENV, f"supervisor-{os.getpid()}")
    Supervisor(
        workspace=Workspace.at(args.workspace),
        proc_id=proc_id,
        deploy_cfg=LocalDeployConfig.model_validate_json(args.deploy_json),
        serve_cfg=ServeConfig.model_validate_json(args.serve_json),
    ).run()


if __name__ == "__main__":
    main()
