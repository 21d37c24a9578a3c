"""Multi-process training with the unchanged trainer: `strategy: ddp`, two CPU ranks (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_train.py")


@pytest.mark.slow
def test_ddp_two_cpu_ranks_train_and_evaluate(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "ddp", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    ranks = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("rank*.json")}
    assert set(ranks) == {"rank0.json", "rank1.json"}  # both processes trained to the end
    assert ranks["rank0.json"]["pid"] != ranks["rank1.json"]["pid"]
    assert ranks["rank0.json"]["epochs"] == 2
    # DDP keeps the replicas identical: both ranks evaluate the same restored weights
    assert ranks["rank0.json"]["ndcg@10"] == pytest.approx(ranks["rank1.json"]["ndcg@10"])
    assert ranks["rank0.json"]["ndcg@10"] > 0
    assert (tmp_path / "run" / "model").is_dir()
