"""Model selection by name, hyperparameter validation and the example configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import load_config
from components.errors import ConfigError
from components.models.zoo import available_models, get_model_class, validate_params

MODEL_CONFIGS = sorted((Path(__file__).resolve().parents[3] / "configs" / "models").glob("*.yaml"))


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        get_model_class("sasrek")
    assert (
        "sasrek" in str(err.value) and "sasrec" in str(err.value) and "lightgcn" in str(err.value)
    )


def test_bad_hyperparameter_key_is_named() -> None:
    with pytest.raises(ConfigError, match="hidden_sise"):
        validate_params("sasrec", {"hidden_sise": 32})
    with pytest.raises(ConfigError, match="dropout"):
        validate_params("gru4rec", {"dropout": 1.5})


def test_every_model_documents_its_defaults() -> None:
    for name in available_models():
        params = get_model_class(name).Params
        assert get_model_class(name).__module__.split(".")[-1] == name
        assert all(field.description for field in params.model_fields.values()), name
        validate_params(name, {})


def test_there_is_an_example_config_per_model() -> None:
    assert {p.stem for p in MODEL_CONFIGS} == set(available_models())


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_every_model_config_validates(path: Path) -> None:
    cfg = load_config([path])
    assert cfg.model.name == path.stem
    validate_params(cfg.model.name, cfg.model.params)
