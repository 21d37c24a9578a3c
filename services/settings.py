"""What a recommendation bento needs to know besides its code and its model.

The deploy step passes these as BentoML *bento arguments* when it builds the bento
(``bentoml.build(args=...)``); BentoML stores them in the bento and hands them back to
``bentoml.use_arguments`` every time the bento is imported (build, serve, containerize).
So a bento pins its model version, its limits and whether it requires an API key; only
secrets (by the references recorded here: an environment variable name or a file) and
the workspace root come from the environment at run time (``$RECOPS_HOME`` wins over the
recorded root, so a container can mount the workspace elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from components.data.config import EVENT_TYPES
from components.deploy.auth import read_api_key
from components.deploy.config import ServeConfig
from components.features.config import FeaturesConfig
from components.workspace import DEFAULT_ROOT_ENV, Workspace

SERVICE_NAME = "recops-recommender"


class ServiceSettings(BaseModel):
    """Bento arguments of the recommendation service."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_tag: str
    model_version: str
    model_name: str = "unknown"
    data_version: str | None = None
    metrics: dict[str, float] = {}
    #: event types ``POST /feedback`` accepts: the deployed version's validation config
    event_types: list[str] = list(EVENT_TYPES)
    workspace: str | None = None
    auth_required: bool = False
    serve: ServeConfig = ServeConfig()
    features: FeaturesConfig = FeaturesConfig()

    def resolved_workspace(self) -> Workspace:
        """``$RECOPS_HOME`` when set, else the workspace recorded at build time."""
        root = os.environ.get(DEFAULT_ROOT_ENV) or self.workspace
        return Workspace.at(Path(root) if root else None)

    def api_key(self) -> str | None:
        """The API key from ``serve.api_key_file`` or ``$serve.api_key_env``; ``None``
        when unset or empty (the service then refuses to start if ``auth_required``)."""
        try:
            return read_api_key(self.serve)
        except Exception:  # an unreadable key file: no key, so a required auth fails closed
            return None
