"""Whether a deployment requires an API key, decided once at deploy time and recorded.

The key itself is never stored: ``serve.api_key_file`` (a mounted secret) or the
environment variable named by ``serve.api_key_env`` hold it; the bento arguments and the
deployment record hold those references and ``auth_required``. The bento refuses to start
when auth is required and it cannot read the key (fail closed), so whether a deployment
is protected never depends on which shell happened to deploy it.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.deploy.config import ServeConfig
from components.errors import DeployFailed


def read_api_key(serve_cfg: ServeConfig) -> str | None:
    """The key from ``serve.api_key_file`` or ``$serve.api_key_env``; None when neither
    is set (or the value is empty). An unreadable key file is a :class:`DeployFailed`."""
    if serve_cfg.api_key_file:
        path = Path(serve_cfg.api_key_file).expanduser()
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise DeployFailed(
                f"serve.api_key_file {path} cannot be read ({exc.strerror})"
            ) from None
        if key:
            return key
    return os.environ.get(serve_cfg.api_key_env) or None


def _where(serve_cfg: ServeConfig) -> str:
    named = f"${serve_cfg.api_key_env}"
    return f"{serve_cfg.api_key_file} or {named}" if serve_cfg.api_key_file else named


def decide_auth(serve_cfg: ServeConfig, currently_required: bool = False) -> bool:
    """Whether the new deployment requires an API key (see module doc).

    Raises :class:`DeployFailed` (one line) when auth is required - by ``serve.auth`` or
    because the running deployment requires it - and the key cannot be read here.
    """
    if serve_cfg.auth == "off":
        return False
    key = read_api_key(serve_cfg)
    if key is not None:
        return True
    if serve_cfg.auth == "required" or currently_required:
        why = (
            "serve.auth is 'required'"
            if serve_cfg.auth == "required"
            else ("the running deployment requires an API key")
        )
        raise DeployFailed(
            f"{why} but {_where(serve_cfg)} is not set here: refusing to deploy without auth",
            hint=f"export {serve_cfg.api_key_env}=... (or set serve.api_key_file), "
            "or --set serve.auth=off to serve without authentication on purpose",
        )
    return False


def k8s_auth_required(serve_cfg: ServeConfig) -> bool:
    """In a cluster the key comes from a Kubernetes Secret, not the deployer's shell:
    required unless ``serve.auth`` is 'off'."""
    return serve_cfg.auth != "off"


def auth_headers(serve_cfg: ServeConfig) -> dict[str, str]:
    """Headers a client here (smoke tests, ``serve status``) sends to the deployment."""
    key = read_api_key(serve_cfg)
    return {"X-API-Key": key} if key else {}
