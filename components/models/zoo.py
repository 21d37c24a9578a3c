"""The model zoo: ``@register("sasrec")`` on the class, ``get_model_class("sasrec")`` in configs.

(Named "zoo" so that "registry" means one thing in recops: the model-version registry in
``components.registry``.) Model modules register on import; :func:`_import_zoo`
discovers and imports every module of this package once, so a new model file is
selectable by name without being listed anywhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from components.errors import ConfigError
from components.models.base import Recommender

_ZOO: dict[str, type[Recommender]] = {}

R = TypeVar("R", bound=type[Recommender])


def register(name: str) -> Callable[[R], R]:
    """Class decorator: make a :class:`Recommender` selectable as ``model.name: <name>``."""

    def decorate(cls: R) -> R:
        if name in _ZOO and _ZOO[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        cls.name = name
        _ZOO[name] = cls
        return cls

    return decorate


def _import_zoo() -> None:
    """Import every module of ``components.models`` (model files register on import)."""
    import components.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def available_models() -> list[str]:
    """Registered model names, sorted."""
    _import_zoo()
    return sorted(_ZOO)


def get_model_class(name: str) -> type[Recommender]:
    """The class registered as ``name``; unknown names raise :class:`ConfigError`."""
    _import_zoo()
    try:
        return _ZOO[name]
    except KeyError:
        known = ", ".join(sorted(_ZOO))
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
