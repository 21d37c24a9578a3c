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
from typing import Literal, Protocol

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
        out = render_manifests(ws, bento.version, bento.tag, self.serve, self.settings)
        detail = {"bento": bento.tag, "image": out.image, "manifests": str(out.directory)}
        if self.settings.apply:
            kubectl_apply(out.directory, self.settings.kubectl_timeout_s)
            detail["applied"] = "kubectl apply"
        return Deployed(target=self.name, version=bento.version, detail=detail)

    def attach(self, ws: Workspace, version: str, mode: ChallengerMode, actor: str) -> Deployed:
        """The challenger's bento, its Deployment + Service and the Istio VirtualService
        for ``mode`` (rendered, validated; applied when ``apply`` is on), recorded."""
        from components.deploy.auth import k8s_auth_required
        from components.deploy.bento import build_bento
        from components.deploy.k8s import render_challenger
        from components.registry.store import ModelRegistry

        auth = k8s_auth_required(self.serve)
        bento = build_bento(ws, version, self.serve, self.settings, self.features, auth)
        out = render_challenger(ws, bento.version, bento.tag, mode, self.serve, self.settings)
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
        return Deployed(target=self.name, version=bento.version, detail=detail)


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


def kubectl_apply(directory: object, timeout_s: float) -> None:
    """``kubectl apply -f directory``; a missing kubectl or a refusal is :class:`DeployFailed`."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise DeployFailed(
            "deploy.apply is on but kubectl is not on PATH",
            hint="install kubectl or set deploy.apply=false to only render the manifests",
        )
    try:
        done = subprocess.run(
            [kubectl, "apply", "-f", str(directory)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        raise DeployFailed(f"kubectl apply did not finish in {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeployFailed(f"kubectl apply failed: {last}")


def deploy_target(
    deploy_cfg: DeployConfig, serve_cfg: ServeConfig, features_cfg: FeaturesConfig
) -> DeployTarget:
    """The target ``deploy_cfg`` selects, with its settings."""
    if isinstance(deploy_cfg, LocalDeployConfig):
        return LocalTarget(deploy_cfg, serve_cfg, features_cfg)
    if isinstance(deploy_cfg, KubernetesDeployConfig):
        return KubernetesTarget(deploy_cfg, serve_cfg, features_cfg)
    return NoTarget(deploy_cfg)
