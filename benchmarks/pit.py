"""``recops bench features --pit``: the point-in-time training join, per offline store.

The retrain flow joins every held-out label row (two per user, leave-one-out) with the
user and item features Feast held strictly before it
(:func:`components.lifecycle.prepare.training_features`). For each offline store in
``STORES`` (Feast's ``duckdb`` store; the Dask ``file`` store is refused over the
day-partitioned sources) this times the join on a fresh workspace, then the cached re-run
(same data version and feature repo: the frame is read back), and checks that the stores
return the same frame.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import pandas as pd

from benchmarks.common import print_table, write_report
from components.data.config import DataConfig, SyntheticConfig
from components.features.config import FeaturesConfig
from components.features.store import apply_repo, definitions, forget_stores, write_feature_tables
from components.workspace import Workspace

# the Dask "file" store is refused over day-partitioned sources (features.offline_store)
STORES = ("duckdb",)


def _time_store(events: pd.DataFrame, prepared: Any, store: str) -> tuple[dict[str, Any], Any]:
    from components.lifecycle.prepare import training_features

    cfg = FeaturesConfig(offline_store=store)
    definitions(cfg)  # import Feast and the repo outside the timed part
    with tempfile.TemporaryDirectory(prefix="recops-bench-pit-") as tmp:
        ws = Workspace.at(tmp).ensure()
        write_feature_tables(events, ws, cfg)
        apply_repo(ws, cfg)
        started = time.perf_counter()
        cold = training_features(ws, cfg, prepared, "bench")
        join_s = time.perf_counter() - started
        started = time.perf_counter()
        warm = training_features(ws, cfg, prepared, "bench")
        cached_s = time.perf_counter() - started
        forget_stores()
    figures = {
        "offline_store": store,
        "label_rows": len(cold.frame),
        "columns": cold.frame.shape[1],
        "join_s": round(join_s, 3),
        "cached_s": round(cached_s, 3),
        "cache_hit": warm.cached,
    }
    return figures, cold.frame


def _same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Equal frames up to row order and null spelling (NaN vs None)."""
    keys = ["user_id", "split"]
    cols = sorted(a.columns)
    left = a[cols].sort_values(keys).reset_index(drop=True).astype(str)
    right = b[cols].sort_values(keys).reset_index(drop=True).astype(str)
    nulls = {"nan", "None", "<NA>", "NaT"}
    return bool((left.isin(nulls) & right.isin(nulls) | (left == right)).all().all())


def run_pit_benchmark(n_users: int = 2000, json_out: Any = None) -> dict[str, Any]:
    """Time the join per offline store on synthetic data (``make run``'s defaults at
    ``n_users=2000``: 4,000 label rows); print a table; write JSON when asked."""
    from components.data.prepare import prepare
    from components.data.synthetic import generate_events

    synth = SyntheticConfig(n_users=n_users, n_events=30 * n_users)
    events = generate_events(synth)
    prepared = prepare(events, DataConfig())
    results, frames = [], []
    for store in STORES:
        figures, frame = _time_store(events, prepared, store)
        results.append(figures)
        frames.append(frame)
    agree = all(_same(frames[0], other) for other in frames[1:])
    print_table(
        f"bench features --pit: {len(events):,} events, {n_users:,} users "
        f"(stores return the same frame: {agree})",
        ["offline store", "label rows", "columns", "join s", "cached re-run s"],
        [
            (r["offline_store"], r["label_rows"], r["columns"], r["join_s"], r["cached_s"])
            for r in results
        ],
    )
    return write_report(
        json_out, "features-pit", {"events": len(events), "same_frame": agree, "results": results}
    )
