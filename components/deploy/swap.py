"""Hot model swap: a running bento loads another model version without a process start.

A switch-over by process start costs the imports (torch, BentoML, our packages) twice
(arbiter and worker) and the model load: 6.5 s on a quiet 2-core machine for a 40-item
SASRec, 25 s under load. When the new bento differs from the running one *only in its
model* - the same service and library code (a digest of the bento's ``src/``) and the
same serving, feature and auth settings - the deploy instead asks the running backend to
load the new version beside the old one, check it, and switch its request path to it
(TorchServe's and Triton's management APIs do the same). Anything else, and any failure,
falls back to the process start, so the champion keeps serving either way.

Both ends import this module: the deploy (``components.deploy.local``) and the service
(``services.recommender``, route ``POST /admin/swap``). The route is authenticated by a
per-deployment token in ``<deploy_dir>/admin.token`` (mode 0600, written by the deploy,
read by the backend through the ``RECOPS_DEPLOY_DIR`` its environment carries), on top of
the API key when the deployment requires one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

TOKEN_FILE = "admin.token"
TOKEN_HEADER = "x-recops-admin-token"
SWAP_PATH = "/admin/swap"
DEPLOY_DIR_ENV = "RECOPS_DEPLOY_DIR"  # components.deploy.local.OWNER_ENV
#: bento arguments a swap may change; every other one must be equal (else: process start)
MODEL_FIELDS = frozenset({"model_tag", "model_version", "model_name", "data_version", "metrics"})
SOURCE_DIRS = ("services", "components", "feature_repo")


class SwapRequest(BaseModel):
    """``POST /admin/swap``: the new bento's arguments and the digest of its code."""

    model_config = ConfigDict(extra="forbid")

    settings: dict[str, Any]
    source_digest: str
    model_path: str  # the new model's folder in the workspace's BentoML store


class SwapRefused(Exception):
    """The running service will not (or could not) serve the new version in place."""


def source_digest(src: Path) -> str:
    """SHA-256 over the service's code under ``src`` (paths and bytes of every ``.py``,
    ``.yaml`` and ``.yml`` file in ``services/``, ``components/``, ``feature_repo/``)."""
    digest = hashlib.sha256()
    for folder in SOURCE_DIRS:
        files = sorted(
            p
            for p in (src / folder).rglob("*")
            if p.suffix in {".py", ".yaml", ".yml"} and "__pycache__" not in p.parts
        )
        for path in files:
            digest.update(path.relative_to(src).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def refusal(
    current: dict[str, Any], new: dict[str, Any], own_digest: str, new_digest: str
) -> str | None:
    """Why the running service (``current`` arguments, ``own_digest`` code) cannot serve
    ``new`` in place; None when only the model differs."""
    if new_digest != own_digest:
        return "the new bento's code differs from the running one's"
    keys = (set(current) | set(new)) - MODEL_FIELDS
    changed = sorted(key for key in keys if current.get(key) != new.get(key))
    if changed:
        return f"settings besides the model differ: {', '.join(changed)}"
    return None


def ensure_token(deploy_dir: Path) -> str:
    """The deployment's admin token, created (0600) on first use."""
    path = deploy_dir / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    deploy_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token


def token_matches(given: str | None) -> bool:
    """``given`` equals this backend's deployment token (constant-time); False when the
    backend runs outside a local deployment (no token: hot swap is off)."""
    deploy_dir = os.environ.get(DEPLOY_DIR_ENV)
    if not given or not deploy_dir:
        return False
    try:
        expected = (Path(deploy_dir) / TOKEN_FILE).read_text().strip()
    except OSError:
        return False
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
