"""Which users a data-parallel process prepares (``train.shard_data``), from the
environment Lightning's launcher and torchrun set, and the combinations refused before
any data is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.config import load_config
from components.data.stream import Shard
from components.errors import ConfigError
from components.lifecycle.prepare import rank_read, require_whole_data
from components.training.config import TrainConfig
from components.training.ranks import RUN_ID_ENV, data_shard, is_rank_zero, shared_run_id
from components.workspace import Workspace

DDP = TrainConfig(strategy="ddp", devices=2, shard_data=True)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, Shard(0, 4)),  # Lightning's launcher itself, before it starts the others
        ({"NODE_RANK": "0", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}, Shard(1, 4)),
        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, Shard(2, 4)),  # the second node's launcher
        ({"NODE_RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}, Shard(3, 4)),
        ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}, Shard(3, 4)),  # torchrun
    ],
)
def test_the_rank_comes_from_the_launchers_environment(
    environ: dict[str, str], expected: Shard
) -> None:
    cfg = DDP.model_copy(update={"num_nodes": 2})
    assert data_shard(cfg, environ) == expected
    assert is_rank_zero(environ) == (expected.rank == 0)


def test_one_process_or_shard_data_off_reads_everything() -> None:
    assert data_shard(DDP.model_copy(update={"devices": 1}), {}) is None
    assert data_shard(DDP.model_copy(update={"shard_data": False}), {"LOCAL_RANK": "1"}) is None
    assert data_shard(DDP.model_copy(update={"devices": "0,1"}), {"LOCAL_RANK": "1"}) == Shard(1, 2)


@pytest.mark.parametrize(
    ("update", "environ", "named"),
    [
        ({"strategy": "ddp_spawn"}, {}, "train.strategy"),
        ({"devices": "auto"}, {}, "train.devices"),
        ({}, {"RANK": "0", "WORLD_SIZE": "3"}, "train.num_nodes"),
    ],
)
def test_what_cannot_be_sharded_is_a_config_error(
    update: dict, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        data_shard(DDP.model_copy(update=update), environ)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["data.engine=memory"], "data.engine"),
        (["data.path=null"], "data.path"),
        (["model.name=lightgcn"], "model.name"),
        (["model.params={item_init: transitions}"], "model.params.item_init"),
        (["model.params={item_features: [id, category]}"], "model.params.item_features"),
    ],
)
def test_rank_read_refuses_before_reading_data(
    overrides: list[str], named: str, tmp_path: Path
) -> None:
    base = ["data.engine=stream", f"data.path={tmp_path}", "train.shard_data=true"]
    cfg = load_config(overrides=base + ["train.strategy=ddp", "train.devices=2", *overrides])
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        rank_read(cfg, Workspace.at(tmp_path / "ws"))


def test_the_flow_refuses_shard_data() -> None:
    cfg = load_config(overrides=["train.shard_data=true"])
    with pytest.raises(ConfigError, match=r"train\.shard_data"):
        require_whole_data(cfg, "the retrain flow")


def test_rank_zero_shares_its_run_id_only_for_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUN_ID_ENV, raising=False)
    with shared_run_id(lambda: "run-a") as run_id:
        assert run_id == "run-a" and os.environ[RUN_ID_ENV] == "run-a"
    assert RUN_ID_ENV not in os.environ  # the next run in this process chooses its own
    monkeypatch.setenv(RUN_ID_ENV, "run-a")
    monkeypatch.setenv("LOCAL_RANK", "1")  # a rank Lightning started from rank 0
    with shared_run_id(lambda: "run-b") as run_id:
        assert run_id == "run-a"
