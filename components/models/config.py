"""Model selection: a registered model name plus that model's own hyperparameters."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ModelConfig(BaseModel):
    """``name`` picks a model from the registry; ``params`` are validated by that model's
    own config class (see ``components.models.zoo``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "sasrec"
    params: dict[str, Any] = {}
