"""The local deployment target: a supervised ``bentoml serve`` behind a switchable proxy.

Layout (all under ``workspace.deploy_dir``, guarded by ``lock_dir/deploy.lock``):

* ``local.json``    - the deployment state (version, bento, ports, pids, logs);
* ``backend.json``  - the proxy's target file (which backend port is live);
* ``logs/``         - one log per backend process and one for the proxy.

Switch-over (never leaves users without service): the new bento starts on a free
loopback port *beside* the old one; it must become ready (``/readyz``) and pass a smoke
test (``/metadata`` names the new version, ``/recommend`` on a known history answers
from the model); only then is ``backend.json`` rewritten, so the proxy on the public
port sends new connections to it; the public port answers with the new version (checked
through the proxy), and after ``deploy.switch_drain_s`` the old backend is stopped. Any
failure before the rewrite stops the new process and raises :class:`DeployFailed`; the
old backend and the proxy are untouched.

Process model: every process recops starts here (backend, proxy, supervisor) is
*recorded before it starts* - a line in ``processes.jsonl`` and a marker in its
environment (``RECOPS_DEPLOY_DIR``, ``RECOPS_PROC_ID``) that its children inherit - so a
process is found again even when the command that started it was killed before it could
write ``local.json``, and an arbiter's orphaned worker is found by its marker. Every
deploy, stop and supervisor pass (under the deploy lock) stops marked processes the state
does not list (:func:`reap_strays`, which names them from the ledger and compacts the
ledger to the processes still running) and points the proxy back at the recorded backend
(:func:`restore_target`). Processes start in their own session with output to log files,
so they outlive the CLI; :mod:`components.deploy.supervisor` restarts a dead backend or
proxy with backoff and rolls back a crash-looping model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import httpx
import psutil
from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict

from components.deploy import priority, swap
from components.deploy.auth import auth_headers, decide_auth
from components.deploy.bento import REPO_ROOT, BuiltBento, build_bento
from components.deploy.config import LocalDeployConfig, ServeConfig
from components.errors import DeployBusy, DeployFailed
from components.features.config import FeaturesConfig
from components.net import free_port
from components.quiet import quiet_environment
from components.workspace import Workspace

log = logging.getLogger(__name__)

STATE_FILE = "local.json"
TARGET_FILE = "backend.json"
LOCK_FILE = "deploy.lock"
OWNER_FILE = "deploy.lock.owner"  # who holds it (pid, what, since): named in the refusal
STOP_LOCK_WAIT_S = 60.0  # `recops serve stop` waits for a deploy in progress this long
STOP_TIMEOUT_S = 15.0
PROXY_POLL_S = 0.02  # while a new proxy opens its port
READY_POLL_S = 0.05  # /readyz polls while a new backend starts (a local GET and a log scan)
LEDGER_FILE = "processes.jsonl"
LEDGER_GRACE_S = 60.0  # a ledger line younger than this is kept (its process may be starting)
OWNER_ENV = "RECOPS_DEPLOY_DIR"  # which deployment a process belongs to
PROC_ENV = "RECOPS_PROC_ID"  # which recorded process (children inherit it)
SUPERVISED_ROLES = frozenset({"backend", "proxy", "supervisor"})


class ProcessInfo(BaseModel):
    """A detached process we started: enough to find it again and not kill a stranger."""

    model_config = ConfigDict(extra="forbid")

    pid: int
    create_time: float
    port: int
    log: str
    proc_id: str = ""  # the RECOPS_PROC_ID marker it and its children carry

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return (
                abs(proc.create_time() - self.create_time) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


class ChallengerState(BaseModel):
    """A shadow or canary bento beside the champion (components/deploy/challenger.py)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["shadow", "canary"]
    version: str
    bento_tag: str
    backend: ProcessInfo
    generation: str  # names this attachment in the proxy's split stats
    started_at: datetime
    settings: dict[str, Any] = {}  # the proxy's knobs (share, timeout_s, queue, ...)
    cpu_priority: priority.Priority = "normal"  # a shadow's tree runs lower (priority.py)

    def target_entry(self, host: str) -> dict[str, Any]:
        """The ``challenger`` entry of the proxy's target file."""
        return {
            **self.settings,
            "mode": self.mode,
            "host": host,
            "port": self.backend.port,
            "version": self.version,
            "generation": self.generation,
        }


class LocalState(BaseModel):
    """What is deployed locally (``local.json``)."""

    model_config = ConfigDict(extra="forbid")

    host: str
    public_port: int
    version: str | None = None
    bento_tag: str | None = None
    backend: ProcessInfo | None = None
    proxy: ProcessInfo | None = None
    previous_version: str | None = None
    previous_bento_tag: str | None = None
    deployed_at: datetime | None = None
    supervisor: ProcessInfo | None = None
    supervisor_settings: str = ""  # digest of the serve+deploy settings it runs with
    restarts: int = 0  # backend restarts by the supervisor since this version was deployed
    proxy_restarts: int = 0
    last_event: str | None = None  # the supervisor's last restart/rollback, in words
    rolled_back_from: str | None = None  # set when a crash loop rolled back
    # decided at deploy time (components/deploy/auth.py) and recorded in the bento too;
    # the next deploy keeps it unless serve.auth is "off"
    auth_required: bool = False
    challenger: ChallengerState | None = None  # a shadow or canary beside ``backend``


@dataclass(frozen=True)
class Deployment:
    """The result of a successful deploy."""

    version: str
    bento_tag: str
    url: str
    port: int
    pid: int
    previous_version: str | None
    # seconds per switch-over step: bento build, process start until /readyz, smoke tests
    # and the switch (the old backend's drain comes after the new version answers)
    timings: dict[str, float] = field(default_factory=dict)
    mode: str = "process_start"  # or "hot_swap": the running backend loaded the model


# --- the deploy lock ----------------------------------------------------------------------
@contextlib.contextmanager
def deploy_lock(workspace: Workspace, what: str, wait_s: float) -> Iterator[None]:
    """Hold the deployment's lock while ``what`` (words: "recops deploy v3") runs.

    Waits at most ``wait_s`` (``deploy.lock_wait_s``): a second deploy command started
    while one runs gets a one-line :class:`DeployBusy` naming the holder (pid, what,
    for how long) from ``deploy.lock.owner``, written while the lock is held."""
    workspace.ensure()
    lock = FileLock(str(workspace.lock_dir / LOCK_FILE), timeout=wait_s)
    try:
        lock.acquire()
    except Timeout:
        raise DeployBusy(
            f"another deploy command holds the deploy lock ({lock_holder(workspace)}); "
            f"gave up after {wait_s:g} s",
            hint="wait for it to finish, then try again (deploy.lock_wait_s sets the wait)",
        ) from None
    owner = workspace.lock_dir / OWNER_FILE
    try:
        _write_atomic(owner, json.dumps({"pid": os.getpid(), "what": what, "at": time.time()}))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def lock_holder(workspace: Workspace) -> str:
    """Who holds the deploy lock, in words ("pid 12, recops deploy v3, for 40 s")."""
    try:
        owner = json.loads((workspace.lock_dir / OWNER_FILE).read_text())
        held = time.time() - float(owner["at"])
        return f"pid {int(owner['pid'])}, {owner['what']}, for {held:.0f} s"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


# --- state ----------------------------------------------------------------------------


def read_state(workspace: Workspace) -> LocalState | None:
    """The deployment record, None when nothing was deployed.

    A record that cannot be read (torn by a full disk, edited by hand) is a one-line
    :class:`DeployFailed` naming the file and what to do, never a validation traceback.
    """
    path = workspace.deploy_dir / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return LocalState.model_validate_json(text)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise DeployFailed(
            f"the local deployment record {path} is unreadable "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})",
            hint="`recops serve stop` sets it aside and stops what it can find; then deploy again",
        ) from None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_state(workspace: Workspace, state: LocalState) -> None:
    """Write ``local.json`` atomically (callers hold the deploy lock)."""
    _write_atomic(workspace.deploy_dir / STATE_FILE, state.model_dump_json(indent=2))


# --- processes ------------------------------------------------------------------------
def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _spawn(
    cmd: list[str], log_path: Path, port: int, env: dict[str, str], cwd: Path, role: str = "other"
) -> ProcessInfo:
    """Start ``cmd`` detached (own session, no stdin, output to ``log_path``), recorded
    first: a ledger line and the process marker in its environment (see module doc)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc_id = f"{role}-{uuid.uuid4().hex[:12]}"
    _record_intent(Path(env[OWNER_ENV]), proc_id, role, cmd)
    env = {**env, PROC_ENV: proc_id}
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=str(cwd),
        )
    return ProcessInfo(
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        port=port,
        log=str(log_path),
        proc_id=proc_id,
    )


def _record_intent(deploy_dir: Path, proc_id: str, role: str, cmd: list[str]) -> None:
    line = {
        "proc_id": proc_id,
        "role": role,
        "cmd": cmd,
        "by_pid": os.getpid(),
        "at": datetime.now(timezone.utc).isoformat(),
    }
    with (deploy_dir / LEDGER_FILE).open("a") as fh:
        fh.write(json.dumps(line) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def marked_processes(workspace: Workspace) -> dict[str, list[psutil.Process]]:
    """Running processes that carry this deployment's marker, by ``RECOPS_PROC_ID``."""
    owner = str(workspace.deploy_dir)
    found: dict[str, list[psutil.Process]] = {}
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get(OWNER_ENV) != owner or proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.Error, OSError):
            continue
        found.setdefault(env.get(PROC_ENV, ""), []).append(proc)
    return found


def reap_strays(
    workspace: Workspace, state: LocalState | None, roles: frozenset[str] = SUPERVISED_ROLES
) -> int:
    """Stop marked processes of ``roles`` that ``state`` does not list (a killed deploy's
    backend, an undrained old backend, a replaced supervisor); returns how many. Call it
    under the deploy lock: a deploy in progress has processes not listed yet."""
    listed = (
        (
            state.backend,
            state.proxy,
            state.supervisor,
            state.challenger.backend if state.challenger else None,
        )
        if state is not None
        else ()
    )
    keep = {info.proc_id for info in listed if info is not None and info.proc_id}
    me = os.getpid()
    marked = marked_processes(workspace)
    ledger = compact_ledger(workspace.deploy_dir, set(marked))
    stray_ids = [i for i in marked if i not in keep and i.split("-", 1)[0] in roles]
    stray = [proc for i in stray_ids for proc in marked[i] if proc.pid != me]
    if stray:
        named = {i: ledger[i].get("cmd", "?")[2:4] if i in ledger else "?" for i in stray_ids}
        log.warning(
            "stopping %d stray process(es) %s: %s", len(stray), [p.pid for p in stray], named
        )
        _terminate(stray)
    return len(stray)


def compact_ledger(
    deploy_dir: Path, running: set[str], grace_s: float = LEDGER_GRACE_S
) -> dict[str, dict[str, Any]]:
    """Rewrite ``processes.jsonl`` keeping only the lines of processes still running (by
    marker) or recorded within ``grace_s`` (one may be between its line and its start);
    returns the kept lines by ``proc_id``. The ledger stays as small as what runs."""
    path = deploy_dir / LEDGER_FILE
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    kept: dict[str, dict[str, Any]] = {}
    cutoff = datetime.now(timezone.utc).timestamp() - grace_s
    for line in lines:
        try:
            entry = json.loads(line)
            recent = datetime.fromisoformat(entry["at"]).timestamp() >= cutoff
        except (ValueError, KeyError, TypeError):  # a torn last line: dropped
            continue
        if entry.get("proc_id") in running or recent:
            kept[str(entry.get("proc_id"))] = entry
    if len(kept) < len(lines):
        _write_atomic(path, "".join(json.dumps(e) + "\n" for e in kept.values()))
    return kept


def _terminate(procs: list[psutil.Process], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL what is left after ``timeout``; reap our own children."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    for proc in procs:
        _reap(proc.pid)


def stop_process(info: ProcessInfo | None, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop a recorded process and everything that carries its marker (BentoML's arbiter
    and its workers, also a worker orphaned by a killed arbiter): SIGTERM its process
    group, SIGKILL after ``timeout``. A reused pid (a stranger) is never signalled."""
    if info is None:
        return
    if info.alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and info.alive():
            _reap(info.pid)
            time.sleep(0.1)
        if info.alive():
            log.warning("pid %d did not stop in %.0fs; killing its group", info.pid, timeout)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(info.pid, signal.SIGKILL)
        _reap(info.pid)
    if info.proc_id:  # random per start: carrying it means we started it (or its parent)
        left = [p for p in psutil.process_iter() if _carries(p, info.proc_id)]
        if left:
            _terminate(left, timeout)


def set_cpu_priority(info: ProcessInfo, cpu_priority: priority.Priority) -> bool:
    """Every process carrying ``info``'s marker (arbiter and workers), every thread, at
    ``cpu_priority``; False when the kernel refused (raising it needs CAP_SYS_NICE)."""
    pids = [p.pid for p in psutil.process_iter() if _carries(p, info.proc_id)]
    return bool(pids) and priority.apply(pids, cpu_priority)


def _carries(proc: psutil.Process, proc_id: str) -> bool:
    try:
        return proc.pid != os.getpid() and proc.environ().get(PROC_ENV) == proc_id
    except (psutil.Error, OSError):
        return False


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _child_env(workspace: Workspace) -> dict[str, str]:
    env = dict(os.environ)
    env["BENTOML_HOME"] = str(workspace.bentoml_home)
    env["RECOPS_HOME"] = str(workspace.root)
    env[OWNER_ENV] = str(workspace.deploy_dir)
    env.pop(PROC_ENV, None)  # a supervisor's children get their own marker
    return quiet_environment(env)


def start_backend(workspace: Workspace, bento_tag: str, host: str) -> ProcessInfo:
    """``bentoml serve <bento_tag>`` on a free loopback port."""
    port = free_port(host)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    log_path = workspace.deploy_dir / "logs" / f"backend-{bento_tag.replace(':', '-')}-{stamp}.log"
    cmd = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", host, "--port", str(port)]
    # cwd outside the repo: the bento must run its own copy of services/ and components/
    return _spawn(cmd, log_path, port, _child_env(workspace), workspace.deploy_dir, "backend")


def start_proxy(workspace: Workspace, host: str, port: int) -> ProcessInfo:
    """The proxy on ``host:port``, returned once the port accepts connections."""
    return proxy_listening(spawn_proxy(workspace, host, port), host)


def spawn_proxy(workspace: Workspace, host: str, port: int) -> ProcessInfo:
    """The proxy process started on ``host:port`` (not yet listening: see
    :func:`proxy_listening`); a first deploy starts it beside the new backend so its
    interpreter start overlaps the backend's."""
    log_path = workspace.deploy_dir / "logs" / "proxy.log"
    cmd = [
        sys.executable,
        "-m",
        "components.deploy.proxy",
        "--host",
        host,
        "--port",
        str(port),
        "--target-file",
        str(workspace.deploy_dir / TARGET_FILE),
    ]
    return _spawn(cmd, log_path, port, _child_env(workspace), REPO_ROOT, "proxy")


def proxy_listening(info: ProcessInfo, host: str, timeout: float = 30.0) -> ProcessInfo:
    """``info`` once its port accepts connections; DeployFailed (the process stopped)
    when it dies or does not listen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_in_use(host, info.port):
            return info
        _reap(info.pid)
        if not info.alive():
            break
        time.sleep(PROXY_POLL_S)
    stop_process(info)
    raise DeployFailed(f"the proxy did not open {host}:{info.port} (see {info.log})")


# --- checks ---------------------------------------------------------------------------
def wait_ready(info: ProcessInfo, host: str, timeout: float) -> None:
    """Poll ``/readyz`` until 200; DeployFailed when the process dies or time runs out."""
    url = f"http://{host}:{info.port}/readyz"
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            _reap(info.pid)
            if not info.alive():
                raise DeployFailed(
                    f"the new server exited before it was ready: "
                    f"{_last_error(info.log)} (log: {info.log})"
                )
            if (failure := startup_failure(info.log)) is not None:
                raise DeployFailed(f"the new server failed to load: {failure} (log: {info.log})")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(READY_POLL_S)  # each switch-over waits up to one interval extra
    raise DeployFailed(f"the new server was not ready after {timeout:.0f}s (log: {info.log})")


def smoke_test(base_url: str, version: str, serve_cfg: ServeConfig) -> None:
    """``/metadata`` names ``version`` and ``/recommend`` answers from the model."""
    headers = auth_headers(serve_cfg)
    try:
        with httpx.Client(base_url=base_url, timeout=30.0, headers=headers) as client:
            meta = _json_object(client.get("/metadata"))
            served = meta.get("model_version")
            if served != version:
                raise DeployFailed(f"smoke test: {base_url} serves {served}, expected {version}")
            sample = meta.get("sample_items") or []
            body = _json_object(client.post("/recommend", json={"history": sample, "k": 5}))
    except httpx.HTTPError as exc:
        raise DeployFailed(f"smoke test against {base_url} failed: {exc}") from exc
    if sample and (body.get("source") != "model" or not body.get("items")):
        raise DeployFailed(f"smoke test: /recommend did not answer from the model: {body}")


def _json_object(response: httpx.Response) -> dict[str, Any]:
    """The JSON object a 2xx answer carries; :class:`DeployFailed` for an error status or
    a body that is not a JSON object (another program on the port, a proxy's error page)."""
    response.raise_for_status()
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        kind = response.headers.get("content-type", "no content type")
        raise DeployFailed(
            f"smoke test: {response.request.url} answered {response.status_code} with a body "
            f"that is not a JSON object ({kind}): {response.text[:80]!r}"
        )
    return body


STARTUP_ERROR_MARKER = "Initializing service error"  # BentoML logs it when __init__ raises


def startup_failure(log_path: str) -> str | None:
    """The exception line when BentoML reported a failing service ``__init__``, else None
    (its arbiter would keep retrying the worker; we fail fast instead)."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return None
    at = text.find(STARTUP_ERROR_MARKER)
    if at < 0:
        return None
    for line in text[at:].splitlines()[1:]:
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head.strip():
            return line.strip()[:300]
    return "service initialisation raised"


def _last_error(log_path: str) -> str:
    try:
        lines = Path(log_path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors or lines or ["no output"])[-1].strip()[:300]


class _Clock:
    """Lap times of the switch-over steps (seconds, rounded)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 2)
        self.laps["total_s"] = round(now - self._start, 2)
        self._last = now


# --- target and supervision -------------------------------------------------------------
def _write_target(
    workspace: Workspace,
    host: str,
    port: int,
    version: str | None,
    challenger: dict[str, Any] | None = None,
) -> None:
    doc: dict[str, Any] = {"host": host, "port": port, "version": version}
    if challenger is not None:
        doc["challenger"] = challenger
    _write_atomic(workspace.deploy_dir / TARGET_FILE, json.dumps(doc))


def point_target(workspace: Workspace, state: LocalState) -> None:
    """Send the proxy's new connections to ``state.backend`` (and its challenger)."""
    if state.backend is not None:
        challenger = state.challenger.target_entry(state.host) if state.challenger else None
        _write_target(workspace, state.host, state.backend.port, state.version, challenger)


def restore_target(workspace: Workspace, state: LocalState | None) -> bool:
    """Point the proxy back at the recorded backend when a killed deploy left the target
    file naming another port; True when it was rewritten."""
    if state is None or state.backend is None or not state.backend.alive():
        return False
    try:
        target = json.loads((workspace.deploy_dir / TARGET_FILE).read_text())
    except (OSError, ValueError):
        target = {}
    has_challenger = target.get("challenger", {}).get("generation") if target else None
    wants = state.challenger.generation if state.challenger else None
    if target.get("port") == state.backend.port and has_challenger == wants:
        return False
    log.warning("proxy target %s disagreed with the state; pointing it back", target)
    point_target(workspace, state)
    return True


def is_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """``/readyz`` answers 200 on ``host:port``."""
    try:
        return httpx.get(f"http://{host}:{port}/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def start_supervisor(
    workspace: Workspace, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> ProcessInfo:
    """``python -m components.deploy.supervisor`` for this workspace (detached, recorded)."""
    cmd = [
        sys.executable,
        "-m",
        "components.deploy.supervisor",
        "--workspace",
        str(workspace.root),
        "--deploy-json",
        deploy_cfg.model_dump_json(),
        "--serve-json",
        serve_cfg.model_dump_json(),
    ]
    log_path = workspace.deploy_dir / "logs" / "supervisor.log"
    return _spawn(cmd, log_path, 0, _child_env(workspace), REPO_ROOT, "supervisor")


def ensure_supervisor(
    workspace: Workspace,
    state: LocalState,
    serve_cfg: ServeConfig,
    deploy_cfg: LocalDeployConfig,
    replace: bool = True,
) -> bool:
    """Start the supervisor when the recorded one is not running or (``replace``: a
    deploy) was started with other settings, which it would go on applying; under the
    deploy lock. True when one was started."""
    settings = supervisor_settings(serve_cfg, deploy_cfg)
    running = state.supervisor is not None and state.supervisor.alive()
    if running and (state.supervisor_settings == settings or not replace):
        return False
    if running:  # a redeploy with other settings: the old supervisor would apply its own
        log.info("deploy settings changed: replacing the supervisor")
        stop_process(state.supervisor)
    state.supervisor = start_supervisor(workspace, serve_cfg, deploy_cfg)
    state.supervisor_settings = settings
    save_state(workspace, state)
    log.info("supervisor started (pid %d)", state.supervisor.pid)
    return True


def supervisor_settings(serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig) -> str:
    """A digest of the settings a supervisor is started with (it reads them only then)."""
    text = serve_cfg.model_dump_json() + deploy_cfg.model_dump_json()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- public API -----------------------------------------------------------------------
def deploy_version(
    workspace: Workspace,
    version: str,
    serve_cfg: ServeConfig,
    deploy_cfg: LocalDeployConfig,
    features_cfg: FeaturesConfig,
) -> Deployment:
    """Build the bento for ``version`` and switch the local deployment to it (see module doc).

    Raises :class:`DeployFailed` (the previous deployment keeps serving) when the build,
    start-up, readiness or smoke test fails, or the public port belongs to someone else.
    """
    host = serve_cfg.host
    with deploy_lock(workspace, f"recops deploy {version}", deploy_cfg.lock_wait_s):
        return _deploy_locked(workspace, version, host, serve_cfg, deploy_cfg, features_cfg)


def deployment_port(state: LocalState | None, serve_cfg: ServeConfig) -> int:
    """The public port a (re)deploy uses: the running deployment's recorded port (its
    proxy keeps it; moving it needs `recops serve stop`), else ``serve.port``."""
    if state is None or state.proxy is None or not state.proxy.alive():
        return serve_cfg.port
    if state.public_port != serve_cfg.port:
        log.info(
            "the local deployment listens on port %d (serve.port %d ignored; "
            "`recops serve stop` first to move it)",
            state.public_port,
            serve_cfg.port,
        )
    return state.public_port


def _deploy_locked(
    workspace: Workspace,
    version: str,
    host: str,
    serve_cfg: ServeConfig,
    deploy_cfg: LocalDeployConfig,
    features_cfg: FeaturesConfig,
) -> Deployment:
    state = read_state(workspace)
    reap_strays(workspace, state)  # what a killed deploy or drain left behind
    restore_target(workspace, state)
    proxy = state.proxy if state and state.proxy and state.proxy.alive() else None
    port = deployment_port(state, serve_cfg)
    if proxy is None and port_in_use(host, port):
        raise DeployFailed(
            f"port {port} on {host} is in use by another program",
            hint="set serve.port to a free port",
        )
    old_backend = state.backend if state and state.backend and state.backend.alive() else None
    auth_required = decide_auth(serve_cfg, bool(state and state.auth_required))
    same_auth = auth_required == bool(state and state.auth_required)
    adopted = _take_challenger(workspace, state, version, same_auth)

    clock = _Clock()
    mode = "hot_swap"
    backend: ProcessInfo | None = None
    if adopted is not None:  # the promoted shadow/canary: its warm process takes over
        bento_tag, bento_version = adopted.bento_tag, adopted.version
        clock.lap("build_s")
        mode, backend = "challenger", adopted.backend
    else:
        bento = build_bento(workspace, version, serve_cfg, deploy_cfg, features_cfg, auth_required)
        bento_tag, bento_version = bento.tag, bento.version
        clock.lap("build_s")
        swappable = deploy_cfg.hot_swap and proxy is not None and old_backend is not None
        if swappable and state is not None and old_backend is not None:
            backend = _switch_in_place(workspace, state, old_backend, bento, serve_cfg, deploy_cfg)
        if backend is not None:
            clock.lap("swap_and_checks_s")
        else:
            mode = "process_start"
    if mode != "hot_swap":
        backend, proxy = _switch_by_process(
            workspace,
            state,
            old_backend,
            proxy,
            (bento_tag, bento_version),
            backend,
            port,
            serve_cfg,
            deploy_cfg,
            clock,
        )
    assert backend is not None and proxy is not None
    previous = state.version if state else None
    new_state = LocalState(
        host=host,
        public_port=port,
        version=bento_version,
        bento_tag=bento_tag,
        backend=backend,
        proxy=proxy,
        previous_version=previous,
        previous_bento_tag=state.bento_tag if state else None,
        deployed_at=datetime.now(timezone.utc),
        supervisor=state.supervisor if state else None,
        supervisor_settings=state.supervisor_settings if state else "",
        auth_required=auth_required,
    )
    save_state(workspace, new_state)  # from here the old backend is a stray if we die
    if old_backend is not None and old_backend.pid != backend.pid:
        time.sleep(deploy_cfg.switch_drain_s)
        stop_process(old_backend)
    if deploy_cfg.supervise:
        ensure_supervisor(workspace, new_state, serve_cfg, deploy_cfg)
    log.info(
        "deployed %s at http://%s:%d by %s (previous: %s; %s)",
        bento_version,
        host,
        port,
        mode,
        previous,
        clock.laps,
    )
    return Deployment(
        version=bento_version,
        bento_tag=bento_tag,
        url=f"http://{host}:{port}",
        port=port,
        pid=backend.pid,
        previous_version=previous,
        timings=clock.laps,
        mode=mode,
    )


def _take_challenger(
    workspace: Workspace, state: LocalState | None, version: str, same_auth: bool
) -> ChallengerState | None:
    """Before a replace: detach an attached shadow/canary (recorded in the history); it is
    returned, still running, when it serves ``version`` with the same auth decision - the
    promoted challenger's warm process becomes the new backend (no build, no start)."""
    if state is None or state.challenger is None:
        return None
    from components.deploy.challenger import detach_locked

    challenger = state.challenger
    keep = challenger.version == version and same_auth and challenger.backend.alive()
    if keep and challenger.cpu_priority != "normal":  # it answers users from now on
        keep = set_cpu_priority(challenger.backend, "normal")
        if not keep:
            log.warning("cannot raise the shadow's CPU priority: starting a fresh process")
    kept = "promoted" if challenger.version == version else f"replaced by {version}"
    detach_locked(
        workspace, state, f"{challenger.mode} stopped: champion {kept}", stop_backend=not keep
    )
    return challenger if keep else None


def _switch_by_process(
    workspace: Workspace,
    state: LocalState | None,
    old_backend: ProcessInfo | None,
    proxy: ProcessInfo | None,
    bento: tuple[str, str],
    backend: ProcessInfo | None,
    port: int,
    serve_cfg: ServeConfig,
    deploy_cfg: LocalDeployConfig,
    clock: _Clock,
) -> tuple[ProcessInfo, ProcessInfo]:
    """Start bento ``(tag, version)`` beside the old backend (or take ``backend``, the
    promoted challenger's running process), check it, point the proxy (started when there
    is none) at it; ``(backend, proxy)``. On any failure the new process is stopped and
    the proxy points at the old backend again."""
    host = serve_cfg.host
    tag, version = bento
    if backend is None:
        backend = start_backend(workspace, tag, host)
        log.info("started %s on port %d (pid %d)", tag, backend.port, backend.pid)
    new_proxy = spawn_proxy(workspace, host, port) if proxy is None else None
    try:
        wait_ready(backend, host, deploy_cfg.readiness_timeout_s)
        clock.lap("start_to_ready_s")
        smoke_test(f"http://{host}:{backend.port}", version, serve_cfg)
        if new_proxy is not None:
            proxy = proxy_listening(new_proxy, host)
        _write_target(workspace, host, backend.port, version)
        smoke_test(f"http://{host}:{port}", version, serve_cfg)
        clock.lap("checks_and_switch_s")
    except BaseException:
        stop_process(backend)
        if new_proxy is not None:
            stop_process(new_proxy)
        if old_backend is not None:  # the proxy may already point at the new port
            _write_target(workspace, host, old_backend.port, state.version if state else None)
        raise
    assert proxy is not None
    return backend, proxy


def _switch_in_place(
    workspace: Workspace,
    state: LocalState,
    backend: ProcessInfo,
    bento: BuiltBento,
    serve_cfg: ServeConfig,
    deploy_cfg: LocalDeployConfig,
) -> ProcessInfo | None:
    """Hot swap (components/deploy/swap.py): the running ``backend`` serves ``bento``'s
    model from now on, checked on its port and the public one; None (nothing changed)
    when it refuses or fails, so the caller starts a process instead. A swap that passed
    the service's own check but fails the public one restarts the recorded bento."""
    base = f"http://{state.host}:{backend.port}"
    try:
        request_swap(base, workspace, bento, serve_cfg, deploy_cfg.readiness_timeout_s)
    except DeployFailed as exc:
        log.warning("no hot swap (%s): starting a new process", exc.message)
        return None
    try:
        smoke_test(base, bento.version, serve_cfg)
        smoke_test(f"http://{state.host}:{state.public_port}", bento.version, serve_cfg)
    except DeployFailed:
        log.error("the swapped model failed its check: restarting %s", state.bento_tag)
        stop_process(backend)
        if state.bento_tag is not None:
            state.backend = start_backend(workspace, state.bento_tag, state.host)
            save_state(workspace, state)
            wait_ready(state.backend, state.host, deploy_cfg.readiness_timeout_s)
            point_target(workspace, state)
        raise
    return backend


def request_swap(
    base_url: str, workspace: Workspace, bento: BuiltBento, serve_cfg: ServeConfig, timeout: float
) -> dict[str, Any]:
    """Ask the backend at ``base_url`` to serve ``bento``'s model in place; its new
    ``/metadata``. :class:`DeployFailed` (one line) when it refuses or cannot."""
    headers = {
        **auth_headers(serve_cfg),
        swap.TOKEN_HEADER: swap.ensure_token(workspace.deploy_dir),
    }
    body = {
        "settings": bento.args,
        "source_digest": swap.source_digest(bento.path / "src"),
        "model_path": bento.model_path,
    }
    try:
        answer = httpx.post(base_url + swap.SWAP_PATH, json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise DeployFailed(f"hot swap request to {base_url} failed: {exc}") from exc
    if answer.status_code != 200:
        try:
            reason = str(answer.json().get("error"))
        except (ValueError, AttributeError):
            reason = answer.text[:120]
        raise DeployFailed(f"{answer.status_code} {reason}")
    return _json_object(answer)


HEALTH_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}  # Nagios plugin codes


def serve_status(
    workspace: Workspace, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig | None = None
) -> dict[str, Any]:
    """What is deployed, whether it answers, and what the supervisor did (never raises for
    a dead deployment). ``health`` is ``ok`` (the public port serves the recorded version,
    which is the registry's champion, and the supervisor runs), ``warning`` (it serves, but
    not the champion, or something was restarted, rolled back or repaired now), ``critical`` (deployed, but not serving) or
    ``unknown`` (nothing deployed); ``exit_code`` follows the Nagios plugin convention.

    With ``deploy_cfg`` it also repairs what the next command must: strays are stopped,
    the proxy target restored and a dead supervisor started again (reported).
    """
    repaired: list[str] = []
    if deploy_cfg is not None:
        repaired = _repair(workspace, serve_cfg, deploy_cfg)
    state = read_state(workspace)
    if state is None or state.version is None:
        return {"deployed": False, "health": "unknown", "exit_code": HEALTH_CODES["unknown"]}
    base = f"http://{state.host}:{state.public_port}"
    health: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=base, timeout=5.0, headers=auth_headers(serve_cfg)) as client:
            health["healthz"] = client.get("/healthz").status_code
            health["readyz"] = client.get("/readyz").status_code
            meta = client.get("/metadata")
            health["serving_version"] = _served_version(meta)
            health["serving_log"] = serving_log_counters(client.get("/metrics").text)
    except httpx.HTTPError as exc:
        health["error"] = str(exc)
    out = {
        "deployed": True,
        "auth_required": state.auth_required,
        "version": state.version,
        "bento_tag": state.bento_tag,
        "url": base,
        "port": state.public_port,
        "backend_port": state.backend.port if state.backend else None,
        "pid": state.backend.pid if state.backend else None,
        "backend_alive": bool(state.backend and state.backend.alive()),
        "proxy_pid": state.proxy.pid if state.proxy else None,
        "proxy_alive": bool(state.proxy and state.proxy.alive()),
        "supervisor_pid": state.supervisor.pid if state.supervisor else None,
        "supervisor_alive": bool(state.supervisor and state.supervisor.alive()),
        "restarts": state.restarts,
        "proxy_restarts": state.proxy_restarts,
        "last_event": state.last_event,
        "rolled_back_from": state.rolled_back_from,
        "repaired": repaired,
        "previous_version": state.previous_version,
        "champion": _champion(workspace),
        "deployed_at": state.deployed_at.isoformat() if state.deployed_at else None,
        "log": state.backend.log if state.backend else None,
        "challenger": _challenger_status(state),
        **health,
    }
    out["health"] = _health(out)
    out["exit_code"] = HEALTH_CODES[out["health"]]
    return out


def _served_version(meta: httpx.Response) -> str | None:
    """``model_version`` from a ``/metadata`` answer; None when it is not ours (an error
    status or a body that is not a JSON object)."""
    try:
        body = meta.json() if meta.is_success else None
    except ValueError:
        return None
    return body.get("model_version") if isinstance(body, dict) else None


def _challenger_status(state: LocalState) -> dict[str, Any] | None:
    """The attached shadow/canary in a few words (None when there is none)."""
    ch = state.challenger
    if ch is None:
        return None
    return {
        "mode": ch.mode,
        "version": ch.version,
        "alive": ch.backend.alive(),
        "since": ch.started_at.isoformat(),
        "share": ch.settings.get("share"),
        "cpu_priority": ch.cpu_priority,
    }


def _health(status: dict[str, Any]) -> str:
    serving = status.get("readyz") == 200 and status.get("serving_version") == status["version"]
    if not serving:
        return "critical"
    degraded = (
        status["champion"] != status["version"]  # e.g. a deploy killed before its promote
        or not status["supervisor_alive"]
        or status["repaired"]
        or status["restarts"]
        or status["proxy_restarts"]
        or status["rolled_back_from"]
    )
    return "warning" if degraded else "ok"


def _champion(workspace: Workspace) -> str | None:
    from components.errors import RecopsError
    from components.registry.store import ModelRegistry

    try:
        return ModelRegistry(workspace).state().champion
    except RecopsError:
        return None


def _repair(
    workspace: Workspace, serve_cfg: ServeConfig, deploy_cfg: LocalDeployConfig
) -> list[str]:
    """Reap strays, restore the target, restart a dead supervisor; what was done, in words.
    Skipped (nothing reported) while a deploy holds the lock."""
    done: list[str] = []
    try:
        with FileLock(str(workspace.lock_dir / LOCK_FILE), timeout=1.0):
            state = read_state(workspace)
            if (n := reap_strays(workspace, state)) > 0:
                done.append(f"stopped {n} stray process(es)")
            if restore_target(workspace, state):
                done.append("pointed the proxy back at the recorded backend")
            supervised = state is not None and state.version is not None and deploy_cfg.supervise
            if (
                supervised
                and state
                and ensure_supervisor(workspace, state, serve_cfg, deploy_cfg, replace=False)
            ):
                done.append("restarted the supervisor")
    except Timeout:
        pass
    return done


def serving_log_counters(metrics: str) -> dict[str, float]:
    """The serving log's counters from a Prometheus page (rows by outcome, write errors)."""
    found: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("recops_serving_log_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            if "_created" not in name:
                found[name] = float(value)
    return found


def _set_aside_unreadable_state(workspace: Workspace) -> LocalState | None:
    """Move an unreadable ``local.json`` to ``local.json.unreadable-<time>`` (kept for a
    post-mortem); nothing it named can be found from it, so there is nothing to stop."""
    path = workspace.deploy_dir / STATE_FILE
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{STATE_FILE}.unreadable-{stamp}")
    os.replace(path, aside)
    log.warning("set aside the unreadable deployment record as %s", aside)
    return None


def stop_local(workspace: Workspace) -> LocalState | None:
    """Stop the supervisor, the backend and the proxy - and every other process this
    deployment's marker is on; returns what was recorded as running (None if nothing)."""
    with deploy_lock(workspace, "recops serve stop", STOP_LOCK_WAIT_S):
        try:
            state = read_state(workspace)
        except DeployFailed:  # unreadable: set aside (never deleted); strays are reaped below
            state = _set_aside_unreadable_state(workspace)
        if state is not None:
            stop_process(state.supervisor)  # first: it would restart the others
            stop_process(state.challenger.backend if state.challenger else None)
            stop_process(state.backend)
            stop_process(state.proxy)
        reap_strays(workspace, None)
        (workspace.deploy_dir / TARGET_FILE).unlink(missing_ok=True)
        (workspace.deploy_dir / STATE_FILE).unlink(missing_ok=True)
        return state
