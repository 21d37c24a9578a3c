"""``recops bench features``: materialization time and online lookup latency.

For each dataset (ml-100k when its files are present, as one frame; and N synthetic
events, written as partitioned Parquet with their tables built in passes within a memory
budget: :mod:`components.features.streamed`) and each online store (SQLite, and Redis when ``redis-server`` is installed): time building the
feature tables of the first 90 % of the days, ``apply`` and a full materialization; then
the whole data as a second batch: the tables again (only the new days' partitions are
written) and an incremental materialization (only the new interval); then the latency of
``online_recent_items`` for one user and for a batch of users (p50/p99 over many calls,
after a warm-up, the FeatureStore kept alive as the serving bento keeps it).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import measure, print_table, write_report
from components.data.config import SyntheticConfig
from components.data.schema import TIME, USER
from components.features.config import FeaturesConfig
from components.features.local_redis import local_redis, redis_server_binary
from components.features.store import (
    apply_repo,
    definitions,
    forget_stores,
    materialize,
    online_recent_items,
    write_feature_tables,
)
from components.workspace import Workspace

log = logging.getLogger(__name__)


def default_ml100k() -> Path | None:
    """ml-100k in ../shared/data beside the checkout, when it is there."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "ml-100k.inter"
    return path if path.exists() else None


@dataclass(frozen=True)
class _Dataset:
    """A benchmark dataset: its two batches' table writers and its users."""

    name: str
    events: int
    first_events: int
    cut: datetime  # the first batch is materialized up to here
    write_first: Callable[[Workspace, FeaturesConfig], object]
    write_all: Callable[[Workspace, FeaturesConfig], object]
    users: np.ndarray


def _ml100k_dataset(path: Path) -> _Dataset:
    """ml-100k as one frame (the small-data path: one table per view, one file a day)."""
    from components.data.loaders import load_events, load_side_tables

    events, side = load_events(path, "recbole"), load_side_tables(path).items
    first, cut = first_batch(events)
    return _Dataset(
        "ml-100k",
        len(events),
        len(first),
        cut,
        lambda ws, cfg: write_feature_tables(first, ws, cfg, side),
        lambda ws, cfg: write_feature_tables(events, ws, cfg, side),
        events[USER].astype(str).unique(),
    )


def _synthetic_dataset(n_events: int, folder: Path, budget_mb: int) -> _Dataset:
    """``n_events`` synthetic events as partitioned Parquet (written in bounded memory),
    their tables built in passes within ``budget_mb`` (components.features.streamed)."""
    import polars as pl

    from components.data.stream import scan_events, write_events_dataset
    from components.features.streamed import write_feature_tables_streamed

    synth = SyntheticConfig(
        n_users=max(1, n_events // 50), n_items=max(100, n_events // 200), n_events=n_events
    )
    lazy = scan_events(write_events_dataset(synth, folder / "events"))
    times = lazy.select(pl.col(TIME).quantile(0.9)).collect(engine="streaming")
    cut = pd.Timestamp(times.item()).floor("D")
    first = lazy.filter(pl.col(TIME) < cut)
    users = lazy.select(pl.col(USER).unique()).collect(engine="streaming")[USER]
    return _Dataset(
        f"synthetic-{n_events:,}",
        n_events,
        int(first.select(pl.len()).collect(engine="streaming").item()),
        cut.to_pydatetime(),
        lambda ws, cfg: write_feature_tables_streamed(first, ws, cfg, budget_mb),
        lambda ws, cfg: write_feature_tables_streamed(lazy, ws, cfg, budget_mb),
        users.to_numpy(),
    )


def first_batch(events: pd.DataFrame, share: float = 0.9) -> tuple[pd.DataFrame, datetime]:
    """The events before the UTC day holding the ``share`` quantile of the event times (the
    first batch; the rest arrive as a second one) and the moment that batch was
    materialized up to (that day's midnight)."""
    times = pd.to_datetime(events[TIME], utc=True)
    cut = pd.Timestamp(times.quantile(share)).floor("D")
    return events[(times < cut).to_numpy()], cut.to_pydatetime()


def _latencies_ms(call: Any, batches: list[list[str]], warmup: int = 20) -> dict[str, float]:
    for batch in batches[:warmup]:
        call(batch)
    samples = []
    for batch in batches:
        start = time.perf_counter()
        call(batch)
        samples.append((time.perf_counter() - start) * 1000)
    values = np.asarray(samples)
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
        "calls": len(values),
    }


def _bench_one(
    data: _Dataset,
    cfg: FeaturesConfig,
    lookups: int,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    figures: dict[str, Any] = {"dataset": data.name, "online_store": cfg.online_store}
    figures["events"] = data.events
    figures["first_batch_events"] = data.first_events
    with tempfile.TemporaryDirectory(prefix="recops-bench-features-") as tmp:
        workspace = Workspace.at(tmp).ensure()
        definitions(cfg)  # import Feast and the repo outside the timed stages
        with measure("tables") as tables:
            data.write_first(workspace, cfg)
        with measure("apply") as applied:
            apply_repo(workspace, cfg)
        with measure("materialize") as mat:
            result = materialize(workspace, cfg, end=data.cut, incremental=False)
        with measure("tables, new days") as tables_new:
            data.write_all(workspace, cfg)
        with measure("materialize, new days") as mat_new:
            added = materialize(workspace, cfg, incremental=True)
        figures |= {
            "tables_s": tables.seconds,
            "tables_peak_rss_mb": tables.peak_rss_mb,
            "apply_s": applied.seconds,
            "materialize_s": mat.seconds,
            "materialize_peak_rss_mb": mat.peak_rss_mb,
            "rows": {v.view: v.rows for v in result.views},
            "entities_written": {v.view: v.entities for v in result.views},
            "tables_new_days_s": tables_new.seconds,
            "tables_new_days_peak_rss_mb": tables_new.peak_rss_mb,
            "materialize_new_days_s": mat_new.seconds,
            "materialize_new_days_peak_rss_mb": mat_new.peak_rss_mb,
            "rows_new_days": {v.view: v.rows for v in added.views},
            # CPU seconds: what each stage costs whatever the load on a shared machine
            "cpu_s": {
                stage.name: round(stage.cpu_seconds, 2)
                for stage in (tables, applied, mat, tables_new, mat_new)
            },
        }
        rng = np.random.default_rng(seed)

        def lookup(batch: list[str]) -> None:
            online_recent_items(workspace, cfg, batch)

        singles = [[str(u)] for u in rng.choice(data.users, size=lookups)]
        many = [
            list(map(str, rng.choice(data.users, size=batch_size))) for _ in range(lookups // 4)
        ]
        figures["single"] = _latencies_ms(lookup, singles)
        figures[f"batch{batch_size}"] = _latencies_ms(lookup, many)
        forget_stores()
    return figures


def run_features_benchmark(
    n_events: int = 1_000_000,
    ml100k: Path | None = None,
    lookups: int = 2000,
    batch_size: int = 64,
    history_length: int = 50,
    use_redis: bool = True,
    json_out: Path | None = None,
    seed: int = 7,
    budget_mb: int = 2048,
) -> dict[str, Any]:
    """Measure every (dataset, online store) pair; print a table; write JSON when asked.
    The synthetic events' tables are built in passes within ``budget_mb``
    (``data.memory_budget_mb``)."""
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recops-bf-")))
        stores = [FeaturesConfig(history_length=history_length)]
        if use_redis and redis_server_binary() is not None:
            url = stack.enter_context(local_redis())
            stores.append(
                FeaturesConfig(
                    history_length=history_length,
                    online_store="redis",
                    redis_connection_string=url,
                )
            )
        elif use_redis:
            log.warning("redis-server not on PATH: Redis figures skipped")
        datasets = []
        if ml100k is not None and ml100k.exists():
            datasets.append(_ml100k_dataset(ml100k))
        elif ml100k is not None:
            log.warning("skipping ml-100k: %s not found", ml100k)
        if n_events > 0:
            datasets.append(_synthetic_dataset(n_events, scratch, budget_mb))
        for data in datasets:
            for cfg in stores:
                with _quiet_feast():
                    results.append(_bench_one(data, cfg, lookups, batch_size, seed))
    key = f"batch{batch_size}"
    rows = [
        (
            r["dataset"],
            r["online_store"],
            r["events"],
            r["tables_s"],
            r["materialize_s"],
            r["materialize_peak_rss_mb"],
            r["tables_new_days_s"],
            r["materialize_new_days_s"],
            max(r["tables_new_days_peak_rss_mb"], r["materialize_new_days_peak_rss_mb"]),
            r["single"]["p50_ms"],
            r["single"]["p99_ms"],
            r[key]["p50_ms"],
            r[key]["p99_ms"],
        )
        for r in results
    ]
    print_table(
        f"bench features: history {history_length}, {lookups} single / "
        f"{lookups // 4} batch-of-{batch_size} lookups",
        [
            "dataset",
            "store",
            "events",
            "tables s (90% of days)",
            "materialize s",
            "peak RSS MB",
            "tables s (+ new days)",
            "materialize s (new days)",
            "peak RSS MB (new days)",
            "1 user p50 ms",
            "1 user p99 ms",
            f"{batch_size} users p50 ms",
            f"{batch_size} users p99 ms",
        ],
        rows,
    )
    return write_report(
        json_out,
        "features",
        {
            "history_length": history_length,
            "batch_size": batch_size,
            "memory_budget_mb": budget_mb,
            "results": results,
        },
    )


@contextmanager
def _quiet_feast() -> Iterator[None]:
    """Feast's materialization progress bars would drown the table."""
    feast_logger = logging.getLogger("feast")
    level = feast_logger.level
    feast_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        feast_logger.setLevel(level)
