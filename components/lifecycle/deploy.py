"""Deploy: put a registered version (default: the champion) into service through the
configured deploy target (:mod:`components.deploy.targets`)."""

from __future__ import annotations

from components.deploy.config import DeployConfig, ServeConfig
from components.deploy.targets import Deployed, DeployTarget, deploy_target
from components.errors import DeployFailed
from components.features.config import FeaturesConfig
from components.registry.store import ModelRegistry
from components.workspace import Workspace


def target_for(
    deploy_cfg: DeployConfig, serve_cfg: ServeConfig, features_cfg: FeaturesConfig
) -> DeployTarget:
    """The deploy target ``deploy.target`` selects (local, k8s or none)."""
    return deploy_target(deploy_cfg, serve_cfg, features_cfg)


def champion_or(ws: Workspace, version: str | None) -> str:
    """``version``, else the registry's champion; no champion is a :class:`DeployFailed`."""
    if version is not None:
        return ModelRegistry(ws).get(version).version
    champion = ModelRegistry(ws).champion()
    if champion is None:
        raise DeployFailed("there is no champion to deploy", hint="train one with `recops run`")
    return champion.version


def deploy(ws: Workspace, target: DeployTarget, version: str | None = None) -> Deployed:
    """Deploy ``version`` (default: the champion) through ``target``."""
    return target.deploy(ws, champion_or(ws, version))
