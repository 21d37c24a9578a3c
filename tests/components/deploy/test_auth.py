"""Whether a deployment requires an API key is decided at deploy time and sticks."""

from __future__ import annotations

import pytest

from components.deploy.auth import decide_auth, read_api_key
from components.deploy.config import ServeConfig
from components.errors import DeployFailed

ENV = "RECOPS_TEST_AUTH_KEY"


@pytest.fixture()
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


def test_a_key_in_the_deploying_shell_makes_auth_required(monkeypatch) -> None:
    monkeypatch.setenv(ENV, "k1")
    assert decide_auth(ServeConfig(api_key_env=ENV)) is True


def test_a_redeploy_without_the_key_fails_instead_of_serving_open(no_key) -> None:
    cfg = ServeConfig(api_key_env=ENV)
    assert decide_auth(cfg, currently_required=False) is False  # never had auth
    with pytest.raises(DeployFailed, match=f"requires an API key but \\${ENV} is not set"):
        decide_auth(cfg, currently_required=True)
    with pytest.raises(DeployFailed, match="serve.auth is 'required'"):
        decide_auth(cfg.model_copy(update={"auth": "required"}))
    # dropping auth is explicit
    assert decide_auth(cfg.model_copy(update={"auth": "off"}), currently_required=True) is False


def test_the_key_can_come_from_a_file(no_key, tmp_path) -> None:
    path = tmp_path / "key"
    path.write_text("from-file\n")
    cfg = ServeConfig(api_key_env=ENV, api_key_file=str(path))
    assert read_api_key(cfg) == "from-file"
    assert decide_auth(cfg, currently_required=True) is True
    with pytest.raises(DeployFailed, match="cannot be read"):
        read_api_key(cfg.model_copy(update={"api_key_file": str(tmp_path / "missing")}))
