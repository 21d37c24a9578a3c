"""``recops bench monitor``: what the serving log costs, what a monitoring run costs, and
whether drift detection tells a shifted world from an unshifted one.

1. **logging on vs off**: two scratch deployments of the same untrained SASRec (one with
   ``serve.log.enabled=false``), loaded alternately at each concurrency level, back to
   back, ``repeats`` times; the cost is ``1 - rps_on / rps_off`` per pair (median).
2. **1M logged requests**: a synthetic serving log (``n_requests`` lists of 10 items and
   up to 20 history items each, as the bento keeps by default) and feedback, written as Parquet parts; one monitoring computation (read, online metrics,
   drift with the GX suite) in a fresh process: wall time and peak RSS.
3. **drift**: a reference world (the bundled synthetic generator) and ``batches`` seeded
   live batches from the same world (false alarm rate) and from shifted worlds (another
   seed: item popularity reshuffled; detection rate), each judged by the drift suite.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import measure, print_table, write_report
from components.monitoring.config import ServingLogConfig
from components.workspace import Workspace

HISTORY = [f"i{j}" for j in range(1, 11)]
BODY = {"history": HISTORY, "k": 10}
HISTORY_ITEMS = ServingLogConfig().history_items  # what the bento keeps by default


# --- 1. logging on vs off ----------------------------------------------------------------
@dataclass(frozen=True)
class _Bento:
    name: str  # "on" or "off"
    workspace: Workspace
    url: str
    pid: int


def _deploy(n_items: int, log_enabled: bool) -> _Bento:
    from benchmarks.serving import _register_untrained
    from components.deploy.config import LocalDeployConfig, ServeConfig
    from components.deploy.local import deploy_version
    from components.features.config import FeaturesConfig
    from components.net import free_port

    ws = Workspace.at(Path(tempfile.mkdtemp(prefix="recops-bench-monitor-"))).activate()
    version = _register_untrained(ws, n_items, seed=0)
    serve_cfg = ServeConfig.model_validate(
        {"port": free_port(), "device": "cpu", "log": {"enabled": log_enabled}}
    )
    deployed = deploy_version(
        ws,
        version,
        serve_cfg,
        LocalDeployConfig(readiness_timeout_s=300),
        FeaturesConfig(enabled=False),
    )
    return _Bento("on" if log_enabled else "off", ws, deployed.url, deployed.pid)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (the bento's
    arbiter and workers): the serving log's writer thread is counted where it runs."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _pair(level: int, rep: int, bentos: list[_Bento], duration_s: float) -> dict[str, Any]:
    """One on-run and one off-run back to back (which goes first alternates). The bento
    CPU of each run is measured from its start until the end of the pair, so the log
    rows its writer thread flushes after the load stopped are counted too."""
    from benchmarks.serving import load

    order = bentos if rep % 2 == 0 else bentos[::-1]
    cpu_before = {b.name: cpu_seconds(b.pid) for b in bentos}
    got = {b.name: load(f"{b.url}/recommend", level, duration_s, BODY, {}) for b in order}
    time.sleep(ServingLogConfig().flush_interval_s + 0.5)  # the last flush of this pair
    cpu = {b.name: cpu_seconds(b.pid) - cpu_before[b.name] for b in bentos}
    per_request = {
        name: cpu[name] / got[name]["requests"] * 1000 if got[name]["requests"] else None
        for name in cpu
    }
    on, off = per_request["on"], per_request["off"]
    return {
        "concurrency": level,
        "repeat": rep,
        "rps_on": got["on"]["rps"],
        "rps_off": got["off"]["rps"],
        "p99_on_ms": got["on"]["p99_ms"],
        "p99_off_ms": got["off"]["p99_ms"],
        "errors": got["on"]["errors"] + got["off"]["errors"],
        "load1": round(os.getloadavg()[0], 2),
        "cost": 1 - got["on"]["rps"] / got["off"]["rps"] if got["off"]["rps"] else None,
        "cpu_ms_per_request_on": None if on is None else round(on, 4),
        "cpu_ms_per_request_off": None if off is None else round(off, 4),
        "cpu_cost": on / off - 1 if on and off else None,
        "requests_on": got["on"]["requests"],
        "requests_off": got["off"]["requests"],
        "cpu_s_on": round(cpu["on"], 4),
        "cpu_s_off": round(cpu["off"], 4),
    }


def balanced_blocks(pairs: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Consecutive pairs of opposite order (on first, then off first) pooled into one
    block: whichever bento runs second in a pair is measured a little differently (the
    first one's tail), and a block holds each order once, so that effect cancels."""
    blocks = []
    for first, second in zip(pairs[::2], pairs[1::2], strict=False):
        req_on = first["requests_on"] + second["requests_on"]
        req_off = first["requests_off"] + second["requests_off"]
        if not (req_on and req_off):
            continue
        cpu_on = (first["cpu_s_on"] + second["cpu_s_on"]) / req_on
        cpu_off = (first["cpu_s_off"] + second["cpu_s_off"]) / req_off
        blocks.append({"throughput": 1 - req_on / req_off, "cpu": cpu_on / cpu_off - 1})
    return blocks


def logging_cost(levels: list[int], duration_s: float, repeats: int, n_items: int) -> list[dict]:
    """Alternating on/off load runs per level; one row per (level, repeat)."""
    from benchmarks.serving import load
    from components.deploy.local import stop_local

    bentos = [_deploy(n_items, True), _deploy(n_items, False)]
    rows = []
    try:
        for level in levels:
            for b in bentos:  # warm both
                load(f"{b.url}/recommend", level, 2.0, BODY, {})
            rows += [_pair(level, rep, bentos, duration_s) for rep in range(repeats)]
    finally:
        for b in bentos:
            stop_local(b.workspace)  # the bento closes its open log part on shutdown
        logged = sum(
            pq.read_metadata(p).num_rows
            for p in bentos[0].workspace.serving_log_dir.glob("served-*.parquet")
        )
        rows.append({"logged_rows_closed_parts": logged})
        for b in bentos:
            shutil.rmtree(b.workspace.root, ignore_errors=True)
    return rows


def logging_cpu_per_request(rows: int = 200_000) -> dict[str, float]:
    """CPU microseconds the serving log adds per answered request, measured in process on
    the real code: ``ServiceLogs.served`` (the request thread's share) and the writer's
    flush (Arrow conversion + Parquet write, in ``flush_rows`` batches as the background
    thread does). That is everything logging adds to a request; the pairs above measure
    the same thing end to end, but through the noise of a shared machine."""
    from types import SimpleNamespace

    from services.engine import Plan
    from services.servinglog import ServiceLogs

    cfg = ServingLogConfig()
    batch = cfg.flush_rows
    quiet = cfg.model_copy(update={"flush_interval_s": 3600.0, "flush_rows": rows + 1})
    root = Path(tempfile.mkdtemp(prefix="recops-bench-logcpu-"))
    logs = ServiceLogs(Workspace.at(root), quiet)  # the writer thread sleeps: we flush
    request = SimpleNamespace(user_id="u1")
    plan = Plan(query=None, k=10, exclude=[], given_length=len(HISTORY))
    items = [{"item_id": f"i{j}", "score": 1.0 / j} for j in range(1, 11)]
    history = list(HISTORY)
    hot = write = 0.0
    try:
        assert logs.served_log is not None
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            answers = [
                {"request_id": f"r{start + i}", "model_version": "v1", "items": items}
                for i in range(n)
            ]
            began = time.process_time()
            for answer in answers:
                logs.served(request, plan, answer, history)
            hot += time.process_time() - began
            began = time.process_time()
            logs.served_log.flush()
            write += time.process_time() - began
        began = time.process_time()
        logs.served_log.rotate()
        write += time.process_time() - began
    finally:
        logs.close()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "rows": rows,
        "hot_path_us": round(hot / rows * 1e6, 3),
        "writer_us": round(write / rows * 1e6, 3),
        "total_us": round((hot + write) / rows * 1e6, 3),
    }


def paired_cost(costs: list[float], draws: int = 5000, seed: int = 0) -> dict[str, Any]:
    """Median of per-block costs with a percentile-bootstrap 95 % interval (blocks
    resampled). A block's runs are back to back, so slow drifts of the shared machine's
    load cancel inside it; the interval says how far the median could move with other
    blocks of the same kind."""
    values = np.asarray([c for c in costs if c is not None], dtype=np.float64)
    if len(values) == 0:
        return {"blocks": 0, "median": None, "ci95": [None, None], "mean": None}
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(draws, len(values))), axis=1)
    low, high = np.quantile(medians, [0.025, 0.975])
    return {
        "blocks": len(values),
        "median": round(float(np.median(values)), 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
        "mean": round(float(values.mean()), 4),
        "share_of_pairs_above_5pct": round(float((values > 0.05).mean()), 3),
    }


# --- 2. a monitoring run over many logged requests ----------------------------------------
def write_synthetic_log(root: Path, n_requests: int, n_users: int, n_items: int, seed: int) -> None:
    """``n_requests`` served lists and one feedback event per five lists, as Parquet parts."""
    from components.monitoring.servelog import FEEDBACK, FEEDBACK_SCHEMA, SERVED, SERVED_SCHEMA

    rng = np.random.default_rng(seed)
    start = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp() * 1e6)
    (root / FEEDBACK).mkdir(parents=True, exist_ok=True)
    part_rows = 200_000
    items_vocab = np.array([f"i{j}" for j in range(1, n_items + 1)], dtype=object)
    for part, lo in enumerate(range(0, n_requests, part_rows)):
        n = min(part_rows, n_requests - lo)
        ts = start + np.sort(rng.integers(0, 7 * 86400 * 10**6, n))
        users = rng.integers(0, n_users, n)
        flat = rng.zipf(1.3, n * 10) % n_items
        offsets = pa.array(np.arange(0, n * 10 + 1, 10, dtype=np.int32))
        lengths = rng.integers(0, 50, n)
        kept = np.minimum(lengths, HISTORY_ITEMS)
        hist_offsets = pa.array(np.concatenate([[0], np.cumsum(kept)]).astype(np.int32))
        hist_items = items_vocab[rng.zipf(1.3, int(kept.sum())) % n_items]
        served = pa.Table.from_arrays(
            [
                pa.array([f"r{lo + i}" for i in range(n)]),
                pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                pa.array([f"u{u}" for u in users]),
                pa.array(lengths, pa.int32()),
                pa.array(rng.integers(0, 2, n), pa.int32()),
                pa.array(np.where(rng.random(n) < 0.1, "cold_start", "model")),
                pa.array(["v1"] * n),
                pa.ListArray.from_arrays(offsets, pa.array(items_vocab[flat])),
                pa.ListArray.from_arrays(offsets, pa.array(rng.random(n * 10), pa.float32())),
                pa.ListArray.from_arrays(hist_offsets, pa.array(hist_items, pa.string())),
            ],
            schema=SERVED_SCHEMA,
        )
        pq.write_table(served, root / f"{SERVED}-bench-{part:05d}.parquet")
        pick = rng.choice(n, n // 5, replace=False)
        clicked = np.asarray(served["items"].to_numpy(zero_copy_only=False), dtype=object)[pick]
        fb_items = [
            row[rng.integers(0, 10)]
            if rng.random() < 0.3
            else items_vocab[rng.integers(0, n_items)]
            for row in clicked
        ]
        fb_ts = ts[pick] + rng.integers(1, 3600 * 10**6, len(pick))
        feedback = pa.Table.from_arrays(
            [
                pa.array([f"u{u}" for u in users[pick]]),
                pa.array(fb_items, pa.string()),
                pa.array(fb_ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                pa.array(["click"] * len(pick)),
                pa.array([None] * len(pick), pa.float64()),
                pa.array([None] * len(pick), pa.string()),
                pa.array(fb_ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            ],
            schema=FEEDBACK_SCHEMA,
        )
        pq.write_table(feedback, root / FEEDBACK / f"{FEEDBACK}-bench-{part:05d}.parquet")


def _monitoring_child(root: str, n_items: int, out: Any) -> None:
    import pandas as pd

    from components.monitoring.config import MonitoringConfig
    from components.monitoring.drift import check_drift, drift_summary, live_item_counts
    from components.monitoring.online import metrics_by_version
    from components.monitoring.servelog import (
        FEEDBACK,
        FEEDBACK_SCHEMA,
        SERVED,
        SERVED_SCHEMA,
        read_log,
    )

    ws = Workspace.at(Path(root) / "ws").activate()
    cfg = MonitoringConfig()
    rng = np.random.default_rng(1)
    reference = pd.Series([f"i{j}" for j in (rng.zipf(1.3, 500_000) % n_items)])
    ref_lengths = rng.integers(1, 50, 50_000)
    with measure("monitoring run") as fig:
        served = read_log(Path(root), SERVED, SERVED_SCHEMA)
        feedback = read_log(Path(root) / FEEDBACK, FEEDBACK, FEEDBACK_SCHEMA)
        metrics = metrics_by_version(
            served,
            feedback,
            k=cfg.k,
            window=timedelta(hours=cfg.window_hours),
            as_of=datetime(2026, 2, 1, tzinfo=timezone.utc),
            catalogue_sizes={"v1": n_items},
        )
        live_items = live_item_counts(served, feedback)
        summary, text = drift_summary(
            reference,
            ref_lengths,
            live_items,
            served["history_len"].to_numpy(),
            0.1,
            cfg.drift,
        )
        report = check_drift(
            ws,
            summary,
            text,
            cfg.drift,
            run_name="bench",
            n_live_events=int(live_items.sum()),
            n_requests=served.num_rows,
        )
    out.put(
        {
            "seconds": round(fig.seconds, 2),
            "peak_rss_mb": round(fig.peak_rss_mb, 1),
            "requests": metrics[0].requests,
            "hit_rate": metrics[0].hit_rate.value,
            "hit_rate_ci": [metrics[0].hit_rate.low, metrics[0].hit_rate.high],
            "drifted": report.drifted,
            "live_item_samples": int(live_items.sum()),
        }
    )


def monitoring_run(n_requests: int, n_items: int = 10_000) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="recops-bench-monlog-"))
    try:
        started = time.perf_counter()
        write_synthetic_log(root, n_requests, n_users=100_000, n_items=n_items, seed=0)
        written_s = time.perf_counter() - started
        gc.collect()
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_monitoring_child, args=(str(root), n_items, queue))
        child.start()
        result = queue.get(timeout=1800)
        child.join()
        return {"n_requests": n_requests, "log_write_s": round(written_s, 1), **result}
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- 3. drift on seeded batches -------------------------------------------------------------
def drift_detection(batches: int, batch_users: int = 200) -> dict[str, Any]:
    from components.data.config import SyntheticConfig
    from components.data.synthetic import generate_events
    from components.monitoring.config import DriftThresholds
    from components.monitoring.drift import check_drift, drift_summary

    root = Path(tempfile.mkdtemp(prefix="recops-bench-drift-"))
    ws = Workspace.at(root).activate()
    world = SyntheticConfig(n_users=2000, n_items=500, n_events=60000, seed=7)
    cfg = DriftThresholds()
    try:
        reference = generate_events(world)
        ref_lengths = reference.groupby("user_id", observed=True).size().to_numpy()
        small = {"n_users": batch_users, "n_events": batch_users * 30}
        verdicts: dict[str, list[bool]] = {"unshifted": [], "shifted": []}
        for b in range(1, batches + 1):
            for kind, cfg_b in (
                ("unshifted", world.model_copy(update=small)),
                ("shifted", world.model_copy(update={**small, "seed": 1000 + b})),
            ):
                live = generate_events(cfg_b, batch=b)
                summary, text = drift_summary(
                    reference["item_id"],
                    ref_lengths,
                    live["item_id"].value_counts(),
                    live.groupby("user_id", observed=True).size().to_numpy(),
                    None,
                    cfg,
                    seed=b,
                )
                report = check_drift(
                    ws,
                    summary,
                    text,
                    cfg,
                    run_name=f"{kind}-{b}",
                    n_live_events=len(live),
                    n_requests=0,
                )
                verdicts[kind].append(report.drifted)
        return {
            "batches": batches,
            "batch_events": batch_users * 30,
            "false_alarm_rate": sum(verdicts["unshifted"]) / batches,
            "detection_rate": sum(verdicts["shifted"]) / batches,
            "statistic": "JS distance in excess of the 99th percentile of sampling noise",
            "thresholds": cfg.model_dump(),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_monitor_benchmark(
    json_out: Path | None,
    *,
    levels: list[int],
    duration_s: float,
    repeats: int,
    n_requests: int,
    batches: int,
    n_items: int,
) -> dict[str, Any]:
    serving = logging_cost(levels, duration_s, repeats, n_items) if levels else []
    pairs = [r for r in serving if "concurrency" in r]
    by_level = {}
    for level in levels:
        blocks = balanced_blocks([r for r in pairs if r["concurrency"] == level])
        by_level[level] = {
            "throughput": paired_cost([b["throughput"] for b in blocks]),
            "cpu_per_request": paired_cost([b["cpu"] for b in blocks]),
        }
    print_table(
        "serving with the log on vs off (machine shared)",
        [
            "concurrency",
            "repeat",
            "rps on",
            "rps off",
            "p99 on ms",
            "p99 off ms",
            "cost",
            "CPU ms/req on",
            "CPU ms/req off",
            "CPU cost",
            "load1",
        ],
        [
            [
                r["concurrency"],
                r["repeat"],
                r["rps_on"],
                r["rps_off"],
                r["p99_on_ms"],
                r["p99_off_ms"],
                r["cost"],
                r["cpu_ms_per_request_on"],
                r["cpu_ms_per_request_off"],
                r["cpu_cost"],
                r["load1"],
            ]
            for r in pairs
        ],
    )
    if by_level:
        print_table(
            "logging cost per block of two pairs (one of each order): throughput 1 - "
            "requests on/off; CPU (bento CPU per request on/off) - 1; median, bootstrap 95 % CI",
            ["concurrency", "measure", "blocks", "median", "CI low", "CI high", "mean", "> 5 %"],
            [
                [
                    level,
                    measure,
                    c["blocks"],
                    c["median"],
                    c["ci95"][0],
                    c["ci95"][1],
                    c["mean"],
                    c.get("share_of_pairs_above_5pct"),
                ]
                for level, both in by_level.items()
                for measure, c in both.items()
            ],
        )
    in_process = logging_cpu_per_request() if levels else {}
    if in_process:
        off_cpu_us = [
            r["cpu_ms_per_request_off"] * 1000 for r in pairs if r["cpu_ms_per_request_off"]
        ]
        baseline = float(np.median(off_cpu_us)) if off_cpu_us else float("nan")
        in_process["bento_cpu_us_per_request_off"] = round(baseline, 1)
        in_process["cost"] = round(in_process["total_us"] / baseline, 5)
        print_table(
            "serving log CPU per request, in process (real ServiceLogs, default config)",
            ["rows", "request thread µs", "writer µs", "total µs", "bento CPU µs/req", "cost"],
            [
                [
                    in_process["rows"],
                    in_process["hot_path_us"],
                    in_process["writer_us"],
                    in_process["total_us"],
                    in_process["bento_cpu_us_per_request_off"],
                    in_process["cost"],
                ]
            ],
        )
    monitoring = monitoring_run(n_requests) if n_requests else {}
    if monitoring:
        print_table(
            "one monitoring run",
            ["logged requests", "seconds", "peak RSS MB", "hit-rate", "drift"],
            [
                [
                    monitoring["n_requests"],
                    monitoring["seconds"],
                    monitoring["peak_rss_mb"],
                    monitoring["hit_rate"],
                    monitoring["drifted"],
                ]
            ],
        )
    drift = drift_detection(batches) if batches else {}
    if drift:
        print_table(
            "drift detection (seeded synthetic batches)",
            ["batches", "events/batch", "false alarm rate", "detection rate"],
            [
                [
                    drift["batches"],
                    drift["batch_events"],
                    drift["false_alarm_rate"],
                    drift["detection_rate"],
                ]
            ],
        )
    return write_report(
        json_out,
        "monitor",
        {
            "serving": serving,
            "logging_cost_by_concurrency": by_level,
            "logging_cpu_in_process": in_process,
            "load_average": list(os.getloadavg()),
            "monitoring_run": monitoring,
            "drift": drift,
        },
    )
