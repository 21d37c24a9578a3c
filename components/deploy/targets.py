"""Deploy targets behind one small interface, chosen by ``deploy.target``.

A target puts a registered model version into service and says where it went. Flows and
the CLI call :func:`deploy_target` and ``.deploy(...)`` unconditionally; what differs per
target lives in its class and its settings class in :mod:`components.deploy.config`.
A target raises :class:`~components.errors.DeployFailed` when the version is not serving
afterwards; whatever served before keeps serving (the local target's switch-over is
health-checked; the others change nothing that serves until they succeed).

Adding a target: a settings class with its own ``target`` literal in the
``DeployConfig`` union, a class here with ``deploy`` and ``attach``, one branch in
:func:`deploy_target`. Deployment *modes* are the second method: ``attach`` serves a
challenger beside the champion as a shadow or canary (``deploy.mode``); ``deploy``
replaces the champion (and stops an attached challenger first).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

from components.deploy.config import (
    DeployConfig,
    KubernetesDeployConfig,
    LocalDeployConfig,
    NoDeployConfig,
    ServeConfig,
)
from components.errors import DeployFailed
from components.features.config import FeaturesConfig
from components.workspace import Workspace

log = logging.getLogger(__name__)
ChallengerMode = Literal["shadow", "canary"]


@dataclass(frozen=True)
class Deployed:
    """What a target did: which version, where it answers (None: not reachable from here)."""

    target: str
    version: str
    url: str | None = None
    previous_version: str | None = None
    detail: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for people."""
        where = self.url or ", ".join(f"{k}: {v}" for k, v in self.detail.items()) or "-"
        return f"{self.target}: {self.version} ({where})"


@dataclass(frozen=True)
class Attachment:
    """A challenger serving beside the champion, as ``deploy compare`` needs it."""

    mode: ChallengerMode
    version: str
    champion: str
    started_at: datetime
    serving_log_dir: Path  # where both arms' answers are logged (same request ids)
    proxy: dict[str, Any] = field(default_factory=dict)  # local proxy counters ({}: none)


class DeployTarget(Protocol):
    """Puts a registered model version into service."""

    @property
    def name(self) -> str:
        """The ``deploy.target`` value that selects this target."""
        ...

    def deploy(self, ws: Workspace, version: str) -> Deployed:
        """Serve ``version`` or raise :class:`DeployFailed` leaving serving as it was."""
        ...

    def attach(self, ws: Workspace, version: str, mode: ChallengerMode, actor: str) -> Deployed:
        """Serve ``version`` beside the champion as a shadow or canary, or raise
        :class:`DeployFailed` leaving serving as it was."""
        ...

    def challenger(self, ws: Workspace) -> Attachment | None:
        """The attached shadow/canary (None when there is none)."""
        ...

    def detach(self, ws: Workspace, reason: str) -> str | None:
        """Stop the attached challenger, recorded with ``reason``; its version (None when
        there was none)."""
        ...


@dataclass(frozen=True)
class LocalTarget:
    """A bento process on this machine behind the switch-over proxy."""

    settings: LocalDeployConfig
    serve: ServeConfig
    features: FeaturesConfig
    name: str = "local"

    def deploy(self, ws: Workspace, version: str) -> Deployed:
        from components.deploy.local import deploy_version

        done = deploy_version(ws, version, self.serve, self.settings, self.features)
        return Deployed(
            target=self.name,
            version=done.version,
            url=done.url,
            previous_version=done.previous_version,
            detail={"bento": done.bento_tag, "pid": str(done.pid)},
        )

    def attach(self, ws: Workspace, version: str, mode: ChallengerMode, actor: str) -> Deployed:
        from components.deploy.challenger import attach

        done = attach(ws, version, mode, self.serve, self.settings, self.features, actor=actor)
        return Deployed(
            target=self.name,
            version=done.version,
            url=done.url,
            previous_version=done.champion,
            detail={"mode": mode, "bento": done.bento_tag, "port": str(done.port)},
        )

    def challenger(self, ws: Workspace) -> Attachment | None:
        from components.deploy.challenger import split_stats
        from components.deploy.local import read_state

        state = read_state(ws)
        if state is None or state.challenger is None or state.version is None:
            return None
        ch = state.challenger
        log_dir = Path(self.serve.log.dir) if self.serve.log.dir else ws.serving_log_dir
        return Attachment(
            ch.mode, ch.version, state.version, ch.started_at, log_dir, split_stats(ws)
        )

    def detach(self, ws: Workspace, reason: str) -> str | None:
        from components.deploy.challenger import detach

        stopped = detach(ws, reason, self.settings.lock_wait_s)
        return stopped.version if stopped else None


@dataclass(frozen=True)
class KubernetesTarget:
    """Bento + rendered, validated manifests; applied with kubectl when ``apply`` is on."""

    settings: KubernetesDeployConfig
    serve: ServeConfig
    features: FeaturesConfig
    name: str = "k8s"

    def deploy(self, ws: Workspace, version: str) -> Deployed:
        from components.deploy.auth import k8s_auth_required
        from components.deploy.bento import build_bento
        from components.deploy.k8s import render_manifests

        # the key comes from the cluster's (required) Secret, not from this shell
        auth = k8s_auth_required(self.serve)
        bento = build_bento(ws, version, self.serve, self.settings, self.features, auth)
        ended = self._end_record(ws, version)  # a replace ends a shadow/canary first
        out = render_manifests(ws, bento.version, bento.tag, self.serve, self.settings)
        detail = {"bento": bento.tag, "image": out.image, "manifests": str(out.directory)}
        if self.settings.apply:
            kubectl_apply(out.directory, self.settings.kubectl_timeout_s)
            detail["applied"] = "kubectl apply"
            if ended:
                kubectl_delete(out.directory / "retired", self.settings.kubectl_timeout_s)
        return Deployed(target=self.name, version=bento.version, detail=detail)

    def _end_record(self, ws: Workspace, version: str) -> bool:
        """Before a replace: the rendered challenger's record ends (history says why)."""
        from components.deploy.k8s import clear_record, read_record
        from components.registry.store import ModelRegistry

        record = read_record(ws)
        if record is None:
            return False
        how = "promoted" if record.version == version else f"replaced by {version}"
        clear_record(ws)
        ModelRegistry(ws).record_mode(
            "challenger_stop",
            record.version,
            actor="recops",
            reason=f"{record.mode} stopped: champion {how}",
            metrics={"mode": record.mode, "target": self.name},
        )
        return True

    def challenger(self, ws: Workspace) -> Attachment | None:
        """From ``k8s-challenger.json``; the logs are the shared claim's serving-log/ as
        this machine sees it (``deploy.k8s_serving_log_dir``). No proxy counters: the
        mesh's own metrics (Istio's Prometheus) hold latency and errors per arm."""
        from components.deploy.k8s import read_record

        record = read_record(ws)
        if record is None:
            return None
        log_dir = self.settings.k8s_serving_log_dir
        return Attachment(
            record.mode,
            record.version,
            record.champion,
            record.started_at,
            Path(log_dir) if log_dir else ws.serving_log_dir,
        )

    def detach(self, ws: Workspace, reason: str) -> str | None:
        """The champion-only VirtualService over the mode's, the challenger's manifests to
        ``retired/`` (deleted from the cluster when ``apply`` is on), recorded."""
        from components.deploy.k8s import clear_record, read_record, retire_rendered
        from components.registry.store import ModelRegistry

        record = read_record(ws)
        if record is None:
            return None
        vs = retire_rendered(ws, self.serve, self.settings)
        if self.settings.apply:
            kubectl_apply(vs, self.settings.kubectl_timeout_s)
            kubectl_delete(vs.parent / "retired", self.settings.kubectl_timeout_s)
        clear_record(ws)
        ModelRegistry(ws).record_mode(
            "challenger_stop",
            record.version,
            actor="recops",
            reason=reason,
            metrics={"mode": record.mode, "target": self.name, "manifests": str(vs.parent)},
        )
        return record.version

    def attach(self, ws: Workspace, version: str, mode: ChallengerMode, actor: str) -> Deployed:
        """The challenger's bento, its Deployment + Service and the Istio VirtualService
        for ``mode`` (rendered, validated; applied when ``apply`` is on), recorded."""
        from components.deploy.auth import k8s_auth_required
        from components.deploy.bento import build_bento
        from components.deploy.k8s import (
            ChallengerRecord,
            read_record,
            render_challenger,
            save_record,
        )
        from components.registry.store import ModelRegistry

        champion = ModelRegistry(ws).champion()
        if champion is None or champion.version == version:
            raise DeployFailed(f"a {mode} needs a champion other than {version} to run beside")
        if (record := read_record(ws)) is not None:
            raise DeployFailed(
                f"{record.version} is already rendered as a {record.mode}",
                hint="`recops deploy conclude` or `recops deploy detach` first",
            )
        auth = k8s_auth_required(self.serve)
        bento = build_bento(ws, version, self.serve, self.settings, self.features, auth)
        out = render_challenger(ws, bento.version, bento.tag, mode, self.serve, self.settings)
        save_record(
            ws,
            ChallengerRecord(
                mode=mode,
                version=bento.version,
                champion=champion.version,
                bento_tag=bento.tag,
                started_at=datetime.now(timezone.utc),
                directory=str(out.directory),
            ),
        )
        detail = {
            "mode": mode,
            "bento": bento.tag,
            "image": out.image,
            "manifests": str(out.directory),
        }
        if self.settings.apply:
            kubectl_apply(out.directory, self.settings.kubectl_timeout_s)
            detail["applied"] = "kubectl apply"
        ModelRegistry(ws).record_mode(
            mode,
            bento.version,
            actor=actor,
            reason=f"{mode} rendered for Kubernetes ({out.directory})",
        )
        return Deployed(
            target=self.name,
            version=bento.version,
            previous_version=champion.version,
            detail=detail,
        )


@dataclass(frozen=True)
class NoTarget:
    """Nothing is served: the registry alone records the champion."""

    settings: NoDeployConfig
    name: str = "none"

    def deploy(self, ws: Workspace, version: str) -> Deployed:
        log.info("deploy.target is none: %s is not served", version)
        return Deployed(target=self.name, version=version)

    def attach(self, ws: Workspace, version: str, mode: ChallengerMode, actor: str) -> Deployed:
        raise DeployFailed(f"deploy.target is none: nothing serves, so no {mode} can run")

    def challenger(self, ws: Workspace) -> Attachment | None:
        return None

    def detach(self, ws: Workspace, reason: str) -> str | None:
        return None


def kubectl_apply(directory: object, timeout_s: float) -> None:
    """``kubectl apply -f directory``; a missing kubectl or a refusal is :class:`DeployFailed`."""
    _kubectl(["apply", "-f", str(directory)], timeout_s)


def _kubectl(args: list[str], timeout_s: float) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise DeployFailed(
            "deploy.apply is on but kubectl is not on PATH",
            hint="install kubectl or set deploy.apply=false to only render the manifests",
        )
    try:
        done = subprocess.run([kubectl, *args], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise DeployFailed(f"kubectl {args[0]} did not finish in {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeployFailed(f"kubectl {args[0]} failed: {last}")


def kubectl_delete(directory: Path, timeout_s: float) -> None:
    """``kubectl delete --ignore-not-found -f directory`` (a retired challenger's
    manifests); nothing to do when the folder is absent."""
    if directory.is_dir() and any(directory.iterdir()):
        _kubectl(["delete", "--ignore-not-found", "-f", str(directory)], timeout_s)


def deploy_target(
    deploy_cfg: DeployConfig, serve_cfg: ServeConfig, features_cfg: FeaturesConfig
) -> DeployTarget:
    """The target ``deploy_cfg`` selects, with its settings."""
    if isinstance(deploy_cfg, LocalDeployConfig):
        return LocalTarget(deploy_cfg, serve_cfg, features_cfg)
    if isinstance(deploy_cfg, KubernetesDeployConfig):
        return KubernetesTarget(deploy_cfg, serve_cfg, features_cfg)
    return NoTarget(deploy_cfg)
