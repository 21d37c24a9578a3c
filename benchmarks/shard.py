"""``recops bench shard``: ``recops train`` under DDP on two CPU ranks (gloo) over the
same synthetic Parquet events (``data.engine=stream``), every rank reading every user,
then (``train.shard_data``) each rank only its own users.

Each run is the product's command in a subprocess; its ranks (the launcher's process,
rank 0, and the rank it starts) are watched every 0.2 s: peak RSS is the kernel's
high-water mark (``VmHWM``, exact whenever it is read) and CPU seconds the last reading
before the rank exits (so up to 0.2 s short). Before them, each rank's data preparation
alone (``stream_prepare`` as ``recops train`` calls it, one fresh process per rank, the
ranks one after the other): the data side of a rank's cost, without training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import measurement_lock, print_table, write_report

#: the tiny model: the benchmark is about reading the data, not about the model
SETTINGS = (
    "data.engine=stream",
    "model.name=sasrec",
    "model.params={hidden_size: 16, num_layers: 1, num_heads: 1}",
    "data.max_len=20",
    "train.max_epochs=1",
    "train.batch_size=256",
    "train.accelerator=cpu",
    "train.devices=2",
    "train.strategy=ddp",
    "train.progress_bar=false",
    "train.num_threads=1",
)


def _high_water_mb(process: psutil.Process) -> float:
    """The process's peak RSS so far (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return process.memory_info().rss / 2**20


def _rank_of(process: psutil.Process, root: int) -> int | None:
    """0 for the command's own process, else the ``LOCAL_RANK`` of a rank it started."""
    if process.pid == root:
        return 0
    rank = process.environ().get("LOCAL_RANK")
    return int(rank) if rank is not None and "train" in process.cmdline() else None


def _watch(proc: subprocess.Popen, interval_s: float = 0.2) -> dict[int, dict[str, float]]:
    """Peak RSS and CPU seconds of each rank of ``proc`` until it exits."""
    ranks: dict[int, dict[str, float]] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for process in family:
            try:
                rank = _rank_of(process, proc.pid)
                if rank is None:
                    continue
                times = process.cpu_times()
                seen = ranks.setdefault(rank, {"cpu_s": 0.0, "peak_rss_mb": 0.0})
                # max: an exiting rank reads as a zombie (no memory, CPU until then)
                seen["cpu_s"] = max(seen["cpu_s"], times.user + times.system)
                seen["peak_rss_mb"] = max(seen["peak_rss_mb"], _high_water_mb(process))
            except (psutil.Error, OSError):  # exited between listing and reading
                continue
        time.sleep(interval_s)
    return ranks


_PREPARE = """
import json, resource, sys, time
from components.data.config import DataConfig
from components.data.stream import Shard, stream_prepare
parts, rank, world, buckets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
wall, cpu = time.perf_counter(), time.process_time()
shard = Shard(rank, world) if world > 1 else None
split = stream_prepare(parts, DataConfig(max_len=20), shard=shard, bucket_dir=buckets).split
print(json.dumps({
    "wall_s": round(time.perf_counter() - wall, 2),
    "cpu_s": round(time.process_time() - cpu, 2),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "train_users": int((split.train.lengths > 0).sum()),
}))
"""


def run_prepare(parts: Path, buckets: Path, world: int, lock: Path | None) -> dict[str, Any]:
    """Each rank's ``stream_prepare`` alone (``world`` 1: every user, as an unsharded rank
    reads them), in a fresh process per rank, rank 0 first (it writes the buckets)."""
    ranks = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with measurement_lock(lock) as load:
        for rank in range(world):
            done = subprocess.run(
                [sys.executable, "-c", _PREPARE, str(parts), str(rank), str(world), str(buckets)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            ranks[str(rank)] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"shard_data": world > 1, "load_at_start": load, "ranks": ranks}


def run_train(parts: Path, workspace: Path, shard: bool, lock: Path | None) -> dict[str, Any]:
    """One ``recops train`` (``train.shard_data=shard``) measured under ``lock``."""
    out = workspace / "train.json"
    settings = [*SETTINGS, f"train.shard_data={str(shard).lower()}"]
    command = [str(Path(sys.executable).with_name("recops")), "train", "-w", str(workspace)]
    command += ["--data", str(parts), "--json", str(out)]
    command += [arg for setting in settings for arg in ("--set", setting)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with measurement_lock(lock) as load:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        ranks = _watch(proc)
        log, _ = proc.communicate()
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"recops train failed:\n{log[-3000:]}")
    result = json.loads(out.read_text())
    return {
        "shard_data": shard,
        "wall_s": round(wall, 1),
        "load_at_start": load,
        "ranks": {str(rank): ranks[rank] for rank in sorted(ranks)},
        "test_ndcg@10": result["test"]["ndcg@10"],
        "test_users": result["test"]["n_users"],
        "split": result["split"],
    }


def run_shard_benchmark(
    n_events: int,
    json_out: Path | None,
    lock: Path | None,
    train: bool = True,
    events_per_file: int = 250_000,
) -> dict[str, Any]:
    """Both preparations and (``train``) both runs on ``n_events`` synthetic events;
    print the tables, write the JSON."""
    from benchmarks.data import bench_synthetic
    from components.data.stream import write_events_dataset

    with tempfile.TemporaryDirectory(prefix="recops-bench-shard-") as tmp:
        parts = Path(tmp) / "parts"
        write_events_dataset(bench_synthetic(n_events), parts, events_per_file)
        prepares = [run_prepare(parts, Path(tmp) / "buckets", world, lock) for world in (1, 2)]
        runs = (
            [run_train(parts, Path(tmp) / f"ws-{shard}", shard, lock) for shard in (False, True)]
            if train
            else []
        )
    print_table(
        f"one rank's data preparation (stream_prepare), {n_events:,} events",
        ["data", "rank", "wall s", "CPU s", "peak MB", "train users"],
        [
            ["sharded" if run["shard_data"] else "whole", int(rank), *figures.values()]
            for run in prepares
            for rank, figures in run["ranks"].items()
        ],
    )
    rows = [
        [
            "sharded" if run["shard_data"] else "whole",
            run["wall_s"],
            *(run["ranks"].get(r, {}).get("cpu_s", 0.0) for r in ("0", "1")),
            *(run["ranks"].get(r, {}).get("peak_rss_mb", 0.0) for r in ("0", "1")),
            run["test_ndcg@10"],
        ]
        for run in runs
    ]
    columns = ["data", "wall s", "CPU s r0", "CPU s r1", "peak MB r0", "peak MB r1", "ndcg@10"]
    if rows:
        print_table(f"recops train, DDP 2 CPU ranks, {n_events:,} events", columns, rows)
    return write_report(json_out, "shard", {"events": n_events, "prepare": prepares, "runs": runs})
