"""Models by name: ``@register("sasrec")`` on the class, ``get_model_class("sasrec")`` in configs.

Model modules register on import; :func:`_import_zoo` imports every bundled model file
once so the registry is complete however it is reached.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from components.errors import ConfigError
from components.models.base import Recommender

_REGISTRY: dict[str, type[Recommender]] = {}
_ZOO = ("pop", "itemknn", "gru4rec", "sasrec", "bert4rec", "srgnn", "lightgcn")

R = TypeVar("R", bound=type[Recommender])


def register(name: str) -> Callable[[R], R]:
    """Class decorator: make a :class:`Recommender` selectable as ``model.name: <name>``."""

    def decorate(cls: R) -> R:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _import_zoo() -> None:
    for module in _ZOO:
        importlib.import_module(f"components.models.{module}")


def available_models() -> list[str]:
    """Registered model names, sorted."""
    _import_zoo()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[Recommender]:
    """The class registered as ``name``; unknown names raise :class:`ConfigError`."""
    _import_zoo()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown model {name!r}; known models: {known}") from None


def validate_params(name: str, params: dict[str, Any] | None) -> BaseModel:
    """Validate ``params`` with the model's own ``Params`` class (ConfigError names the key)."""
    cls = get_model_class(name)
    try:
        return cls.Params.model_validate(params or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        if first["type"] == "extra_forbidden":
            raise ConfigError(
                f"unknown hyperparameter model.params.{where} for model {name!r}"
            ) from None
        raise ConfigError(f"bad value for model.params.{where} ({name}): {first['msg']}") from None
