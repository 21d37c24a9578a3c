"""Multi-process training with the unchanged trainer: `strategy: ddp`, two CPU ranks (gloo),
reading the whole data on every rank or (sharded) each rank only its own users, from a
script and through `recops train` (`train.shard_data`)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import service_unavailable

SCRIPT = Path(__file__).with_name("ddp_train.py")


def _run_two_ranks(command: list[str], timeout: int, **env: str) -> str:
    """Run ``command`` (one process that Lightning's launcher makes two gloo ranks) to
    its end; its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **env}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    return log


def _train_two_ranks(out: Path, *extra: str) -> dict[str, dict]:
    _run_two_ranks([sys.executable, str(SCRIPT), str(out), "ddp", "2", *extra], timeout=240)
    ranks = {p.name: json.loads(p.read_text()) for p in out.glob("rank*.json")}
    assert set(ranks) == {"rank0.json", "rank1.json"}  # both processes trained to the end
    return ranks


@pytest.mark.slow
def test_ddp_two_cpu_ranks_train_and_evaluate(tmp_path: Path) -> None:
    ranks = _train_two_ranks(tmp_path)
    assert ranks["rank0.json"]["pid"] != ranks["rank1.json"]["pid"]
    assert ranks["rank0.json"]["epochs"] == 2
    # DDP keeps the replicas identical: both ranks evaluate the same restored weights
    assert ranks["rank0.json"]["ndcg@10"] == pytest.approx(ranks["rank1.json"]["ndcg@10"])
    assert ranks["rank0.json"]["ndcg@10"] > 0
    assert (tmp_path / "run" / "model").is_dir()


@pytest.mark.slow
def test_ddp_ranks_read_only_their_own_users_through_train_model(tmp_path: Path) -> None:
    """Sharded reading: each rank prepares only its users' sequences (its own user
    buckets), yet DDP keeps one model, every rank reports metrics over all users, and the
    saved popularity counts every rank's training events."""
    from components.data.config import DataConfig
    from components.data.stream import stream_prepare, write_events_dataset

    sys.path.insert(0, str(SCRIPT.parent))
    from ddp_train import SYNTHETIC

    write_events_dataset(SYNTHETIC, tmp_path / "parts", events_per_file=600)
    ranks = _train_two_ranks(tmp_path / "out", str(tmp_path / "parts"))
    zero, one = ranks["rank0.json"], ranks["rank1.json"]
    whole = stream_prepare(tmp_path / "parts", DataConfig(max_len=20)).split  # one process
    assert zero["trained_users"] and one["trained_users"]
    assert not set(zero["trained_users"]) & set(one["trained_users"])  # disjoint shards
    assert sorted(zero["trained_users"] + one["trained_users"]) == sorted(
        int(u) for u in (whole.train.lengths > 0).nonzero()[0]
    )
    assert zero["weights"] == one["weights"]  # one model, trained on both shards
    assert zero["evaluated_users"] == one["evaluated_users"] == len(whole.test)
    assert zero["ndcg@10"] == pytest.approx(one["ndcg@10"]) and zero["ndcg@10"] > 0
    assert zero["popularity"] == one["popularity"] == whole.train.lengths.sum()
    assert (tmp_path / "out" / "run" / "model").is_dir()


def _recops_train(workspace: Path, parts: Path, engine: str) -> str:
    """``recops train`` (the console script, a subprocess) with ``strategy: ddp`` on two
    CPU ranks (gloo), each rank reading only its own users with ``engine``."""
    sys.path.insert(0, str(SCRIPT.parent))
    from ddp_train import TINY_SASREC

    root = Path(__file__).resolve().parents[2]
    settings = [
        f"data.engine={engine}",
        "data.spark_master=local[1]",  # each rank's own session (spark only)
        "train.shard_data=true",
        *TINY_SASREC,
        "train.devices=2",
        "train.strategy=ddp",
    ]
    command = [str(Path(sys.executable).with_name("recops")), "train", "-w", str(workspace)]
    command += ["--data", str(parts), "--json", str(workspace / "train.json")]
    return _run_two_ranks(
        command + [arg for setting in settings for arg in ("--set", setting)],
        timeout=300,
        JAVA_TOOL_OPTIONS="-XX:TieredStopAtLevel=1",  # C1 JVM: half a session's start-up
        PYTHONPATH=str(root),
        COLUMNS="400",
    )


def _rank_summaries(log: str) -> dict[int, dict]:
    """Each rank's split summary as ``recops train`` printed it (its own users)."""
    import ast
    import re

    found = re.findall(r"training sasrec on (\{.*?\}) \(rank (\d) of 2: its users\)", log)
    return {int(rank): ast.literal_eval(summary) for summary, rank in found}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["stream", "spark"])
def test_recops_train_shards_the_data_per_rank(tmp_path: Path, engine: str) -> None:
    """`train.shard_data: true` through the product's CLI: each of the two DDP ranks
    prepares only its users (the events, or with Spark the tails, bucketed once for both),
    the shares are the stream engine's disjoint shards whose union is every user, and one
    run folder holds the model and its record counting every user; no bucket is left."""
    from components.data.config import DataConfig
    from components.data.stream import Shard, stream_prepare, write_events_dataset

    sys.path.insert(0, str(SCRIPT.parent))
    from ddp_train import SYNTHETIC

    if engine == "spark" and (
        importlib.util.find_spec("pyspark") is None or shutil.which("java") is None
    ):
        service_unavailable("Spark needs pyspark (dev extra) and Java 17+ on PATH")
    parts = tmp_path / "parts"
    write_events_dataset(SYNTHETIC, parts, events_per_file=600)
    log = _recops_train(tmp_path / "ws", parts, engine)
    cfg = DataConfig(max_len=20)
    whole = stream_prepare(parts, cfg).split.summary()
    shares = {
        rank: stream_prepare(parts, cfg, shard=Shard(rank, 2), bucket_dir=tmp_path / "b").split
        for rank in (0, 1)
    }
    printed = _rank_summaries(log)
    assert set(printed) == {0, 1}  # both ranks prepared, each its own share
    for rank, split in shares.items():
        users = (split.train.lengths > 0).nonzero()[0]
        assert printed[rank]["train_users"] == len(users) > 0
        assert printed[rank]["train_events"] == int(split.train.lengths.sum())
    own = [set((split.train.lengths > 0).nonzero()[0]) for split in shares.values()]
    assert not own[0] & own[1]
    assert len(own[0] | own[1]) == whole["train_users"]
    runs = list((tmp_path / "ws" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model").is_dir()  # one model, one record
    record = json.loads((runs[0] / "run_record.json").read_text())
    assert record["status"] == "candidate" and record["split"] == whole
    result = json.loads((tmp_path / "ws" / "train.json").read_text())
    assert result["test"]["n_users"] == whole["test_users"]  # every rank's users evaluated
    assert not any((tmp_path / "ws" / "buckets").iterdir())  # rank 0 removed the buckets
