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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import measure, print_table, write_report
from components.monitoring.config import ServingLogConfig
from components.workspace import Workspace

BODY = {"history": [f"i{j}" for j in range(1, 11)], "k": 10}
HISTORY_ITEMS = ServingLogConfig().history_items  # what the bento keeps by default


# --- 1. logging on vs off ----------------------------------------------------------------
def _deploy(n_items: int, log_enabled: bool) -> tuple[Workspace, str]:
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
    return ws, deployed.url


def logging_cost(levels: list[int], duration_s: float, repeats: int, n_items: int) -> list[dict]:
    """Alternating on/off load runs per level; one row per (level, repeat)."""
    from benchmarks.serving import load
    from components.deploy.local import stop_local

    on_ws, on_url = _deploy(n_items, True)
    off_ws, off_url = _deploy(n_items, False)
    rows = []
    try:
        for level in levels:
            load(f"{on_url}/recommend", level, 2.0, BODY, {})  # warm both
            load(f"{off_url}/recommend", level, 2.0, BODY, {})
            for rep in range(repeats):
                order = (
                    [("off", off_url), ("on", on_url)]
                    if rep % 2
                    else [("on", on_url), ("off", off_url)]
                )
                got = {
                    name: load(f"{url}/recommend", level, duration_s, BODY, {})
                    for name, url in order
                }
                rows.append(
                    {
                        "concurrency": level,
                        "repeat": rep,
                        "rps_on": got["on"]["rps"],
                        "rps_off": got["off"]["rps"],
                        "p99_on_ms": got["on"]["p99_ms"],
                        "p99_off_ms": got["off"]["p99_ms"],
                        "errors": got["on"]["errors"] + got["off"]["errors"],
                        "load1": round(os.getloadavg()[0], 2),
                        "cost": 1 - got["on"]["rps"] / got["off"]["rps"]
                        if got["off"]["rps"]
                        else None,
                    }
                )

    finally:
        for ws in (on_ws, off_ws):
            stop_local(ws)  # the bento closes its open log part on shutdown
        logged = sum(
            pq.read_metadata(p).num_rows for p in on_ws.serving_log_dir.glob("served-*.parquet")
        )
        rows.append({"logged_rows_closed_parts": logged})
        for ws in (on_ws, off_ws):
            shutil.rmtree(ws.root, ignore_errors=True)
    return rows


def paired_cost(costs: list[float], draws: int = 5000, seed: int = 0) -> dict[str, Any]:
    """Median of per-pair costs with a percentile-bootstrap 95 % interval (pairs resampled).

    Each pair is one on-run and one off-run back to back, so slow drifts of the shared
    machine's load cancel inside a pair; the interval says how far the median could move
    with other pairs of the same kind."""
    values = np.asarray([c for c in costs if c is not None], dtype=np.float64)
    if len(values) == 0:
        return {"pairs": 0, "median": None, "ci95": [None, None], "mean": None}
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(draws, len(values))), axis=1)
    low, high = np.quantile(medians, [0.025, 0.975])
    return {
        "pairs": len(values),
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
    by_level = {
        level: paired_cost([r["cost"] for r in pairs if r["concurrency"] == level])
        for level in levels
    }
    print_table(
        "serving with the log on vs off (machine shared)",
        ["concurrency", "repeat", "rps on", "rps off", "p99 on ms", "p99 off ms", "cost"],
        [
            [
                r["concurrency"],
                r["repeat"],
                r["rps_on"],
                r["rps_off"],
                r["p99_on_ms"],
                r["p99_off_ms"],
                r["cost"],
            ]
            for r in pairs
        ],
    )
    if by_level:
        print_table(
            "logging cost = 1 - rps on / rps off, per pair (median, bootstrap 95 % CI)",
            ["concurrency", "pairs", "median", "CI low", "CI high", "mean", "pairs > 5 %"],
            [
                [
                    level,
                    c["pairs"],
                    c["median"],
                    c["ci95"][0],
                    c["ci95"][1],
                    c["mean"],
                    c.get("share_of_pairs_above_5pct"),
                ]
                for level, c in by_level.items()
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
            "load_average": list(os.getloadavg()),
            "monitoring_run": monitoring,
            "drift": drift,
        },
    )
