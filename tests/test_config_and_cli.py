from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.config import RecopsConfig, load_config
from components.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_every_yaml_config_validates() -> None:
    paths = sorted((REPO / "configs").rglob("*.yaml"))
    assert paths, "configs/ has no YAML files"
    for path in paths:
        if path.parent.name == "models":
            continue  # model-only fragments are validated by the model tests
        assert isinstance(load_config([path]), RecopsConfig), path


def test_overrides_are_typed() -> None:
    cfg = load_config([], ["model.name=gru4rec", "train.max_epochs=3", "eval.ks=[1,5]"])
    assert cfg.model.name == "gru4rec"
    assert cfg.train.max_epochs == 3
    assert cfg.eval.ks == [1, 5]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_epoch=3", "unknown config key 'train.max_epoch'"),
        ("train.lr=-1", "bad config value for 'train.lr'"),
        ("data.format=xml", "bad config value for 'data.format'"),
        ("novalue", "must look like section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config([], [override])


def test_fingerprint_tracks_training_settings() -> None:
    a = load_config([], [])
    assert a.fingerprint() == load_config([], []).fingerprint()
    assert a.fingerprint() != load_config([], ["train.lr=0.01"]).fingerprint()


def _recops(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("recops")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_the_feature_stores_spark_session_gets_the_data_heap_key() -> None:
    """One JVM per process: a Spark session the Feast store starts has the heap of
    ``data.spark_driver_memory_mb`` (there is no features key for it)."""
    cfg = load_config(overrides=["data.spark_driver_memory_mb=3072"])
    assert cfg.features.spark_driver_memory_mb == 3072
    assert cfg.features.model_copy().spark_driver_memory_mb == 3072
    assert "spark_driver_memory_mb" not in cfg.features.model_dump()
    with pytest.raises(ConfigError, match="features.spark_driver_memory_mb"):
        load_config(overrides=["features.spark_driver_memory_mb=3072"])


def test_cli_help_lists_the_command_tree() -> None:
    result = _recops("--help")
    assert result.returncode == 0
    for command in ("data", "features", "models", "serve", "bench"):
        assert command in result.stdout


def test_cli_reports_user_errors_in_one_line(tmp_path: Path) -> None:
    result = _recops("data", "stats", str(tmp_path / "missing.csv"))
    assert result.returncode == 3
    assert "error:" in result.stderr and "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_data_stats_json(tmp_path: Path) -> None:
    src = tmp_path / "ev.csv"
    src.write_text("user_id,item_id,timestamp\n1,a,10\n1,b,20\n2,a,30\n")
    out = tmp_path / "stats.json"
    result = _recops("data", "stats", str(src), "--json", str(out))
    assert result.returncode == 0, result.stderr
    import json

    stats = json.loads(out.read_text())
    assert (stats["events"], stats["users"], stats["items"]) == (3, 2, 2)


def test_cli_error_is_one_line_even_when_long(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / "missing.csv"
    result = _recops("data", "stats", str(deep))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(deep) in lines[0]
