"""``recops bench shard --prepare-only``: each rank's data preparation measured alone."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.shard import run_shard_benchmark


def test_prepare_only_measures_every_rank_and_the_shares_add_up(tmp_path: Path) -> None:
    out = tmp_path / "shard.json"
    report = run_shard_benchmark(5_000, out, None, train=False, events_per_file=2_000)
    assert json.loads(out.read_text())["prepare"] == report["prepare"]
    whole, sharded = report["prepare"]
    assert not whole["shard_data"] and sharded["shard_data"] and report["runs"] == []
    assert set(whole["ranks"]) == {"0"} and set(sharded["ranks"]) == {"0", "1"}
    users = [figures["train_users"] for figures in sharded["ranks"].values()]
    assert all(users) and sum(users) == whole["ranks"]["0"]["train_users"]
    for figures in (*whole["ranks"].values(), *sharded["ranks"].values()):
        assert figures["cpu_s"] > 0 and figures["peak_rss_mb"] > 0
