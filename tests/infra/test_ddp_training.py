"""Multi-process training with the unchanged trainer: `strategy: ddp`, two CPU ranks (gloo),
reading the whole data on every rank or (sharded) each rank only its own users."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_train.py")


def _train_two_ranks(out: Path, *extra: str) -> dict[str, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "ddp", "2", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
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
